"""Every example runs and prints exactly the output its docstring documents.

Each ``examples/*.py`` is run as a separate program (``sys.executable``); its standard
output must equal the block that follows the line ``Expected output...:`` in its module
docstring. The service example is also driven directly, inside the test's event loop.
The README's commands and code blocks are checked too: they are what a new user runs.
"""

from __future__ import annotations

import ast
import asyncio
import doctest
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flowkit import JobFailed, JobStatus, UserFunctionError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))
#: Examples that need a broker: tests/connectors/kafka/test_sink_example.py runs them
#: against the test broker and checks their documented output the same way.
NEEDS_BROKER = {"kafka_pipeline.py"}
#: Examples whose ``flowkit run`` form has a test of its own below (it talks to a service
#: the job starts, or checks the files the job commits).
RUN_TESTED_BELOW = {"asyncio_service.py", "checkpoint_and_restore.py"}
FLOWKIT = Path(sys.executable).with_name("flowkit")


def expected_output(path: Path) -> str:
    """The block after the ``Expected output...:`` line of ``path``'s module docstring.

    The block is every following line that is indented or blank, up to the first line that
    is not; it is dedented, and ends with exactly one newline.
    """
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=True)
    assert docstring, f"{path.name} has no module docstring"
    lines = docstring.splitlines()
    starts = [
        i
        for i, line in enumerate(lines)
        if line.startswith("Expected output") and line.endswith(":")
    ]
    assert len(starts) == 1, (
        f"{path.name}: expected one 'Expected output:' line, found {len(starts)}"
    )
    block: list[str] = []
    for line in lines[starts[0] + 1 :]:
        if line.strip() and not line[0].isspace():
            break
        block.append(line)
    text = textwrap.dedent("\n".join(block)).strip("\n")
    assert text, f"{path.name}: the 'Expected output:' block is empty"
    return text + "\n"


#: ``Output of ``flowkit run ...``:`` lines: the command and whether the lines may come in
#: any order (``(lines in any order)``, when parallel subtasks print side by side).
_RUN_LABEL = re.compile(r"^Output of ``(flowkit run [^`]+)``( \(lines in any order\))?:$")


def flowkit_run_outputs(path: Path) -> list[tuple[list[str], str, bool]]:
    """``(command, output, any_order)`` for each ``Output of ``flowkit run ...``:`` block of
    ``path``'s module docstring (blocks are read like the ``Expected output`` block)."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=True)
    assert docstring, f"{path.name} has no module docstring"
    lines = docstring.splitlines()
    found: list[tuple[list[str], str, bool]] = []
    for i, line in enumerate(lines):
        match = _RUN_LABEL.match(line)
        if match is None:
            continue
        block: list[str] = []
        for follow in lines[i + 1 :]:
            if follow.strip() and not follow[0].isspace():
                break
            block.append(follow)
        text = textwrap.dedent("\n".join(block)).strip("\n")
        found.append(
            (shlex.split(match.group(1)), text + "\n" if text else "", bool(match.group(2)))
        )
    return found


def run_flowkit(command: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a documented ``flowkit ...`` command with this environment's ``flowkit`` script."""
    assert command[0] == "flowkit", command
    return subprocess.run(
        [str(FLOWKIT), *command[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "default", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"flowkit_example_{name}", EXAMPLES_DIR / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_examples_are_all_there() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"word_count.py", "running_aggregate.py", "asyncio_service.py"} <= names


def test_expected_output_block_is_parsed_exactly(tmp_path: Path) -> None:
    script = tmp_path / "demo.py"
    script.write_text(
        '"""Title.\n\nExpected output (of something):\n    a 1\n\n      b\n\nMore prose.\n"""\n',
        encoding="utf-8",
    )
    assert expected_output(script) == "a 1\n\n  b\n"


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if p.name not in NEEDS_BROKER], ids=lambda p: p.name
)
def test_example_prints_its_documented_output(path: Path) -> None:
    result = run_example(str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_output(path)
    assert "Traceback" not in result.stderr
    assert "Warning" not in result.stderr, result.stderr


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_a_job_file(path: Path) -> None:
    module = load_example(path.stem)
    assert callable(getattr(module, "build", None)), f"{path.name} defines no build(env)"
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert f"flowkit run examples/{path.name}" in docstring, (
        f"{path.name} does not show how to run it with `flowkit run`"
    )


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    "path",
    [p for p in EXAMPLES if p.name not in NEEDS_BROKER | RUN_TESTED_BELOW],
    ids=lambda p: p.name,
)
def test_example_prints_its_documented_output_with_flowkit_run(path: Path) -> None:
    runs = flowkit_run_outputs(path)
    assert runs, f"{path.name} documents no 'Output of ``flowkit run ...``:' block"
    for command, expected, any_order in runs:
        result = run_flowkit(command)
        assert result.returncode == 0, result.stderr
        if any_order:
            assert sorted(result.stdout.splitlines()) == sorted(expected.splitlines())
        else:
            assert result.stdout == expected
        assert "Traceback" not in result.stderr
        assert "Warning" not in result.stderr, result.stderr
        assert "FINISHED" in result.stderr  # the summary line, on standard error


def test_run_label_is_parsed_exactly(tmp_path: Path) -> None:
    script = tmp_path / "demo.py"
    script.write_text(
        '"""Title.\n\nExpected output:\n    a\n\nOutput of ``flowkit run demo.py -- --n 2``:\n'
        "    b 1\n    b 2\n\nOutput of ``flowkit run demo.py`` (lines in any order):\n"
        '    c\nProse.\n"""\n',
        encoding="utf-8",
    )
    assert expected_output(script) == "a\n"
    assert flowkit_run_outputs(script) == [
        (["flowkit", "run", "demo.py", "--", "--n", "2"], "b 1\nb 2\n", False),
        (["flowkit", "run", "demo.py"], "c\n", True),
    ]


@pytest.mark.timeout(150)
def test_checkpoint_example_commits_every_total_once_with_flowkit_run(tmp_path: Path) -> None:
    example = load_example("checkpoint_and_restore")
    out = tmp_path / "out"
    result = run_flowkit(
        ["flowkit", "run", str(EXAMPLES_DIR / "checkpoint_and_restore.py"), "--", "--out", str(out)]
    )
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"WARNING job 'checkpoint_and_restore': restart 1 after a failure", result.stderr
    )
    assert "restarts: 1" in result.stderr  # the summary line
    lines = example.committed(out)
    assert sorted(map(tuple, lines)) == sorted(_running_totals(example.EVENTS))
    assert example.final_totals(lines) == {"a": 9997, "b": 9999, "c": 10001}


def _running_totals(events: list[tuple[str, int]]) -> list[tuple[str, int]]:
    totals: dict[str, int] = {}
    out = []
    for key, amount in events:
        totals[key] = totals.get(key, 0) + amount
        out.append((key, totals[key]))
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_docstring_examples_pass(path: Path) -> None:
    module = load_example(path.stem)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


@pytest.mark.timeout(150)
def test_word_count_reads_a_file(tmp_path: Path) -> None:
    text = tmp_path / "input.txt"
    text.write_text("Beta alpha beta\n\ngamma, BETA alpha.\n", encoding="utf-8")
    result = run_example(str(EXAMPLES_DIR / "word_count.py"), "--input", str(text))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "beta 3\nalpha 2\ngamma 1\n"


# ---------------------------------------------------------------------- the service, in-loop
@pytest.fixture(scope="module")
def service_example() -> ModuleType:
    return load_example("asyncio_service")


def job_status(service: Any) -> JobStatus:
    status: JobStatus = service.client.status
    return status


async def request(mod: ModuleType, port: int, method: str, path: str, body: Any = None) -> Any:
    return await asyncio.wait_for(mod.http_request("127.0.0.1", port, method, path, body), 10)


async def test_service_serves_running_totals_while_its_job_runs(
    service_example: ModuleType,
) -> None:
    mod = service_example
    tasks_before = asyncio.all_tasks()
    service = mod.TotalsService(port=0, parallelism=2)
    await asyncio.wait_for(service.start(), 10)
    try:
        port = service.port
        first = [
            {"user": "u1", "amount": 2},
            {"user": "u2", "amount": 5},
            {"user": "u1", "amount": 3},
        ]
        assert await request(mod, port, "POST", "/events", first) == (202, {"accepted": 3})
        await asyncio.wait_for(service.wait_for_events(3), 10)
        assert await request(mod, port, "GET", "/totals") == (
            200,
            {"events": 3, "totals": {"u1": 5, "u2": 5}},
        )

        # The job keeps running: later events update the same totals.
        assert await request(mod, port, "POST", "/events", {"user": "u2", "amount": 10}) == (
            202,
            {"accepted": 1},
        )
        await asyncio.wait_for(service.wait_for_events(4), 10)
        assert await request(mod, port, "GET", "/totals") == (
            200,
            {"events": 4, "totals": {"u1": 5, "u2": 15}},
        )
        assert job_status(service) is JobStatus.RUNNING

        # Bad requests are answered, and change nothing.
        status, reply = await request(mod, port, "POST", "/events", {"user": "u3"})
        assert status == 400 and "amount" in reply["error"]
        assert (await request(mod, port, "GET", "/nowhere"))[0] == 404
        assert (await request(mod, port, "GET", "/events"))[0] == 405
        assert service.accepted == 4 and service.queue.empty()
    finally:
        await asyncio.wait_for(service.stop(), 10)

    assert job_status(service) is JobStatus.CANCELED
    assert service.client.done()
    assert asyncio.all_tasks() == tasks_before


async def test_service_demo_returns_exact_totals_and_leaves_no_task(
    service_example: ModuleType,
) -> None:
    tasks_before = asyncio.all_tasks()
    totals = await asyncio.wait_for(service_example.run_demo(quiet=True), 30)
    assert totals == {"events": 6, "totals": {"alice": 13, "bob": 7, "carol": 10}}
    assert asyncio.all_tasks() == tasks_before


async def test_service_reports_a_failed_job_instead_of_waiting_forever(
    service_example: ModuleType,
) -> None:
    tasks_before = asyncio.all_tasks()
    service = service_example.TotalsService(port=0)
    await asyncio.wait_for(service.start(), 10)
    try:
        # Bypass the HTTP validation: an amount of the wrong type breaks the running sum.
        service.queue.put_nowait({"user": "x", "amount": 1})
        service.queue.put_nowait({"user": "x", "amount": "oops"})
        with pytest.raises(
            RuntimeError, match=r"the job ended after applying [01] of 2 events"
        ) as info:
            await asyncio.wait_for(service.wait_for_events(2), 10)
        assert isinstance(info.value.__cause__, JobFailed)
        assert isinstance(info.value.__cause__.__cause__, UserFunctionError)
        assert isinstance(info.value.__cause__.__cause__.__cause__, TypeError)
        assert job_status(service) is JobStatus.FAILED
    finally:
        await asyncio.wait_for(service.stop(), 10)
    assert asyncio.all_tasks() == tasks_before


async def test_service_that_cannot_listen_stops_its_job(service_example: ModuleType) -> None:
    tasks_before = asyncio.all_tasks()
    async with service_example.TotalsService(port=0) as first:
        second = service_example.TotalsService(port=first.port)
        with pytest.raises(OSError):
            await asyncio.wait_for(second.start(), 10)
        assert job_status(second) is JobStatus.CANCELED
        assert job_status(first) is JobStatus.RUNNING
    assert asyncio.all_tasks() == tasks_before


@pytest.mark.timeout(90)
def test_service_runs_as_a_job_file_with_flowkit_run(service_example: ModuleType) -> None:
    ((command, expected, _),) = flowkit_run_outputs(EXAMPLES_DIR / "asyncio_service.py")
    process = subprocess.Popen(
        [str(FLOWKIT), *command[1:]],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        stderr_lines: list[str] = []
        for line in process.stderr:  # progress lines, then the address once it listens
            stderr_lines.append(line)
            listening = re.search(r"listening on http://([\d.]+):(\d+)", line)
            if listening:
                break
        else:
            pytest.fail(f"the service never listened: {''.join(stderr_lines)}")
        host, port = listening.group(1), int(listening.group(2))

        async def post_demo() -> list[Any]:
            return [
                await request(service_example, port, "POST", "/events", body)
                for body in service_example.DEMO_REQUESTS
            ]

        assert host == "127.0.0.1"
        replies = asyncio.run(post_demo())
        assert [status for status, _ in replies] == [202, 202, 202]
        stdout, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, "".join(stderr_lines) + rest
    assert stdout == expected
    assert "FINISHED" in rest and "Traceback" not in rest


def test_service_rejects_malformed_events(service_example: ModuleType) -> None:
    parse = service_example.parse_events
    assert parse(b'[{"user": "a", "amount": 1}, {"user": "b", "amount": -2}]') == [
        {"user": "a", "amount": 1},
        {"user": "b", "amount": -2},
    ]
    for body in (
        b"not json",
        b'{"user": "a", "amount": 1.5}',
        b'[{"user": 7, "amount": 1}]',
        b"[1]",
    ):
        with pytest.raises(service_example.BadRequest) as info:
            parse(body)
        assert info.value.status == 400


# ---------------------------------------------------------------------- the README
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_install_and_test_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.DOTALL)
    assert first_block is not None and README.index("```sh") < README.index("\n## ")
    install, test = first_block.group(1).strip().splitlines()
    assert install.startswith("python3 -m venv .venv && ")
    assert 'pip install -e ".[dev]"' in install
    example = install.rsplit("&& ", 1)[1]
    assert example.startswith("python examples/") and (ROOT / example.split()[1]).is_file()
    assert test == "python -m pytest -q"
    ci_commands = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert test in ci_commands


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    "snippet",
    re.findall(r"```python\n(.*?)```", README, re.DOTALL),
    ids=lambda snippet: snippet.splitlines()[0][:40],
)
def test_readme_python_snippets_run(snippet: str, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(snippet, encoding="utf-8")
    result = run_example(str(script))
    assert result.returncode == 0, result.stderr
    # Where a snippet shows its output in a trailing comment, the output matches.
    for line in snippet.splitlines():
        printed = re.match(r"^# (.+)$", line)
        if printed:
            assert printed.group(1) in result.stdout.splitlines()
