"""PyFlink DataStream jobs run on flowkit after only their imports are rewritten, and
print what they print on PyFlink (see README.md in this directory).

Each job is a file here importing ``pyflink``; the test rewrites the import lines
(``pyflink`` -> ``flowkit.pyflink``) and nothing else, runs the result as a script and
compares its standard output, line for line, with PyFlink's. The expected outputs are
derived from Flink's semantics, not taken from flowkit (the reasoning is next to each).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PRINTING = "Printing result to stdout. Use --output to specify output path."

_IMPORT = re.compile(r"^(\s*(?:from|import)\s+)pyflink\b", re.MULTILINE)


def port(name: str, directory: Path) -> Path:
    """Write ``name`` with ``pyflink`` replaced by ``flowkit.pyflink`` in its imports."""
    source = (HERE / name).read_text(encoding="utf-8")
    ported, count = _IMPORT.subn(r"\1flowkit.pyflink", source)
    assert count > 0, f"{name} imports nothing from pyflink"
    # Only import lines changed.
    changed = [
        (a, b) for a, b in zip(source.splitlines(), ported.splitlines(), strict=True) if a != b
    ]
    assert all(re.match(r"\s*(from|import) ", a) for a, _ in changed), changed
    assert "pyflink" not in _IMPORT.sub("", ported).replace("flowkit.pyflink", "")
    target = directory / Path(name).name
    target.write_text(ported, encoding="utf-8")
    return target


def run(name: str, directory: Path, *args: str) -> str:
    script = port(name, directory)
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script), *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def lines(text: str) -> str:
    return "\n".join(text) + "\n" if isinstance(text, list) else text


def committed_lines(directory: Path) -> list[str]:
    """The lines of every finished part file under ``directory`` (hidden files are
    unfinished ones)."""
    return [
        line
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


# Untyped records (no output_type) print with Python's str; the jobs run at parallelism 1.
EXPECTED: dict[str, list[str]] = {
    # Three jobs, one per execute(); the rows come from from_collection(type_info=
    # ROW_NAMED): fields read by name. map() returns untyped tuples; the keyed reduce
    # emits a running result per record (streaming).
    "basic_operations.py": [
        """(7, '{"user": "ann", "visits": 4, "home": {"country": "France", "city": "Lyon"}}')""",
        """(8, '{"user": "bob", "visits": 11, "home": {"country": "Japan", "city": "Osaka"}}')""",
        """(9, '{"user": "cid", "visits": 2, "home": {"country": "France", "city": "Nice"}}')""",
        """(8, '{"user": "bob", "visits": 11, "home": {"country": "Japan", "city": "Osaka"}}')""",
        """(9, '{"user": "cid", "visits": 2, "home": {"country": "France", "city": "Nice"}}')""",
        "('France', 3)",
        "('Japan', 10)",
        "('France', 4)",
    ],
    # A running total per key, after every record.
    "state_access.py": [
        "('pear', 2.5)",
        "('plum', 1.25)",
        "('pear', 2.6)",
        "('plum', 1.45)",
        "('pear', 6.6)",
        "('fig', 3.0)",
    ],
    # Timers at ts + 3000: red 5000, 4000, 12000; blue 9500, 7200. A watermark fires
    # timers in timestamp order; a watermark during the input (bounded out-of-orderness
    # of 3 s: at most 9000 - 3001) can only fire red's 4000 and 5000 after red's last
    # record, so every firing reports the key's final total: red 15, blue 3.
    "event_time_timer.py": [
        "('red', 4000, 15)",
        "('red', 5000, 15)",
        "('blue', 7200, 3)",
        "('blue', 9500, 3)",
        "('red', 12000, 15)",
    ],
    # The map returns (id, dict); the filter keeps the northern stores.
    "process_json_data.py": [
        "(1, {'item': 'lamp', 'stock': 14, 'store': {'region': 'north', 'id': 11}})",
        "(3, {'item': 'sofa', 'stock': 12, 'store': {'region': 'north', 'id': 13}})",
    ],
    # Types.TUPLE output: Java's Tuple4.toString. Windows [0,4): 0,3; [4,8): 4,6,7;
    # [12,16): 13; they fire in the order of their ends.
    "windowing/tumbling_time_window.py": [
        PRINTING,
        "(ok,0,4,2)",
        "(ok,4,8,3)",
        "(ok,12,16,1)",
    ],
    # Size 6, slide 3: a record at t is in the windows starting at t - t % 3 and every
    # 3 ms before it while start > t - 6. [-3,3): 1,2; [0,6): 1,2,5; [3,9): 5,7;
    # [6,12): 7,11; [9,15): 11.
    "windowing/sliding_time_window.py": [
        PRINTING,
        "(go,-3,3,2)",
        "(go,0,6,3)",
        "(go,3,9,2)",
        "(go,6,12,2)",
        "(go,9,15,1)",
    ],
    # Each record opens [t, t+3); windows that overlap or touch merge (TimeWindow.
    # intersects): [1,4)+[3,6)+[6,9) -> [1,9); [10,13)+[12,15) -> [10,15); [20,23).
    "windowing/session_with_gap_window.py": [
        PRINTING,
        "(s,1,9,3)",
        "(s,10,15,2)",
        "(s,20,23,1)",
    ],
    # Gaps from the records: [2,3)+[3,5)+[5,9) -> [2,9); [12,13)+[13,19) -> [12,19).
    "windowing/session_with_dynamic_gap_window.py": [
        PRINTING,
        "(d,2,9,3)",
        "(d,12,19,2)",
    ],
    # count_window(2): x fires after 10,20 and 30,40; y after 1,2 (3 stays alone).
    "windowing/tumbling_count_window.py": [
        PRINTING,
        "(x,30)",
        "(y,3)",
        "(x,70)",
    ],
    # ContinuousEventTimeTrigger.of(4 ms) on windows of 8 ms: the first record of a
    # window registers a timer at min(t - t % 4 + 4, end - 1) besides the one at end - 1;
    # each early timer registers the next one. [0,8) (1,2,6): timers 4 and 7; [8,16)
    # (9): 12 and 15; [16,24) (17): 20 and 23: each window fires twice (FIRE, no purge),
    # and no watermark of the input reaches 4 before 6 arrived.
    "windowing/tumbling_time_window_with_continuous_trigger.py": [
        PRINTING,
        "(c,0,8,3)",
        "(c,0,8,3)",
        "(c,8,16,1)",
        "(c,8,16,1)",
        "(c,16,24,1)",
        "(c,16,24,1)",
    ],
}


def test_every_job_here_has_an_expected_output() -> None:
    jobs = {
        str(p.relative_to(HERE))
        for p in HERE.rglob("*.py")
        if not p.name.startswith("test_") and p.name != "__init__.py"
    }
    assert jobs == set(EXPECTED) | set(BATCH_EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED), ids=lambda n: n.removesuffix(".py"))
def test_job_prints_what_pyflink_prints(name: str, tmp_path: Path) -> None:
    assert run(name, tmp_path) == lines(EXPECTED[name])


@pytest.mark.parametrize(
    "name",
    sorted(n for n in EXPECTED if n.startswith("windowing/")),
    ids=lambda n: n.removesuffix(".py"),
)
def test_windowing_job_writes_its_output_files_in_javas_form(name: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(name, tmp_path, "--output", str(out)) == ""
    assert committed_lines(out) == EXPECTED[name][1:]


# RuntimeExecutionMode.BATCH: the keyed reduce emits each word's final count once, at
# the end, keys in the order Flink's batch execution sorts the keyed input: by the
# serialized key, here the pickled word (key_by without key_type): shorter pickles
# first, then bytewise (upper case before lower case, "," before letters).
BATCH_EXPECTED: dict[str, list[str]] = {
    "word_count.py": [
        "No --input given: counting the words of the built-in lines.",
        "No --output given: printing the counts.",
        "(In,1)",
        "(of,1)",
        "(or,1)",
        "(the,2)",
        "(thy,1)",
        "(What,1)",
        "(eye,,1)",
        "(hand,1)",
        "(Could,1)",
        "(Tyger,1)",
        "(frame,1)",
        "(Tyger,,1)",
        "(night;,1)",
        "(bright,,1)",
        "(burning,1)",
        "(fearful,1)",
        "(forests,1)",
        "(immortal,1)",
        "(symmetry?,1)",
    ],
}


def test_word_count_prints_final_counts_in_batch_mode(tmp_path: Path) -> None:
    assert run("word_count.py", tmp_path) == lines(BATCH_EXPECTED["word_count.py"])


def test_word_count_reads_a_file_and_writes_part_files(tmp_path: Path) -> None:
    text = tmp_path / "in.txt"
    text.write_text("to be, or not to be\nbe quick\n", encoding="utf-8")
    out = tmp_path / "out"
    # FileSource records have no timestamps: the strategy without timestamp assigner
    # passes them on without one, as Flink does.
    assert run("word_count.py", tmp_path, "--input", str(text)) == lines(
        [
            "No --output given: printing the counts.",
            "(be,2)",
            "(or,1)",
            "(to,2)",
            "(be,,1)",
            "(not,1)",
            "(quick,1)",
        ]
    )
    assert run("word_count.py", tmp_path, "--input", str(text), "--output", str(out)) == ""
    assert committed_lines(out) == ["(be,2)", "(or,1)", "(to,2)", "(be,,1)", "(not,1)", "(quick,1)"]
