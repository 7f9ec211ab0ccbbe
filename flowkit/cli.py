"""The ``flowkit`` command line: run a job file, print its plan, inspect a snapshot.

Commands::

    flowkit run JOB.py [--parallelism N] [--restore-from DIR] [--checkpoint-dir DIR]
                       [--checkpoint-interval MS] [--set KEY=VALUE ...] [--verbose]
    flowkit explain JOB.py [--format text|mermaid|dot] [--parallelism N] [--set KEY=VALUE ...]
    flowkit inspect DIR [state processor options]

A job file is a Python file that defines::

    def build(env: flowkit.StreamExecutionEnvironment) -> None:
        env.from_sequence(1, 1000).key_by(lambda x: x % 10).sum().print()

``build`` adds sources, transformations and sinks to the environment it is given; the
command line creates that environment (``--parallelism``, ``--set``, checkpointing) and
runs or explains the job. The file is imported like a script: its directory is put first
on ``sys.path`` so it can import modules next to it.

Exit codes: 0 success; 1 the job failed; 2 bad arguments, a job file that is missing,
does not import, lacks ``build`` or whose ``build`` raises, or an invalid setting; 130
interrupted (Ctrl-C cancels the job first).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from flowkit.api.environment import StreamExecutionEnvironment
from flowkit.errors import FlowkitError, InvalidConfigurationError, JobCancelled
from flowkit.runtime.client import JobClient, JobMetrics

__all__ = [
    "SETTABLE_OPTIONS",
    "CliError",
    "TaskCounts",
    "load_job",
    "main",
    "make_environment",
    "parse_setting",
    "parse_value",
    "task_counts",
]

#: Constructor parameters of :class:`StreamExecutionEnvironment` that ``--set`` accepts
#: (``parallelism`` has its own option; a clock cannot be given on the command line).
SETTABLE_OPTIONS: tuple[str, ...] = tuple(
    name
    for name in inspect.signature(StreamExecutionEnvironment.__init__).parameters
    if name not in ("self", "parallelism", "clock")
)

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A problem the command line reports as one ``error: ...`` line and exit code 2."""


def _first_line(text: object) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def _root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


# --------------------------------------------------------------------- settings
def parse_value(text: str) -> Any:
    """A ``--set`` value: ``none``/``null`` -> None, ``true``/``false`` -> bool, then int,
    then float, else the string itself.

    Example:
        >>> [parse_value(v) for v in ("4096", "2.5", "none", "true", "x")]
        [4096, 2.5, None, True, 'x']
    """
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    for convert in (int, float):
        try:
            return convert(lowered)
        except ValueError:
            pass
    return text


def parse_setting(text: str) -> tuple[str, Any]:
    """``"buffer_size=4096"`` -> ``("buffer_size", 4096)``.

    Raises:
        CliError: without ``=`` or for a key that is not a settable option.
    """
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise CliError(f"--set expects KEY=VALUE, got {text!r}")
    if key not in SETTABLE_OPTIONS:
        raise CliError(f"unknown setting {key!r}; valid keys: {', '.join(SETTABLE_OPTIONS)}")
    return key, parse_value(value)


def make_environment(
    parallelism: int = 1,
    settings: Sequence[str] = (),
    checkpoint_dir: str | None = None,
    checkpoint_interval_ms: int = 1000,
) -> StreamExecutionEnvironment:
    """A new environment with ``--set`` settings applied and checkpointing enabled when
    ``checkpoint_dir`` is given.

    Raises:
        CliError: for an unknown key or an invalid value.
    """
    options = dict(parse_setting(s) for s in settings)
    try:
        env = StreamExecutionEnvironment(parallelism=parallelism, **options)
        if checkpoint_dir is not None:
            env.enable_checkpointing(checkpoint_interval_ms, directory=checkpoint_dir)
    except InvalidConfigurationError as exc:
        raise CliError(_first_line(exc)) from None
    return env


# --------------------------------------------------------------------- job files
def load_job(path: str | os.PathLike[str]) -> Callable[[StreamExecutionEnvironment], Any]:
    """Import the job file at ``path`` and return its ``build`` function.

    Raises:
        CliError: when the file is missing, fails to import or has no callable ``build``.
    """
    file = Path(path)
    if not file.is_file():
        raise CliError(f"job file not found: {os.fspath(path)}")
    module_name = f"_flowkit_job_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise CliError(f"cannot import {file}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    directory = str(file.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise CliError(f"cannot import {file}: {type(exc).__name__}: {_first_line(exc)}") from exc
    build = getattr(module, "build", None)
    if not callable(build):
        raise CliError(f"{file} defines no build(env) function")
    return build


def _build(args: argparse.Namespace) -> StreamExecutionEnvironment:
    build = load_job(args.job)
    env = make_environment(
        args.parallelism,
        args.set,
        getattr(args, "checkpoint_dir", None),
        getattr(args, "checkpoint_interval", 1000),
    )
    try:
        build(env)
    except Exception as exc:
        raise CliError(
            f"build() of {args.job} failed: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    return env


# --------------------------------------------------------------------- progress
@dataclass(frozen=True)
class TaskCounts:
    """Records into and out of all subtasks of one task (a chain of operators)."""

    task: str
    records_in: int
    records_out: int

    @property
    def records(self) -> int:
        """The records the task handled: what came in, or for a source what it emitted."""
        return self.records_in if self.records_in else self.records_out


def task_counts(metrics: JobMetrics) -> list[TaskCounts]:
    """Per-task totals of ``metrics``, in the job's order of tasks."""
    totals: dict[str, list[int]] = {}
    for s in metrics.subtasks:
        entry = totals.setdefault(s.task, [0, 0])
        entry[0] += s.records_in
        entry[1] += s.records_out
    return [TaskCounts(task, rin, rout) for task, (rin, rout) in totals.items()]


def _progress_line(
    elapsed: float, status: str, now: list[TaskCounts], before: dict[str, int], dt: float
) -> str:
    parts = []
    for t in now:
        rate = (t.records - before.get(t.task, 0)) / dt if dt > 0 else 0.0
        parts.append(f"{t.task}: in={t.records_in} out={t.records_out} ({rate:.0f} rec/s)")
    return f"[{elapsed:6.1f}s] {status} | " + " | ".join(parts)


def _summary_line(status: str, elapsed: float, counts: list[TaskCounts]) -> str:
    parts = [f"{t.task}: in={t.records_in} out={t.records_out}" for t in counts]
    return f"{status} in {elapsed:.2f}s | " + " | ".join(parts)


async def _run_job(env: StreamExecutionEnvironment, args: argparse.Namespace, out: TextIO) -> None:
    started = time.perf_counter()
    client: JobClient = await env.execute_async(Path(args.job).stem, restore_from=args.restore_from)
    waiter = asyncio.ensure_future(client.wait())
    before: dict[str, int] = {}
    last = started
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=args.progress_interval)
            if done:
                break
            now = time.perf_counter()
            counts = task_counts(client.metrics())
            print(
                _progress_line(now - started, client.status.name, counts, before, now - last),
                file=out,
                flush=True,
            )
            before = {t.task: t.records for t in counts}
            last = now
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this coroutine
        await client.cancel()
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        raise
    result = waiter.result()
    elapsed = time.perf_counter() - started
    print(_summary_line("FINISHED", elapsed, task_counts(result.metrics)), file=out, flush=True)


# --------------------------------------------------------------------- commands
def _cmd_run(args: argparse.Namespace) -> int:
    env = _build(args)
    try:
        asyncio.run(_run_job(env, args, sys.stdout))
    except KeyboardInterrupt:
        print("error: interrupted; the job was cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED
    except JobCancelled as exc:
        print(f"error: {_first_line(exc)}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        cause = _root_cause(exc)
        if cause is not exc:
            print(f"cause: {type(cause).__name__}: {_first_line(cause)}", file=sys.stderr)
        if args.verbose:
            traceback.print_exception(exc, file=sys.stderr)
        elif not isinstance(exc, FlowkitError):
            print("(run with --verbose for the traceback)", file=sys.stderr)
        return EXIT_JOB_FAILED
    return EXIT_OK


def _cmd_explain(args: argparse.Namespace) -> int:
    env = _build(args)
    try:
        text = env.explain(args.format)
    except (InvalidConfigurationError, ValueError) as exc:
        raise CliError(_first_line(exc)) from None
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowkit", description="Run, explain and inspect flowkit jobs."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def job_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("job", metavar="JOB.py", help="a Python file defining build(env)")
        p.add_argument(
            "--parallelism", type=int, default=1, metavar="N", help="subtasks per operator"
        )
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"an environment option; keys: {', '.join(SETTABLE_OPTIONS)}",
        )

    run = commands.add_parser("run", help="run a job file and report its progress")
    job_options(run)
    run.add_argument("--restore-from", metavar="DIR", help="checkpoint or savepoint to resume")
    run.add_argument("--checkpoint-dir", metavar="DIR", help="enable checkpointing into DIR")
    run.add_argument(
        "--checkpoint-interval",
        type=int,
        default=1000,
        metavar="MS",
        help="checkpoint interval in milliseconds (default 1000)",
    )
    run.add_argument(
        "--progress-interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between progress lines (default 1)",
    )
    run.add_argument("--verbose", action="store_true", help="print full tracebacks")
    run.set_defaults(func=_cmd_run)

    explain = commands.add_parser("explain", help="print a job file's plan")
    job_options(explain)
    explain.add_argument("--format", choices=("text", "mermaid", "dot"), default="text")
    explain.set_defaults(func=_cmd_explain)

    inspect_cmd = commands.add_parser(
        "inspect", help="describe a checkpoint or savepoint (see `flowkit inspect --help`)"
    )
    inspect_cmd.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowkit`` command line and return its exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] == "inspect":
        from flowkit.state_processor import main as inspect_main

        return inspect_main(arguments[1:])
    args = _parser().parse_args(arguments)
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


if __name__ == "__main__":
    sys.exit(main())
