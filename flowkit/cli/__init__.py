"""The ``flowkit`` command line: run a job file, print its plan, inspect a snapshot, and
take savepoints of or stop a running job.

Commands::

    flowkit run JOB.py [--parallelism N] [--restore-from DIR [--allow-non-restored-state]]
                       [--fallback-to-older-checkpoint]
                       [--checkpoint-dir DIR] [--checkpoint-interval MS] [--set KEY=VALUE ...]
                       [--progress auto|live|lines|off] [--savepoint-on-interrupt DIR]
                       [--web [--web-port PORT] [--web-linger S]] [--quiet | --verbose]
                       [-- JOB ARGS ...]
    flowkit explain JOB.py [--format text|mermaid|dot] [--parallelism N] [--set KEY=VALUE ...]
    flowkit inspect DIR [state processor options]
    flowkit savepoint DIR [--url URL] [--job ID]
    flowkit stop [--savepoint DIR [--drain]] [--url URL] [--job ID]
    flowkit list [--url URL]
    flowkit --version

A job file is a Python file that defines::

    def build(env: flowkit.StreamExecutionEnvironment) -> None:
        env.from_sequence(1, 1000).key_by(lambda x: x % 10).sum().print()

or ``build(env, args)`` to receive the arguments given after ``--``. ``build`` adds
sources, transformations and sinks to the environment it is given; the command line
creates that environment (``--parallelism``, ``--set``, checkpointing, web UI) and runs or
explains the job. The file is imported like a script: its directory is put first on
``sys.path`` so it can import modules next to it.

``savepoint``, ``stop`` and ``list`` talk to a job started with ``--web`` (or
``env.enable_web_ui``) through its REST API.

``flowkit run`` keeps standard output for the job's own output (its print sinks): the
progress display, the summary line and flowkit's log lines (job status, each restart with
its cause and the checkpoint it restores) go to standard error. Error messages name the
command line's flags (``--checkpoint-dir``, ``--web-allow-remote``, ...) where the
library's messages name API calls.

Exit codes: 0 success; 1 the job failed or was cancelled, or a REST call failed; 2 bad
arguments, a job file that is missing, does not import, lacks ``build`` or whose ``build``
raises, or an invalid setting; 130 interrupted (Ctrl-C cancels the job first, or stops it
with a savepoint).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib.metadata
import importlib.util
import inspect
import logging
import math
import os
import re
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TextIO

from flowkit.api.environment import StreamExecutionEnvironment
from flowkit.checkpoint.storage import CorruptCheckpointError
from flowkit.cli import remote
from flowkit.cli.progress import LinesView, LiveView, ProgressView
from flowkit.errors import FlowkitError, InvalidConfigurationError, JobCancelled, root_cause
from flowkit.gc_policy import tuned_gc
from flowkit.runtime.client import JobClient, JobMetrics

__all__ = [
    "SETTABLE_OPTIONS",
    "CliError",
    "flag_hints",
    "load_job",
    "main",
    "make_environment",
    "package_version",
    "parse_setting",
    "parse_value",
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


class _CannotRestore(Exception):
    """The checkpoint or savepoint to restore is missing or damaged (exit code 1)."""


def _restore_error(exc: BaseException) -> str:
    """Why ``--restore-from`` failed: one line, then each damaged file on its own line."""
    if not isinstance(exc, CorruptCheckpointError) or len(exc.damaged) < 2:
        text = f"--restore-from: {_first_line(exc)}"
    else:
        files = "".join(f"\n  {path}: {problem}" for path, problem in exc.damaged)
        text = f"--restore-from: {exc.path} has {len(exc.damaged)} damaged files:{files}"
    if isinstance(exc, CorruptCheckpointError):
        text += (
            "\n(--fallback-to-older-checkpoint restores the newest intact older checkpoint "
            "of a checkpoint directory instead; output committed after it may repeat)"
        )
    return text


def _first_line(text: object) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


# --------------------------------------------------------------------- flag hints
#: The library's hints that name API calls, and what the command line says instead.
_FLAG_HINTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^enable_web_ui: host\b", "--web-host"),
        (r"^enable_web_ui: port\b", "--web-port"),
        (r"^enable_web_ui: linger_s\b", "--web-linger"),
        (
            r"Pass allow_remote=True to bind (.+?) anyway",
            r"Give --web-allow-remote to bind \1 anyway",
        ),
        (
            r"\(enable_web_ui\(\.\.\., allow_remote=True\) serves others\)",
            "(`flowkit run --web-host HOST --web-allow-remote` serves others)",
        ),
        (r"^enable_checkpointing: interval_ms\b", "--checkpoint-interval"),
        (r"^enable_checkpointing: ", "checkpointing: "),
        (
            r"call env\.enable_checkpointing\(\.\.\.\) first",
            "run the job with --checkpoint-dir DIR",
        ),
        (r"\ballow_non_restored_state=True\b", "--allow-non-restored-state"),
        (
            r"\bPass fallback_to_older_checkpoint=True \(flowkit run "
            r"--fallback-to-older-checkpoint\)",
            "Run with --fallback-to-older-checkpoint",
        ),
        (
            r"raise max_parallelism or lower parallelism",
            "raise --set max_parallelism=N or lower --parallelism",
        ),
    )
)


def flag_hints(message: str) -> str:
    """``message`` with the hints that name API calls turned into the command line's flags.

    The library's errors tell a program what to call; the command line shows the flag
    that does the same.

    Example:
        >>> flag_hints("savepoints need checkpointing: call env.enable_checkpointing(...) first")
        'savepoints need checkpointing: run the job with --checkpoint-dir DIR'
    """
    for pattern, replacement in _FLAG_HINTS:
        message = pattern.sub(replacement, message)
    return message


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
        raise CliError(flag_hints(_first_line(exc))) from None
    return env


# --------------------------------------------------------------------- job files
def load_job(path: str | os.PathLike[str]) -> Callable[..., Any]:
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


def _takes_arguments(build: Callable[..., Any]) -> bool:
    """True when ``build`` accepts a second positional parameter (the job's arguments)."""
    try:
        params = list(inspect.signature(build).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in positional)


def _build(args: argparse.Namespace) -> StreamExecutionEnvironment:
    build = load_job(args.job)
    env = make_environment(
        args.parallelism,
        args.set,
        getattr(args, "checkpoint_dir", None),
        getattr(args, "checkpoint_interval", 1000),
    )
    if getattr(args, "web", False):
        try:
            env.enable_web_ui(
                args.web_port,
                host=args.web_host,
                allow_remote=args.web_allow_remote,
                linger_s=args.web_linger,
            )
        except (InvalidConfigurationError, ImportError) as exc:
            raise CliError(flag_hints(_first_line(exc))) from None
    job_args: list[str] = args.job_args
    try:
        if _takes_arguments(build):
            build(env, job_args)
        elif job_args:
            raise CliError(
                f"{args.job}: build(env) takes no job arguments, but got {job_args}; "
                f"define build(env, args) to receive them"
            )
        else:
            build(env)
    except CliError:
        raise
    except SystemExit as exc:  # e.g. argparse inside build() rejecting the job arguments
        raise CliError(f"build() of {args.job} exited: {exc.code}") from None
    except Exception as exc:
        raise CliError(
            f"build() of {args.job} failed: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    return env


# --------------------------------------------------------------------- logging
#: Loggers whose INFO lines only ``--verbose`` shows: the progress display already reports
#: every completed checkpoint (counts and the latest one) and the job's start and end.
_VERBOSE_ONLY = ("flowkit.checkpoint", "flowkit.runtime.client")


#: The job client's logger: its ERROR record of a failed job is what the command line
#: reports itself (an error line and its cause; the traceback with --verbose).
_JOB_LOGGER = "flowkit.runtime.client"


class _LogHandler(logging.Handler):
    """flowkit's log records as lines on standard error, e.g.
    ``12:00:03 WARNING job 'paced': restart 1 after a failure in ...``.

    While the live table is drawn (:attr:`view`), a line goes above it.
    """

    def __init__(self, stream: TextIO, level: int, verbose: bool) -> None:
        super().__init__(level)
        self.stream = stream
        self.verbose = verbose
        #: The live table being drawn, if any.
        self.view: LiveView | None = None
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            not self.verbose
            and record.levelno < logging.WARNING
            and record.name.startswith(_VERBOSE_ONLY)
        ):
            return False
        if record.name == _JOB_LOGGER and record.levelno >= logging.ERROR:
            return False  # the command line reports a failed job itself, once
        return bool(super().filter(record))

    def format(self, record: logging.LogRecord) -> str:
        if self.verbose:
            return super().format(record)
        # One line per record; tracebacks only with --verbose.
        line = record.getMessage().strip().split("\n", 1)[0]
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{stamp} {record.levelname} {line}"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            view = self.view
            if view is not None:
                view.write_above(text)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()
        except Exception:
            self.handleError(record)


@contextmanager
def _logging_to_stderr(level: int, verbose: bool) -> Iterator[_LogHandler]:
    """Show the ``flowkit`` loggers' records at ``level`` and above on standard error, until
    the block ends (the library itself installs no handler)."""
    logger = logging.getLogger("flowkit")
    handler = _LogHandler(sys.stderr, level, verbose)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


# --------------------------------------------------------------------- progress
def _summary_line(status: str, elapsed: float, metrics: JobMetrics) -> str:
    parts = [f"{v.name}: in={v.records_in} out={v.records_out}" for v in metrics.vertices()]
    if metrics.restarts:
        parts.append(f"restarts: {metrics.restarts}")
    return f"{status} in {elapsed:.2f}s | " + " | ".join(parts)


def _make_view(args: argparse.Namespace, out: TextIO, job_name: str) -> ProgressView | None:
    mode = args.progress
    if mode == "auto":
        mode = "live" if out.isatty() else "lines"
    if mode == "off":
        return None
    if mode == "live":
        return LiveView(out, job_name)
    return LinesView(out)


async def _run_job(
    env: StreamExecutionEnvironment,
    args: argparse.Namespace,
    out: TextIO,
    log: _LogHandler | None = None,
) -> None:
    """Run the job, showing its progress on ``out`` (standard error); with ``log``, the
    log lines go above the live table while it is drawn."""
    started = time.perf_counter()
    job_name = Path(args.job).stem
    try:
        client: JobClient = await env.execute_async(
            job_name,
            restore_from=args.restore_from,
            allow_non_restored_state=args.allow_non_restored_state,
            fallback_to_older_checkpoint=args.fallback_to_older_checkpoint,
        )
    except (FileNotFoundError, CorruptCheckpointError) as exc:
        if args.restore_from is None:
            raise
        raise _CannotRestore(_restore_error(exc)) from exc
    if client.web_ui_url is not None:
        print(f"web UI: {client.web_ui_url}", file=out, flush=True)
    view = _make_view(args, out, job_name)
    if log is not None and isinstance(view, LiveView):
        log.view = view
    try:
        await _follow(client, env, args, out, view, started, log)
    finally:
        if log is not None:
            log.view = None


async def _follow(
    client: JobClient,
    env: StreamExecutionEnvironment,
    args: argparse.Namespace,
    out: TextIO,
    view: ProgressView | None,
    started: float,
    log: _LogHandler | None,
) -> None:
    """Show the job's progress until it ends, then its summary line."""
    waiter = asyncio.ensure_future(client.wait())
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=args.progress_interval)
            if done:
                break
            if view is not None:
                view.update(time.perf_counter() - started, client.status.name, client.metrics())
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this coroutine
        if log is not None:
            log.view = None
        await _stop_on_interrupt(client, args.savepoint_on_interrupt, out)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        raise
    elapsed = time.perf_counter() - started

    def show_end(status: str, metrics: JobMetrics) -> None:
        if isinstance(view, LiveView):  # the table's last drawing shows the final counts
            view.update(elapsed, client.status.name, metrics)
        if log is not None:  # from here on, log lines follow the table
            log.view = None
        print(_summary_line(status, elapsed, metrics), file=out, flush=True)

    try:
        metrics = waiter.result().metrics
    except JobCancelled:  # cancelled from outside: the caller reports it as an error
        show_end("CANCELED", client.metrics())
        await _linger(env, out)
        raise
    except Exception:
        await _linger(env, out)
        raise
    stopped = client.stopped_with_savepoint  # `flowkit stop --savepoint`
    show_end("FINISHED" if stopped is None else f"STOPPED with savepoint {stopped}", metrics)
    await _linger(env, out)


async def _linger(env: StreamExecutionEnvironment, out: TextIO) -> None:
    """With ``--web-linger``: while the web UI keeps showing the ended job, wait (Ctrl-C
    ends the wait early; the job has ended already, so that is no interruption)."""
    url = env.web_ui_url
    if url is None or env.web_ui_linger_s <= 0:
        return
    print(
        f"web UI: showing the final state at {url} for {env.web_ui_linger_s:g} s (Ctrl-C to quit)",
        file=out,
        flush=True,
    )
    try:
        while env.web_ui_url is not None:  # noqa: ASYNC110 (the server closes by itself)
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        asyncio.current_task().uncancel()  # type: ignore[union-attr]


async def _stop_on_interrupt(client: JobClient, savepoint_dir: str | None, out: TextIO) -> None:
    """Ctrl-C: stop with a savepoint when one was asked for, else cancel."""
    if savepoint_dir is not None and not client.done():
        try:
            directory = await client.stop_with_savepoint(savepoint_dir)
        except Exception as exc:
            print(
                f"error: savepoint on interrupt failed: {type(exc).__name__}: "
                f"{flag_hints(_first_line(exc))}; cancelling the job",
                file=sys.stderr,
            )
        else:
            print(f"savepoint: {directory}", file=out, flush=True)
    await client.cancel()


# --------------------------------------------------------------------- commands
def _run_on_flink(args: argparse.Namespace) -> int:
    """``flowkit run --target flink``: translate the job and run it on Apache Flink."""
    from flowkit.flink import FlinkRunner, UnsupportedOperatorError

    env = _build(args)
    job_modules = [m for name, m in sys.modules.items() if name.startswith("_flowkit_job_")]
    try:
        runner = FlinkRunner(
            address=args.flink_address,
            jars=args.flink_jars or (),
            state_backend=args.flink_state_backend,
            pickle_by_value=job_modules,
        )
        result = runner.execute(env, Path(args.job).stem)
    except UnsupportedOperatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except ImportError as exc:
        print(
            f"error: --target flink needs apache-flink ({exc}); install the extra: "
            f'pip install "flowkit-streaming[flink]" (and Java 17), see docs/flink.md',
            file=sys.stderr,
        )
        return EXIT_JOB_FAILED
    except ValueError as exc:
        print(f"error: {_first_line(exc)}", file=sys.stderr)
        return EXIT_JOB_FAILED
    print(
        f"Flink job {result.job_name!r} ({result.job_id}) finished in {result.net_runtime_ms} ms",
        file=sys.stderr,
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    if getattr(args, "target", "flowkit") == "flink":
        return _run_on_flink(args)
    if args.cluster:
        from flowkit.cluster.cli import run_on_cluster

        return run_on_cluster(args)
    env = _build(args)
    try:
        # The command owns the process, as env.execute() does: the same collector policy.
        with tuned_gc() if env.freeze_gc else nullcontext():
            asyncio.run(_run_job(env, args, sys.stderr, args.log_handler))
    except KeyboardInterrupt:
        what = "stopped with a savepoint" if args.savepoint_on_interrupt else "cancelled"
        print(f"error: interrupted; the job was {what}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except JobCancelled as exc:
        print(f"error: {_first_line(exc)}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except _CannotRestore as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except BrokenPipeError:
        # standard error went away while progress was shown: the job was cancelled with
        # the loop; there is nowhere left to say so
        return EXIT_JOB_FAILED
    except OSError as exc:
        if args.web and exc.errno == errno.EADDRINUSE:
            print(
                f"error: the web UI cannot listen on {args.web_host}:{args.web_port}: the "
                f"address is in use; choose another --web-port (0 picks a free one)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        _report(exc, args.verbose)
        return EXIT_JOB_FAILED
    except Exception as exc:
        if isinstance(root_cause(exc), BrokenPipeError):
            # the job's print sink found stdout gone (`flowkit run job.py | head`)
            _discard_closed_output()
            print("error: standard output was closed; the job stopped", file=sys.stderr)
            return EXIT_JOB_FAILED
        _report(exc, args.verbose)
        return EXIT_JOB_FAILED
    return EXIT_OK


def _discard_closed_output() -> None:
    """Point a closed stdout at /dev/null so the interpreter's final flush does not fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _report(exc: BaseException, verbose: bool) -> None:
    """One line for the error, one for its root cause; the traceback with ``--verbose``."""
    print(f"error: {type(exc).__name__}: {flag_hints(_first_line(exc))}", file=sys.stderr)
    cause = root_cause(exc)
    if cause is not exc:
        print(f"cause: {type(cause).__name__}: {flag_hints(_first_line(cause))}", file=sys.stderr)
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    elif not isinstance(exc, FlowkitError):
        print("(run with --verbose for the traceback)", file=sys.stderr)


def _cmd_explain(args: argparse.Namespace) -> int:
    env = _build(args)
    try:
        text = env.explain(args.format)
    except (InvalidConfigurationError, ValueError) as exc:
        raise CliError(_first_line(exc)) from None
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def _remote(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    try:
        return remote.request(url, path, body)
    except remote.RestError as exc:
        print(f"error: {flag_hints(str(exc))}", file=sys.stderr)
        return None


def _cmd_savepoint(args: argparse.Namespace) -> int:
    directory = os.path.abspath(args.directory)
    reply = _remote(args.url, remote.job_path(args.job) + "/savepoints", {"directory": directory})
    if reply is None:
        return EXIT_JOB_FAILED
    print(reply["directory"])
    return EXIT_OK


def _cmd_stop(args: argparse.Namespace) -> int:
    path = remote.job_path(args.job)
    if args.savepoint is None:
        if args.drain:
            raise CliError("--drain needs --savepoint DIR (drain, then stop with a savepoint)")
        reply = _remote(args.url, path + "/cancel", {})
        if reply is None:
            return EXIT_JOB_FAILED
        print(reply.get("status", "CANCELED"))
        return EXIT_OK
    body = {"directory": os.path.abspath(args.savepoint), "drain": args.drain}
    reply = _remote(args.url, path + "/stop", body)
    if reply is None:
        return EXIT_JOB_FAILED
    print(reply["directory"])
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    reply = _remote(args.url, "/api/jobs")
    if reply is None:
        return EXIT_JOB_FAILED
    for job in reply["jobs"]:
        print(f"{job['id']}  {job['status']:<10} {job['duration_ms'] / 1000:8.1f}s  {job['name']}")
    return EXIT_OK


def _number(
    convert: Callable[[str], float], accept: Callable[[float], bool], what: str
) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, and refuse it unless ``accept`` holds."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "an int >= 1")
_positive_float = _number(float, lambda v: 0 < v < math.inf, "a number > 0")
_non_negative_float = _number(float, lambda v: 0 <= v < math.inf, "a number >= 0")
_port = _number(int, lambda v: 0 <= v <= 65535, "a port number 0-65535")


#: The name flowkit is installed under (``pip install flowkit-streaming``).
DISTRIBUTION = "flowkit-streaming"


def package_version(distribution: str = DISTRIBUTION) -> str:
    """The installed version of ``distribution``, or ``flowkit.__version__`` when it is
    not installed (flowkit imported from a source tree).

    Example:
        >>> import flowkit
        >>> package_version("not-an-installed-distribution") == flowkit.__version__
        True
    """
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        from flowkit import __version__

        return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowkit",
        description="Run, explain, inspect and control flowkit jobs.",
        epilog="Arguments after `--` go to the job file's build(env, args).",
    )
    parser.add_argument("--version", action="version", version=f"flowkit {package_version()}")
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

    def remote_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--url",
            "--cluster",
            default=remote.DEFAULT_URL,
            help=f"the job's web UI or the cluster's address (default {remote.DEFAULT_URL})",
        )
        p.add_argument(
            "--job", default="current", metavar="ID", help="job id (default: the newest job)"
        )

    run = commands.add_parser(
        "run", help="run a job file and show its progress (JOB.py [options] [-- job args])"
    )
    job_options(run)
    run.add_argument("--restore-from", metavar="DIR", help="checkpoint or savepoint to resume")
    run.add_argument(
        "--allow-non-restored-state",
        action="store_true",
        help="with --restore-from: skip state of operators (uids) the job no longer has",
    )
    run.add_argument(
        "--fallback-to-older-checkpoint",
        action="store_true",
        help="when the newest checkpoint (of --restore-from DIR, or the one a restart would "
        "use) is damaged, restore the newest intact older one instead of failing; logged "
        "as a warning, since output committed after it may be written again",
    )
    run.add_argument("--checkpoint-dir", metavar="DIR", help="enable checkpointing into DIR")
    run.add_argument(
        "--target",
        choices=("flowkit", "flink"),
        default="flowkit",
        help="flowkit (default): run in this process on flowkit's runtime; flink: translate "
        "the job and run it on Apache Flink (needs the flink extra, see docs/flink.md)",
    )
    run.add_argument(
        "--flink-address",
        metavar="HOST:PORT",
        help="with --target flink: submit to the Flink cluster whose REST endpoint this is "
        "(default: a MiniCluster in this process)",
    )
    run.add_argument(
        "--flink-jars",
        action="append",
        metavar="JAR",
        help="with --target flink: a connector jar for the job (e.g. Flink's Kafka "
        "connector); repeat for several",
    )
    run.add_argument(
        "--flink-state-backend",
        choices=("hashmap", "rocksdb"),
        default="hashmap",
        help="with --target flink: Flink's state backend (default hashmap)",
    )
    run.add_argument(
        "--checkpoint-interval",
        type=_positive_int,
        default=1000,
        metavar="MS",
        help="checkpoint interval in milliseconds (default 1000)",
    )
    run.add_argument(
        "--progress",
        choices=("auto", "live", "lines", "off"),
        default="auto",
        help="live table on a terminal, log lines otherwise (default auto)",
    )
    run.add_argument(
        "--progress-interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between progress updates (default 1)",
    )
    run.add_argument(
        "--savepoint-on-interrupt",
        metavar="DIR",
        help="on Ctrl-C, stop the job with a savepoint into DIR instead of cancelling it",
    )
    run.add_argument("--web", action="store_true", help="serve the REST API and dashboard")
    run.add_argument(
        "--web-port", type=_port, default=8081, metavar="PORT", help="default 8081; 0 = any"
    )
    run.add_argument("--web-host", default="127.0.0.1", metavar="HOST", help="default 127.0.0.1")
    run.add_argument(
        "--web-linger",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="keep the web UI up this long after the job ended (default 0; Ctrl-C quits)",
    )
    run.add_argument(
        "--web-allow-remote",
        action="store_true",
        help="allow a --web-host that is not a loopback address (anyone who reaches it can "
        "stop the job)",
    )
    chatter = run.add_mutually_exclusive_group()
    chatter.add_argument(
        "--quiet",
        action="store_true",
        help="log only warnings and errors (restarts and their causes), not job status",
    )
    chatter.add_argument(
        "--verbose",
        action="store_true",
        help="print full tracebacks, and log every completed checkpoint",
    )
    run.add_argument(
        "--cluster",
        metavar="URL",
        help="submit the job file to a flowkit cluster (`flowkit cluster start`) at URL",
    )
    run.add_argument(
        "--detach", action="store_true", help="with --cluster: return once the job is submitted"
    )
    run.set_defaults(func=_cmd_run)

    explain = commands.add_parser("explain", help="print a job file's plan")
    job_options(explain)
    explain.add_argument("--format", choices=("text", "mermaid", "dot"), default="text")
    explain.set_defaults(func=_cmd_explain)

    inspect_cmd = commands.add_parser(
        "inspect", help="describe a checkpoint or savepoint (see `flowkit inspect --help`)"
    )
    inspect_cmd.add_argument("args", nargs=argparse.REMAINDER)

    savepoint = commands.add_parser(
        "savepoint", help="take a savepoint of a running job (through its web UI)"
    )
    savepoint.add_argument("directory", metavar="DIR", help="where to write the savepoint")
    remote_options(savepoint)
    savepoint.set_defaults(func=_cmd_savepoint)

    stop = commands.add_parser(
        "stop", help="stop a running job (through its web UI), optionally with a savepoint"
    )
    stop.add_argument("--savepoint", metavar="DIR", help="take a savepoint into DIR, then stop")
    stop.add_argument(
        "--drain",
        action="store_true",
        help="fire all event-time timers and windows before the savepoint (Flink's --drain)",
    )
    remote_options(stop)
    stop.set_defaults(func=_cmd_stop)

    list_cmd = commands.add_parser("list", help="list the jobs a web UI serves")
    list_cmd.add_argument(
        "--url", "--cluster", default=remote.DEFAULT_URL, help="the web UI's or cluster's address"
    )
    list_cmd.set_defaults(func=_cmd_list)

    cancel = commands.add_parser("cancel", help="cancel a running job (web UI or cluster)")
    remote_options(cancel)
    cancel.set_defaults(func=_cmd_cancel)

    cluster = commands.add_parser(
        "cluster", help="run Flink's processes on this machine (`flowkit cluster start`)"
    )
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    start = cluster_commands.add_parser(
        "start",
        help="start a Dispatcher with a ResourceManager and TaskManager processes",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    start.add_argument("--taskmanagers", type=_positive_int, default=2, metavar="N")
    start.add_argument(
        "--slots", type=_positive_int, default=1, metavar="S", help="per TaskManager"
    )
    start.add_argument("--port", type=_port, default=8081)
    start.add_argument("--host", default="127.0.0.1")
    start.add_argument(
        "--dir", default="flowkit-cluster", help="job store, job history and TaskManager logs"
    )
    start.add_argument(
        "--heartbeat-timeout",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="a TaskManager silent this long is lost and replaced",
    )
    start.set_defaults(func=_cmd_cluster_start)
    stop_cluster = cluster_commands.add_parser("stop", help="stop a running cluster")
    stop_cluster.add_argument("--cluster", default=remote.DEFAULT_URL, metavar="URL")
    stop_cluster.set_defaults(func=_cmd_cluster_stop)
    return parser


def _cmd_cancel(args: argparse.Namespace) -> int:
    reply = _remote(args.url, remote.job_path(args.job) + "/cancel", {})
    if reply is None:
        return EXIT_JOB_FAILED
    print(reply.get("status", "CANCELED"))
    return EXIT_OK


def _cmd_cluster_start(args: argparse.Namespace) -> int:
    from flowkit.cluster.cli import cmd_cluster_start

    return cmd_cluster_start(args)


def _cmd_cluster_stop(args: argparse.Namespace) -> int:
    from flowkit.cluster.cli import cmd_cluster_stop

    return cmd_cluster_stop(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowkit`` command line and return its exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] == "inspect":
        from flowkit.checkpoint.inspect import main as inspect_main

        return inspect_main(arguments[1:])
    job_args: list[str] = []
    if "--" in arguments:
        split = arguments.index("--")
        arguments, job_args = arguments[:split], arguments[split + 1 :]
    args = _parser().parse_args(arguments)
    args.job_args = job_args
    if job_args and args.command not in ("run", "explain"):
        print(f"error: `flowkit {args.command}` takes no job arguments after --", file=sys.stderr)
        return EXIT_USAGE
    level = logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    with _logging_to_stderr(level, getattr(args, "verbose", False)) as handler:
        args.log_handler = handler
        try:
            code: int = args.func(args)
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return code
