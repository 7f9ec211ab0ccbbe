"""The keyed count the connector crash jobs compute, and its exact checks.

Record ``i`` (``0 <= i < n``) has the key ``"k<i % keys>"`` and the value ``i``; a keyed
reduce (:func:`add`) emits ``(key, count, sum)`` after every record. Read in order per key,
the job's output is one exact multiset (:func:`expected_lines`) whatever failures and
restores happen in between: :func:`check_exactly_once` compares with it,
:func:`check_at_least_once` allows duplicates. The job files of ``flowkit run`` import this
module too (``tests`` is on their PYTHONPATH, see ``connectors.crash``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import flowkit as fk

KEYS = 7
Line = tuple[str, int, int]


def records(n: int, keys: int = KEYS) -> list[tuple[str, int]]:
    """``(key, i)`` for ``i`` in ``0..n-1``."""
    return [(f"k{i % keys}", i) for i in range(n)]


def expected_lines(n: int, keys: int = KEYS) -> Counter[Line]:
    """What the uninterrupted job outputs: every key's running count and sum."""
    counts: dict[str, int] = {}
    sums: dict[str, int] = {}
    out: Counter[Line] = Counter()
    for key, value in records(n, keys):
        counts[key] = counts.get(key, 0) + 1
        sums[key] = sums.get(key, 0) + value
        out[(key, counts[key], sums[key])] += 1
    return out


def identity(record: Any) -> Any:
    return record


def add(a: Line, b: Line) -> Line:
    """The keyed reduce: ``(key, count, sum)``."""
    return (a[0], a[1] + b[1], a[2] + b[2])


def keyed_totals(records: fk.DataStream, reduce: Callable[[Any, Any], Any] = add) -> fk.DataStream:
    """``(key, count, sum)`` after every ``(key, 1, i)`` record: the keyed reduce (uid
    ``totals``)."""
    return records.key_by(lambda r: r[0]).reduce(reduce).uid("totals")


def write_lines(totals: fk.DataStream, out: str | os.PathLike[str]) -> None:
    """Write ``totals`` as JSON lines into the exactly-once FileSink at ``out`` (uid
    ``sink``)."""
    totals.sink_to(fk.FileSink.for_row_format(out, encoder="jsonl").build()).uid("sink")


def json_lines(values: Iterable[str | bytes | None]) -> Counter[Line]:
    """The ``[key, count, sum]`` JSON values, counted."""
    lines: Counter[Line] = Counter()
    for value in values:
        assert value is not None
        key, count, total = json.loads(value)
        lines[(key, count, total)] += 1
    return lines


def file_lines(out: Path) -> Counter[Line]:
    """The lines of every committed (visible) part file of the FileSink at ``out``."""
    lines: Counter[Line] = Counter()
    if out.is_dir():
        for name in os.listdir(out):
            if not name.startswith("."):
                lines += json_lines((out / name).read_text().splitlines())
    return lines


def check_exactly_once(got: Counter[Line], n: int, keys: int = KEYS) -> None:
    """``got`` is exactly :func:`expected_lines`: each record counted once."""
    want = expected_lines(n, keys)
    duplicated = sum((got - want).values())
    missing = sum((want - got).values())
    assert duplicated == 0 and missing == 0, (
        f"{duplicated} duplicated or unexpected lines (e.g. {sorted(got - want)[:3]}), "
        f"{missing} missing (e.g. {sorted(want - got)[:3]})"
    )


def check_at_least_once(got: Counter[Line], n: int, keys: int = KEYS) -> int:
    """Every expected line is there, nothing else; returns how many are duplicates."""
    want = expected_lines(n, keys)
    assert set(got) == set(want), (
        f"missing {sorted(set(want) - set(got))[:3]}, unexpected {sorted(set(got) - set(want))[:3]}"
    )
    return sum((got - want).values())


def check_file_output(out: Path, n: int, keys: int = KEYS) -> None:
    """The FileSink at ``out`` committed each record's line exactly once, and no file of
    an abandoned attempt (hidden part files or writer locks) is left."""
    check_exactly_once(file_lines(out), n, keys)
    leftovers = sorted(name for name in os.listdir(out) if name.startswith("."))
    assert leftovers == [], f"files of abandoned attempts left: {leftovers}"
