"""A keyed job with an exactly-once FileSink whose committed output is checked exactly.

Records ``(key, i)`` for ``i`` in ``0..n-1`` come from one paced, replayable source; a
keyed reduce emits ``(key, count, sum)`` after every record, and the FileSink writes one
JSON line per result. The source and the map after it run at parallelism 1, so every key
sees its records in source order, and the committed output is one exact multiset
(:func:`expected_lines`) whatever failures and restores happened in between.

Also a job file for ``flowkit run`` (``build(env, args)``; arguments ``--out DIR
--records N --pause SECONDS``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flowkit as fk

KEYS = 7


def records(n: int) -> list[tuple[str, int]]:
    return [(f"k{i % KEYS}", i) for i in range(n)]


def expected_lines(n: int) -> Counter[tuple[str, int, int]]:
    """What the uninterrupted job commits: every key's running count and sum."""
    counts: dict[str, int] = {}
    sums: dict[str, int] = {}
    out: Counter[tuple[str, int, int]] = Counter()
    for key, value in records(n):
        counts[key] = counts.get(key, 0) + 1
        sums[key] = sums.get(key, 0) + value
        out[(key, counts[key], sums[key])] += 1
    return out


def committed_lines(out: Path) -> Counter[tuple[str, int, int]]:
    """The lines of every committed (visible) part file."""
    lines: Counter[tuple[str, int, int]] = Counter()
    for name in os.listdir(out):
        if not name.startswith("."):
            for line in (out / name).read_text().splitlines():
                key, count, total = json.loads(line)
                lines[(key, count, total)] += 1
    return lines


def final_sums(lines: Counter[tuple[str, int, int]]) -> dict[str, int]:
    """Each key's sum on its line with the highest count."""
    best: dict[str, tuple[int, int]] = {}
    for key, count, total in lines:
        best[key] = max(best.get(key, (0, 0)), (count, total))
    return {key: total for key, (_count, total) in best.items()}


def check_output(out: Path, n: int) -> None:
    """The committed output is exactly the expected multiset, with the right final sums,
    and no file of an abandoned attempt is left (hidden part files or writer locks)."""
    got = committed_lines(out)
    want = expected_lines(n)
    duplicated = sum((got - want).values())
    missing = sum((want - got).values())
    assert duplicated == 0 and missing == 0, (
        f"{duplicated} duplicated or unexpected lines (e.g. {sorted(got - want)[:3]}), "
        f"{missing} missing (e.g. {sorted(want - got)[:3]})"
    )
    sums: dict[str, int] = {}
    for key, value in records(n):
        sums[key] = sums.get(key, 0) + value
    assert final_sums(got) == sums
    leftovers = sorted(name for name in os.listdir(out) if name.startswith("."))
    assert leftovers == [], f"files of abandoned attempts left: {leftovers}"


def _identity(record: Any) -> Any:
    return record


def _add(a: tuple[str, int, int], b: tuple[str, int, int]) -> tuple[str, int, int]:
    return (a[0], a[1] + b[1], a[2] + b[2])


def build_job(
    env: fk.StreamExecutionEnvironment,
    out: str | os.PathLike[str],
    n: int,
    pause_s: float,
    *,
    before_key_by: Callable[[Any], Any] = _identity,
    reduce: Callable[[Any, Any], Any] = _add,
) -> None:
    """Add the job to ``env``; ``before_key_by`` and ``reduce`` may inject failures."""
    (
        env.from_source(fk.PacedSource(records(n), pause_s))
        .uid("source")
        .map(before_key_by)
        .uid("before-key-by")
        .set_parallelism(1)
        .map(lambda r: (r[0], 1, r[1]))
        .uid("ones")
        .set_parallelism(1)
        .key_by(lambda r: r[0])
        .reduce(reduce)
        .uid("totals")
        .sink_to(fk.FileSink.for_row_format(out, encoder="jsonl").build())
        .uid("sink")
    )


def build(env: fk.StreamExecutionEnvironment, args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="counting_job")
    parser.add_argument("--out", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--pause", type=float, default=0.001)
    options = parser.parse_args(args)
    build_job(env, options.out, options.records, options.pause)
