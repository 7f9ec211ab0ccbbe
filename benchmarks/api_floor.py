"""The floor the idiomatic API sets: the calls it makes per record, with no framework.

benchmarks/throughput.py measures flowkit written as its README teaches. Much of that time
is not flowkit's: the API itself calls Python code per record (the user's functions, the
state and context objects they call back, a generator per ``yield``-style function) that
the plain loops of ``../shared/bench`` do not. This script measures that part alone:
about the most any framework running the same user code in CPython can reach (one whose
own loop is compiled can come out a little above it, since the loop here is Python):

- ``*-api``: one tight loop makes exactly the calls the API makes per record and per
  result, on the same user objects as benchmarks/throughput.py (``RollingSum``,
  ``CountAggregate``, ``WindowRow``, the key selectors and the timestamp assigner). The
  state, context and window objects are the smallest Python objects with the API's
  methods: one dict per state, no key groups, no namespaces, no copy-on-write.
- ``*-api-codec``: the same, the records passing through flowkit's own batch encoding and
  decoding in lists of 1,000 first, which is what any byte-buffer channel costs at least
  (the keyed edge of W2 and W3 carries the records in flowkit).

Each run is paired with a run of the plain loop in this process and checked against the
reference checksums (``common.bench``), as in benchmarks/throughput.py; a wrong result
exits with status 1.

Run: ``python benchmarks/api_floor.py [--events N] [--runs R] [--only W2-api ...]``
"""

from __future__ import annotations

import argparse
import heapq
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from throughput import (  # noqa: E402
    CountAggregate,
    Events,
    RollingSum,
    WindowRow,
    _add,
    _user_value,
    common,
    double,
    get_ts,
    keep,
    run_paired,
    user_key,
)

import flowkit as fk  # noqa: E402
from flowkit.serialization import DefaultSerializer  # noqa: E402
from flowkit.window import TimeWindow  # noqa: E402

_CODEC = DefaultSerializer()


def _called(key_selector: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """What flowkit calls per record for ``key_by(key_selector)`` (a selector of the form
    ``lambda t: t[c]`` runs as ``operator.itemgetter(c)``)."""
    env = fk.StreamExecutionEnvironment(parallelism=1)
    return env.from_collection([None]).key_by(key_selector).get_key_selector()


#: The key selectors of throughput.py's jobs, as flowkit calls them.
_USER_KEY = _called(user_key)
_FIRST = _called(lambda t: t[0])


def _through_codec(records: Iterable[Any]) -> Iterator[Any]:
    """The records after an encode/decode round trip in batches of 1,000 (flowkit's codec)."""
    encode, decode = _CODEC.encode, _CODEC.decode
    it = iter(records)
    while batch := list(islice(it, common.BATCH)):
        yield from decode(*encode(batch))


class _Context:
    """The smallest context: the current key and window, as the API's methods give them."""

    __slots__ = ("key", "win")

    def __init__(self) -> None:
        self.key: Any = None
        self.win: Any = None

    def get_current_key(self) -> Any:
        return self.key

    def window(self) -> Any:
        return self.win


class _Value:
    """The smallest ValueState: one dict, keyed by the context's current key."""

    __slots__ = ("ctx", "data")

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.data: dict[Any, Any] = {}

    def value(self) -> Any:
        return self.data.get(self.ctx.key)

    def update(self, value: Any) -> None:
        self.data[self.ctx.key] = value


class _RuntimeContext:
    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx

    def get_state(self, descriptor: Any) -> _Value:
        return _Value(self.ctx)


def _w1(src: Iterable[Any]) -> int:
    """map(double) -> filter(keep) -> a sink that stores the values."""
    out: list[Any] = []
    append = out.append
    for e in src:
        e = double(e)
        if keep(e):
            append(e)
    return len(out)


def _w2(src: Iterable[Any]) -> tuple[int, dict[str, int]]:
    """key_by(user_key).process(RollingSum()) -> the latest (user, sum) per user."""
    ctx = _Context()
    fn = RollingSum()
    fn.open(_RuntimeContext(ctx))
    process = fn.process_element
    latest: dict[str, int] = {}
    count = 0
    for e in src:
        ctx.key = _USER_KEY(e)
        for user, total in process(e, ctx):
            latest[user] = total
            count += 1
    return count, latest


def _w2_reduce(src: Iterable[Any]) -> tuple[int, dict[str, int]]:
    """key_by(user_key).reduce(_add) -> the latest value per user."""
    accs: dict[str, Any] = {}
    latest: dict[str, int] = {}
    count = 0
    for e in src:
        key = _USER_KEY(e)
        acc = accs.get(key)
        acc = e if acc is None else _add(acc, e)
        accs[key] = acc
        latest[acc["user"]] = acc["value"]
        count += 1
    return count, latest


def _w2_sum(pairs: Iterable[Any]) -> tuple[int, dict[str, int]]:
    """key_by(lambda t: t[0]).sum(1) over the ``_user_value`` pairs -> the latest
    (user, sum) per user."""
    sums: dict[str, Any] = {}
    latest: dict[str, int] = {}
    count = 0
    select = _FIRST
    for t in pairs:
        key = select(t)
        acc = sums.get(key)
        acc = t if acc is None else (acc[0], acc[1] + t[1])
        sums[key] = acc
        latest[acc[0]] = acc[1]
        count += 1
    return count, latest


def _w3(src: Iterable[Any]) -> tuple[list[tuple[str, int, int]], int]:
    """Timestamps from the assigner, 1 s tumbling windows, aggregate(CountAggregate,
    WindowRow): per record the assigner, the key selector and ``add``; per result
    ``get_result``, a ``TimeWindow`` and ``WindowRow.process``."""
    assign: Callable[[Any, Any], int] = lambda e, ts: get_ts(e)  # noqa: E731
    agg = CountAggregate()
    add, create, result = agg.add, agg.create_accumulator, agg.get_result
    process = WindowRow().process
    ctx = _Context()
    rows: list[tuple[str, int, int]] = []
    emit = rows.append
    windows: dict[int, dict[Any, Any]] = {}
    heap: list[int] = []
    size = common.WINDOW_MS
    max_ts = wm = -(1 << 62)

    def fire(upto: int) -> None:
        while heap and heap[0] <= upto:
            end = heapq.heappop(heap)
            ctx.win = TimeWindow(end - size, end)
            for key, acc in windows.pop(end).items():
                ctx.key = key
                for row in process(key, ctx, [result(acc)]):
                    emit(row)

    for e in src:
        ts = assign(e, None)
        end = ts - ts % size + size
        if end - 1 <= wm:
            continue
        contents = windows.get(end)
        if contents is None:
            contents = windows[end] = {}
            heapq.heappush(heap, end)
        key = _USER_KEY(e)
        acc = contents.get(key)
        contents[key] = add(e, create() if acc is None else acc)
        if ts > max_ts:
            max_ts = ts
            wm = ts - common.WM_DELAY_MS - 1
            if heap[0] - 1 <= wm:
                fire(wm + 1)
    fire(1 << 62)
    return rows, 0


def _codec(loop: Callable[[Iterable[Any]], Any]) -> Callable[[Events], Any]:
    """``loop`` with the codec where flowkit's keyed edge is: right after the source."""
    return lambda events: loop(_through_codec(events))


WORKLOADS: dict[str, tuple[str, Callable[[Events], Any]]] = {
    "W1-api": ("w1", _w1),
    "W2-api": ("w2", _w2),
    "W2-api-codec": ("w2", _codec(_w2)),
    # the map runs before the keyed edge: the edge carries its pairs
    "W2-sum-api": ("w2", lambda events: _w2_sum(map(_user_value, events))),
    "W2-sum-api-codec": ("w2", lambda events: _w2_sum(_through_codec(map(_user_value, events)))),
    "W2-reduce-api": ("w2", _w2_reduce),
    "W2-reduce-api-codec": ("w2", _codec(_w2_reduce)),
    "W3-api": ("w3", _w3),
    "W3-api-codec": ("w3", _codec(_w3)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=None)
    args = parser.parse_args(argv)
    events = common.prepare(args.events)
    ok = run_paired("floor", WORKLOADS, args.only, events, args.runs, {})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
