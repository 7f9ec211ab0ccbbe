"""Window joins, co-groups and interval joins against brute-force references."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

import flowkit as fk
from flowkit.api.join import (
    CoGroupedStreams,
    CoGroupFunction,
    FlatJoinFunction,
    JoinFunction,
    ProcessJoinFunction,
)
from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK, OutputTag
from flowkit.errors import InvalidConfigurationError, JobFailed, UserFunctionError
from flowkit.eventtime.clocks import ManualClock
from flowkit.eventtime.watermarks import WatermarkStrategy
from flowkit.operators.base import OperatorContext, Output
from flowkit.operators.join import IntervalJoinOperator
from flowkit.sinks import CollectSink
from flowkit.testing.test_stream import TestStream
from flowkit.window import (
    CountEvictor,
    EventTimeSessionWindows,
    EventTimeTrigger,
    PurgingTrigger,
    SlidingEventTimeWindows,
    TimeEvictor,
    TumblingEventTimeWindows,
)

WAIT = 10
KEYS = ("a", "b", "c")
Element = tuple[str, int, str]  # (key, timestamp, id)


async def run(env: fk.StreamExecutionEnvironment) -> None:
    client = await env.execute_async()
    await asyncio.wait_for(client.wait(), WAIT)


def key_of(element: Any) -> Any:
    return element[0]


def results(sink: CollectSink) -> Counter[tuple[Any, Any]]:
    return Counter((r.value, r.timestamp) for r in sink.records)


def causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 20:
        chain.append(current)
        current = current.__cause__
    return chain


# ---------------------------------------------------------------------- random inputs
def random_side(
    rng: random.Random, tag: str, n: int, keys: Iterable[str] = KEYS, span: int = 60
) -> list[Element]:
    keys = list(keys)
    return [(rng.choice(keys), rng.randrange(span), f"{tag}{i}") for i in range(n)]


def scripted(rng: random.Random, elements: list[Element], margin: int = 1) -> TestStream:
    """A TestStream of ``elements``, out of order within chunks, with watermarks between.

    Each watermark is at least ``margin`` below the timestamp of every element after it, so
    nothing is late (or exactly at the watermark) wherever the two inputs meet.
    """
    ordered = sorted(elements, key=lambda e: e[1])
    stream = TestStream()
    last_watermark = MIN_WATERMARK
    i = 0
    while i < len(ordered):
        chunk = ordered[i : i + rng.randint(1, 6)]
        i += len(chunk)
        rng.shuffle(chunk)
        for element in chunk:
            stream.add_element(element, element[1])
        if i < len(ordered):
            watermark = ordered[i][1] - margin
            if watermark > last_watermark and rng.random() < 0.7:
                stream.advance_watermark_to(watermark)
                last_watermark = watermark
    return stream.advance_watermark_to_infinity()


# ---------------------------------------------------------------------- interval join: reference
def interval_pairs(
    left: list[Element],
    right: list[Element],
    lower: int,
    upper: int,
    lower_exclusive: bool = False,
    upper_exclusive: bool = False,
) -> Counter[tuple[Any, Any]]:
    """Every (left, right) pair with equal keys and right.ts - left.ts within the bounds."""
    expected: Counter[tuple[Any, Any]] = Counter()
    for lv in left:
        for rv in right:
            if lv[0] != rv[0]:
                continue
            delta = rv[1] - lv[1]
            above = delta > lower if lower_exclusive else delta >= lower
            below = delta < upper if upper_exclusive else delta <= upper
            if above and below:
                expected[((lv, rv), max(lv[1], rv[1]))] += 1
    return expected


def interval_job(
    env: fk.StreamExecutionEnvironment,
    left: TestStream,
    right: TestStream,
    configure: Callable[[Any], Any],
    function: Any,
) -> CollectSink:
    sink = CollectSink()
    lefts = env.from_source(left).key_by(key_of)
    rights = env.from_source(right).key_by(key_of)
    configure(lefts.interval_join(rights)).process(function).sink_to(sink)
    return sink


BOUNDS = [(-5, 5), (0, 0), (2, 10), (-10, -2), (-3, 0), (0, 7), (-20, 20)]


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("bounds", BOUNDS)
async def test_interval_join_matches_brute_force(parallelism: int, bounds: tuple[int, int]) -> None:
    lower, upper = bounds
    seed = f"{parallelism}:{lower}:{upper}"
    rng = random.Random(seed)
    for lower_exclusive, upper_exclusive in [
        (False, False),
        (True, True),
        (rng.random() < 0.5, True),
    ]:
        left = random_side(rng, "L", rng.randint(0, 50), span=30)
        right = random_side(rng, "R", rng.randint(0, 50), span=30)
        env = fk.StreamExecutionEnvironment(parallelism=parallelism)

        def configure(join: Any, le: bool = lower_exclusive, ue: bool = upper_exclusive) -> Any:
            joined = join.between(lower, upper)
            if le:
                joined = joined.lower_bound_exclusive()
            if ue:
                joined = joined.upper_bound_exclusive()
            return joined

        sink = interval_job(
            env, scripted(rng, left), scripted(rng, right), configure, lambda lv, rv: (lv, rv)
        )
        await run(env)
        assert results(sink) == interval_pairs(
            left, right, lower, upper, lower_exclusive, upper_exclusive
        ), (seed, lower_exclusive, upper_exclusive)


async def test_interval_join_from_collection_with_monotonous_watermarks() -> None:
    rng = random.Random(7)
    left = sorted(random_side(rng, "L", 50, span=200), key=lambda e: e[1])
    right = sorted(random_side(rng, "R", 50, span=200), key=lambda e: e[1])
    for parallelism in (1, 2):
        env = fk.StreamExecutionEnvironment(parallelism=parallelism)
        strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
            lambda e, _: e[1]
        )
        lefts = env.from_collection(left).assign_timestamps_and_watermarks(strategy)
        rights = env.from_collection(right).assign_timestamps_and_watermarks(strategy)
        sink = CollectSink()
        (
            lefts.key_by(key_of)
            .interval_join(rights.key_by(key_of))
            .between(-7, 3)
            .process(lambda lv, rv: (lv, rv))
            .sink_to(sink)
        )
        await run(env)
        assert results(sink) == interval_pairs(left, right, -7, 3)


class Describe(ProcessJoinFunction):
    """Emits the context's view of each pair, a side output, and a ``yield tag, value``."""

    side = OutputTag("pairs")
    other = OutputTag("other")

    def __init__(self) -> None:
        self.opened = False

    def open(self, runtime_context: Any) -> None:
        self.opened = True

    def process_element(self, left: Any, right: Any, ctx: Any) -> Iterator[Any]:
        assert self.opened
        ctx.output(self.side, (left[2], right[2]))
        yield self.other, right[2]
        yield (
            left[2],
            right[2],
            ctx.get_left_timestamp(),
            ctx.get_right_timestamp(),
            ctx.get_timestamp(),
        )


async def test_process_join_function_context_and_side_outputs() -> None:
    env = fk.StreamExecutionEnvironment(parallelism=2)
    left = TestStream().add_element(("a", 10, "l1"), 10).add_element(("b", 30, "l2"), 30)
    right = (
        TestStream()
        .add_element(("a", 8, "r1"), 8)
        .add_element(("a", 13, "r2"), 13)
        .add_element(("b", 28, "r3"), 28)
    )
    main, side, other = CollectSink(), CollectSink(), CollectSink()
    joined = (
        env.from_source(left)
        .key_by(key_of)
        .interval_join(env.from_source(right).key_by(key_of))
        .between(-5, 5)
        .process(Describe())
    )
    joined.sink_to(main)
    joined.get_side_output(Describe.side).sink_to(side)
    joined.get_side_output(Describe.other).sink_to(other)
    await run(env)
    assert results(main) == Counter(
        {
            (("l1", "r1", 10, 8, 10), 10): 1,
            (("l1", "r2", 10, 13, 13), 13): 1,
            (("l2", "r3", 30, 28, 30), 30): 1,
        }
    )
    assert results(side) == Counter(
        {(("l1", "r1"), 10): 1, (("l1", "r2"), 13): 1, (("l2", "r3"), 30): 1}
    )
    assert results(other) == Counter({("r1", 10): 1, ("r2", 13): 1, ("r3", 30): 1})


@pytest.mark.parametrize(
    ("lower_exclusive", "upper_exclusive", "expected"),
    [
        (False, False, [8, 9, 10, 11, 12]),
        (True, False, [9, 10, 11, 12]),
        (False, True, [8, 9, 10, 11]),
        (True, True, [9, 10, 11]),
    ],
)
async def test_exclusive_bounds(
    lower_exclusive: bool, upper_exclusive: bool, expected: list[int]
) -> None:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    left = TestStream().add_element(("k", 10, "l"), 10)
    right = TestStream()
    for ts in range(6, 15):
        right.add_element(("k", ts, f"r{ts}"), ts)

    def configure(join: Any) -> Any:
        joined = join.between(-2, 2)
        if lower_exclusive:
            joined = joined.lower_bound_exclusive()
        if upper_exclusive:
            joined = joined.upper_bound_exclusive()
        return joined

    sink = interval_job(env, left, right, configure, lambda lv, rv: rv[1])
    await run(env)
    assert sorted(sink.values) == expected


def test_invalid_bounds_are_rejected() -> None:
    env = fk.StreamExecutionEnvironment()
    a = env.from_source(TestStream()).key_by(key_of)
    b = env.from_source(TestStream()).key_by(key_of)
    with pytest.raises(InvalidConfigurationError, match="lower bound"):
        a.interval_join(b).between(5, 2)
    with pytest.raises(InvalidConfigurationError, match="whole number of milliseconds"):
        a.interval_join(b).between("1", 2)
    with pytest.raises(ValueError, match="lower_bound <= upper_bound"):
        IntervalJoinOperator("j", lambda x, y: x, key_of, key_of, 1, 0)
    with pytest.raises(TypeError):
        a.interval_join(b).between(0, 1).process(42)
    with pytest.raises(TypeError, match="KeyedStream"):
        a.interval_join(env.from_source(TestStream()))  # type: ignore[arg-type]
    # equal bounds are fine, and so are bounds given as timedeltas
    import datetime

    joined = a.interval_join(b).between(datetime.timedelta(seconds=-1), datetime.timedelta(0))
    assert (joined.lower_bound, joined.upper_bound) == (-1000, 0)


def test_interval_join_needs_watermarks_upstream() -> None:
    env = fk.StreamExecutionEnvironment()
    a = env.from_collection([("a", 1)]).key_by(key_of)
    b = env.from_collection([("a", 1)]).key_by(key_of)
    a.interval_join(b).between(0, 1).process(lambda x, y: x).sink_to(CollectSink())
    with pytest.raises(InvalidConfigurationError, match="watermarks"):
        env.execute()


async def test_records_without_timestamps_fail_the_job() -> None:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    left = TestStream().add_element(("a", 1, "l"))  # no timestamp
    right = TestStream().add_element(("a", 1, "r"), 1)
    interval_job(env, left, right, lambda j: j.between(0, 1), lambda x, y: x)
    with pytest.raises(JobFailed) as info:
        await run(env)
    messages = [str(e) for e in causes(info.value)]
    assert any("without a timestamp" in m for m in messages), messages
    assert any(isinstance(e, UserFunctionError) for e in causes(info.value))


async def test_user_function_error_names_the_operator() -> None:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    left = TestStream().add_element(("a", 1, "l"), 1)
    right = TestStream().add_element(("a", 1, "r"), 1)

    def boom(lv: Any, rv: Any) -> Any:
        raise ZeroDivisionError("boom")

    interval_job(env, left, right, lambda j: j.between(0, 1), boom)
    with pytest.raises(JobFailed) as info:
        await run(env)
    chain = causes(info.value)
    assert any(isinstance(e, ZeroDivisionError) for e in chain)
    assert any("IntervalJoin" in str(e) for e in chain)


# ---------------------------------------------------------------------- interval join: operator
class Driver:
    """Drives an IntervalJoinOperator directly and records what it emits."""

    def __init__(self, op: IntervalJoinOperator, tags: Iterable[OutputTag] = ()) -> None:
        self.op = op
        self.records: list[tuple[Any, Any]] = []
        self.watermarks: list[int] = []
        self.sides: dict[str, list[tuple[Any, Any]]] = {}

        def collect(values: list[Any], stamps: list[Any] | None) -> None:
            assert stamps is not None
            self.records.extend(zip(values, stamps))

        def side_collector(tag_id: str) -> Callable[[list[Any], list[Any] | None], None]:
            def collect_side(values: list[Any], stamps: list[Any] | None) -> None:
                assert stamps is not None
                self.sides.setdefault(tag_id, []).extend(zip(values, stamps))

            return collect_side

        sides = {tag.tag_id: Output(collect=side_collector(tag.tag_id)) for tag in tags}
        op.setup(
            OperatorContext("IntervalJoin", 0, 1, 128, clock=ManualClock()),
            Output(collect=collect, emit_watermark=self.watermarks.append, sides=sides),
        )
        op.open()

    def left(self, *elements: Element) -> None:
        self.op.process_batch1(list(elements), [e[1] for e in elements])

    def right(self, *elements: Element) -> None:
        self.op.process_batch2(list(elements), [e[1] for e in elements])

    def buffered(self, left: bool) -> set[tuple[Any, int]]:
        return {(key, ts) for key, buckets in self.op.buffered(left).items() for ts in buckets}


def make_driver(lower: int, upper: int, **kwargs: Any) -> Driver:
    tags = [t for t in (kwargs.get("left_late_tag"), kwargs.get("right_late_tag")) if t]
    op = IntervalJoinOperator(
        "IntervalJoin", lambda lv, rv: (lv, rv), key_of, key_of, lower, upper, **kwargs
    )
    return Driver(op, tags)


@pytest.mark.parametrize(
    ("lower", "upper", "upper_exclusive", "left_gone_at", "right_gone_at"),
    [
        # a left element at t is kept until the watermark reaches t + upper (t if upper <= 0),
        # a right element at t until it reaches t - lower (t if lower >= 0)
        (-5, 10, False, 110, 105),
        (-5, 10, True, 109, 105),
        (2, 10, False, 110, 100),
        (-10, -2, False, 100, 110),
        (0, 0, False, 100, 100),
        (-3, 0, False, 100, 103),
    ],
)
def test_cleanup_removes_buffered_elements_when_watermark_passes(
    lower: int, upper: int, upper_exclusive: bool, left_gone_at: int, right_gone_at: int
) -> None:
    d = make_driver(lower, upper, upper_bound_inclusive=not upper_exclusive)
    d.left(("k", 100, "l"))
    d.right(("k", 100, "r"))
    assert d.buffered(True) == {("k", 100)} and d.buffered(False) == {("k", 100)}
    for w in range(95, 112):
        d.op.process_watermark1(w)
        d.op.process_watermark2(w)
        assert d.buffered(True) == ({("k", 100)} if w < left_gone_at else set()), w
        assert d.buffered(False) == ({("k", 100)} if w < right_gone_at else set()), w
    assert d.watermarks == list(range(95, 112))
    assert d.op.timers.num_event_time_timers() == 0
    assert d.op.backend.tables["LEFT_BUFFER"] == {} and d.op.backend.tables["RIGHT_BUFFER"] == {}


def test_watermark_is_minimum_of_both_inputs() -> None:
    d = make_driver(0, 0)
    d.left(("k", 100, "l"))
    d.op.process_watermark1(200)
    assert d.watermarks == [] and d.buffered(True) == {("k", 100)}
    d.op.process_watermark2(150)
    assert d.watermarks == [150] and d.buffered(True) == set()


def test_late_elements_are_dropped_or_side_output() -> None:
    d = make_driver(-5, 5)
    d.left(("k", 10, "l1"))
    d.op.process_watermark1(20)
    d.op.process_watermark2(20)
    # 19 < 20: late on both sides; 20 == watermark is still on time
    d.left(("k", 19, "late-l"), ("k", 20, "l2"))
    d.right(("k", 19, "late-r"), ("k", 20, "r2"))
    assert [v for v, _ in d.records] == [(("k", 20, "l2"), ("k", 20, "r2"))]
    assert d.op.num_late_records_dropped == 2
    assert d.buffered(True) == {("k", 20)}  # l1 was cleaned at 15, late-l never buffered

    left_tag, right_tag = OutputTag("late-left"), OutputTag("late-right")
    d = make_driver(-5, 5, left_late_tag=left_tag, right_late_tag=right_tag)
    d.op.process_watermark1(20)
    d.op.process_watermark2(20)
    d.left(("k", 3, "late-l"))
    d.right(("k", 4, "late-r"), ("k", 25, "r"))
    assert d.sides == {
        left_tag.tag_id: [(("k", 3, "late-l"), 3)],
        right_tag.tag_id: [(("k", 4, "late-r"), 4)],
    }
    assert d.op.num_late_records_dropped == 0
    assert d.records == []


def test_missing_timestamps_raise_a_clear_error() -> None:
    d = make_driver(0, 1)
    with pytest.raises(UserFunctionError, match="without a timestamp"):
        d.op.process_batch1([("k", 1, "x")], None)
    with pytest.raises(UserFunctionError, match="right"):
        d.op.process_batch2([("k", 1, "x")], [None])
    d.op.process_batch1([], None)  # an empty batch is fine


class Reference:
    """A naive model of the interval join: lists of arrivals, no buffers, no timers."""

    def __init__(
        self, lower: int, upper: int, lower_exclusive: bool, upper_exclusive: bool
    ) -> None:
        self.lower = lower + 1 if lower_exclusive else lower
        self.upper = upper - 1 if upper_exclusive else upper
        self.input_watermarks = [MIN_WATERMARK, MIN_WATERMARK]
        self.watermark = MIN_WATERMARK
        self.lefts: list[dict[str, Any]] = []
        self.rights: list[dict[str, Any]] = []
        self.out: Counter[tuple[Any, Any]] = Counter()
        self.late = 0

    def element(self, is_left: bool, element: Element) -> None:
        ts = element[1]
        if self.watermark != MIN_WATERMARK and ts < self.watermark:
            self.late += 1
            return
        mine, others = (self.lefts, self.rights) if is_left else (self.rights, self.lefts)
        # the left element's removal time: t + upper if upper > 0 else t;
        # the right element's: t - lower if lower < 0 else t
        if is_left:
            gone_at = ts + self.upper if self.upper > 0 else ts
        else:
            gone_at = ts - self.lower if self.lower < 0 else ts
        mine.append({"e": element, "gone_at": gone_at, "removed": False})
        for other in others:
            o = other["e"]
            if other["removed"] or o[0] != element[0]:
                continue
            lv, rv = (element, o) if is_left else (o, element)
            if lv[1] + self.lower <= rv[1] <= lv[1] + self.upper:
                self.out[((lv, rv), max(lv[1], rv[1]))] += 1

    def advance(self, index: int, watermark: int) -> None:
        self.input_watermarks[index] = watermark
        combined = min(self.input_watermarks)
        if combined > self.watermark:
            self.watermark = combined
            for entry in self.lefts + self.rights:
                if entry["gone_at"] <= combined:
                    entry["removed"] = True

    def buffered(self, left: bool) -> set[tuple[Any, int]]:
        return {
            (x["e"][0], x["e"][1])
            for x in (self.lefts if left else self.rights)
            if not x["removed"]
        }


@pytest.mark.parametrize("seed", range(40))
def test_operator_matches_reference_with_late_data_and_cleanup(seed: int) -> None:
    rng = random.Random(seed)
    lower = rng.randint(-6, 4)
    upper = lower + rng.randint(0, 8)
    lower_exclusive, upper_exclusive = rng.random() < 0.3, rng.random() < 0.3
    ref = Reference(lower, upper, lower_exclusive, upper_exclusive)
    d = make_driver(
        lower,
        upper,
        lower_bound_inclusive=not lower_exclusive,
        upper_bound_inclusive=not upper_exclusive,
    )
    input_watermarks = [0, 0]
    for step in range(120):
        action = rng.random()
        if action < 0.7:
            is_left = rng.random() < 0.5
            base = max(ref.watermark, 0)
            batch = [
                (rng.choice("ab"), base + rng.randint(-4, 10), f"{step}.{i}")
                for i in range(rng.randint(1, 3))
            ]
            for element in batch:
                ref.element(is_left, element)
            (d.left if is_left else d.right)(*batch)
        else:
            index = rng.randrange(2)
            input_watermarks[index] += rng.randint(1, 5)
            ref.advance(index, input_watermarks[index])
            if index == 0:
                d.op.process_watermark1(input_watermarks[index])
            else:
                d.op.process_watermark2(input_watermarks[index])
            assert d.buffered(True) == ref.buffered(True), step
            assert d.buffered(False) == ref.buffered(False), step
        assert Counter(d.records) == ref.out, step
    assert d.op.num_late_records_dropped == ref.late
    d.op.process_watermark1(MAX_WATERMARK)
    d.op.process_watermark2(MAX_WATERMARK)
    assert d.buffered(True) == set() and d.buffered(False) == set()
    assert d.op.timers.num_event_time_timers() == 0


# ---------------------------------------------------------------------- window join: reference
def tumbling(size: int) -> Callable[[int], list[tuple[int, int]]]:
    def windows(ts: int) -> list[tuple[int, int]]:
        start = ts - ts % size
        return [(start, start + size)]

    return windows


def sliding(size: int, slide: int) -> Callable[[int], list[tuple[int, int]]]:
    def windows(ts: int) -> list[tuple[int, int]]:
        first = (ts - size) // slide * slide + slide  # smallest multiple of slide > ts - size
        return [(s, s + size) for s in range(first, ts + 1, slide)]

    return windows


def window_groups(
    left: list[Element], right: list[Element], windows: Callable[[int], list[tuple[int, int]]]
) -> dict[tuple[str, tuple[int, int]], tuple[list[Element], list[Element]]]:
    groups: dict[tuple[str, tuple[int, int]], tuple[list[Element], list[Element]]] = {}
    for side, elements in ((0, left), (1, right)):
        for e in elements:
            for w in windows(e[1]):
                groups.setdefault((e[0], w), ([], []))[side].append(e)
    return groups


def session_groups(
    left: list[Element], right: list[Element], gap: int
) -> dict[tuple[str, tuple[int, int]], tuple[list[Element], list[Element]]]:
    """Sessions per key over both inputs together: windows [ts, ts + gap) merged when they meet."""
    groups: dict[tuple[str, tuple[int, int]], tuple[list[Element], list[Element]]] = {}
    tagged = [(e, 0) for e in left] + [(e, 1) for e in right]
    for key in {e[0] for e, _ in tagged}:
        items = sorted((x for x in tagged if x[0][0] == key), key=lambda x: x[0][1])
        sessions: list[tuple[int, int, list[tuple[Element, int]]]] = []
        for element, side in items:
            ts = element[1]
            if sessions and ts <= sessions[-1][1]:
                start, end, members = sessions[-1]
                sessions[-1] = (start, max(end, ts + gap), [*members, (element, side)])
            else:
                sessions.append((ts, ts + gap, [(element, side)]))
        for start, end, members in sessions:
            groups[(key, (start, end))] = (
                [e for e, s in members if s == 0],
                [e for e, s in members if s == 1],
            )
    return groups


def join_expected(
    groups: dict[tuple[str, tuple[int, int]], tuple[list[Element], list[Element]]],
) -> Counter[tuple[Any, Any]]:
    expected: Counter[tuple[Any, Any]] = Counter()
    for (_key, (_start, end)), (lefts, rights) in groups.items():
        for lv in lefts:
            for rv in rights:
                expected[((lv[2], rv[2]), end - 1)] += 1
    return expected


ASSIGNERS: dict[str, tuple[Callable[[], Any], Callable[[int], list[tuple[int, int]]]]] = {
    "tumbling": (lambda: TumblingEventTimeWindows.of(10), tumbling(10)),
    "sliding": (lambda: SlidingEventTimeWindows.of(10, 5), sliding(10, 5)),
    "sliding-uneven": (lambda: SlidingEventTimeWindows.of(7, 3), sliding(7, 3)),
}


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("kind", sorted(ASSIGNERS))
async def test_window_join_matches_brute_force(parallelism: int, kind: str) -> None:
    make_assigner, windows = ASSIGNERS[kind]
    rng = random.Random(f"{kind}-{parallelism}")
    for _ in range(3):
        left = random_side(rng, "L", rng.randint(0, 40))
        right = random_side(rng, "R", rng.randint(0, 40), keys=(*KEYS, "d"))
        env = fk.StreamExecutionEnvironment(parallelism=parallelism)
        sink = CollectSink()
        (
            env.from_source(scripted(rng, left))
            .join(env.from_source(scripted(rng, right)))
            .where(key_of)
            .equal_to(key_of)
            .window(make_assigner())
            .apply(lambda lv, rv: (lv[2], rv[2]))
            .sink_to(sink)
        )
        await run(env)
        assert results(sink) == join_expected(window_groups(left, right, windows))


@pytest.mark.parametrize("parallelism", [1, 2])
async def test_window_join_with_session_windows(parallelism: int) -> None:
    rng = random.Random(parallelism)
    for _ in range(3):
        left = random_side(rng, "L", rng.randint(0, 30), span=120)
        right = random_side(rng, "R", rng.randint(0, 30), span=120)
        env = fk.StreamExecutionEnvironment(parallelism=parallelism)
        sink = CollectSink()
        # A session that fired can no longer grow: an element at exactly its end starts a
        # new one. Watermarks 2 below the next element keep every session open until all
        # elements that touch it arrived, as the offline reference assumes.
        (
            env.from_source(scripted(rng, left, margin=2))
            .join(env.from_source(scripted(rng, right, margin=2)))
            .where(key_of)
            .equal_to(key_of)
            .window(EventTimeSessionWindows.with_gap(6))
            .apply(lambda lv, rv: (lv[2], rv[2]))
            .sink_to(sink)
        )
        await run(env)
        assert results(sink) == join_expected(session_groups(left, right, 6))


async def test_window_join_with_empty_sides() -> None:
    env = fk.StreamExecutionEnvironment(parallelism=2)
    left = TestStream().add_element(("a", 1, "l1"), 1).add_element(("b", 2, "l2"), 2)
    right = TestStream().add_element(("a", 15, "r1"), 15).add_element(("c", 3, "r2"), 3)
    empty = TestStream().advance_watermark_to_infinity()
    both, left_only = CollectSink(), CollectSink()
    joined = (
        env.from_source(left)
        .join(env.from_source(right))
        .where(key_of)
        .equal_to(key_of)
        .window(TumblingEventTimeWindows.of(10))
    )
    joined.apply(lambda lv, rv: (lv, rv)).sink_to(both)
    (
        env.from_source(TestStream().add_element(("a", 1, "x"), 1))
        .join(env.from_source(empty))
        .where(key_of)
        .equal_to(key_of)
        .window(TumblingEventTimeWindows.of(10))
        .apply(lambda lv, rv: (lv, rv))
        .sink_to(left_only)
    )
    await run(env)
    # "a" is in different windows on each side, "b" and "c" only on one side
    assert both.records == []
    assert left_only.records == []


class Concat(JoinFunction):
    def __init__(self) -> None:
        self.opened = 0

    def open(self, runtime_context: Any) -> None:
        self.opened += 1

    def join(self, first: Any, second: Any) -> Any:
        assert self.opened == 1
        return f"{first[2]}+{second[2]}"


class EvenPairs(FlatJoinFunction):
    def join(self, first: Any, second: Any) -> Iterator[Any]:
        if (first[1] + second[1]) % 2 == 0:
            yield first[2]
            yield second[2]


class Sizes(CoGroupFunction):
    def co_group(self, first: Iterable[Any], second: Iterable[Any]) -> Iterator[Any]:
        firsts, seconds = list(first), list(second)
        key = (firsts or seconds)[0][0]
        yield (key, tuple(sorted(e[2] for e in firsts)), tuple(sorted(e[2] for e in seconds)))


async def test_join_function_classes_and_co_group() -> None:
    rng = random.Random(3)
    left = random_side(rng, "L", 25)
    right = random_side(rng, "R", 25)
    groups = window_groups(left, right, tumbling(20))
    for parallelism in (1, 2):
        env = fk.StreamExecutionEnvironment(parallelism=parallelism)
        a = env.from_source(scripted(rng, left))
        b = env.from_source(scripted(rng, right))
        sinks = [CollectSink() for _ in range(4)]

        def windowed(joined: Any) -> Any:
            return joined.where(key_of).equal_to(key_of).window(TumblingEventTimeWindows.of(20))

        windowed(a.join(b)).apply(Concat()).sink_to(sinks[0])
        windowed(a.join(b)).apply(EvenPairs()).sink_to(sinks[1])
        windowed(CoGroupedStreams(a, b)).apply(Sizes()).sink_to(sinks[2])
        windowed(CoGroupedStreams(a, b)).apply(
            lambda first, second: [len(first) * len(second)]
        ).sink_to(sinks[3])
        await run(env)

        concat: Counter[tuple[Any, Any]] = Counter()
        even: Counter[tuple[Any, Any]] = Counter()
        sizes: Counter[tuple[Any, Any]] = Counter()
        products: Counter[tuple[Any, Any]] = Counter()
        for (key, (_start, end)), (lefts, rights) in groups.items():
            firsts = tuple(sorted(e[2] for e in lefts))
            seconds = tuple(sorted(e[2] for e in rights))
            sizes[((key, firsts, seconds), end - 1)] += 1
            products[(len(lefts) * len(rights), end - 1)] += 1
            for lv in lefts:
                for rv in rights:
                    concat[(f"{lv[2]}+{rv[2]}", end - 1)] += 1
                    if (lv[1] + rv[1]) % 2 == 0:
                        even[(lv[2], end - 1)] += 1
                        even[(rv[2], end - 1)] += 1
        assert results(sinks[0]) == concat
        assert results(sinks[1]) == even
        assert results(sinks[2]) == sizes
        assert results(sinks[3]) == products


async def test_window_join_from_collection_with_timestamps() -> None:
    env = fk.StreamExecutionEnvironment(parallelism=2)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda e, _: e[1]
    )
    orders = [("a", 1000, "o1"), ("b", 1500, "o2"), ("a", 2500, "o3")]
    payments = [("a", 1200, "p1"), ("a", 1900, "p2"), ("b", 2100, "p3"), ("a", 2600, "p4")]
    sink = CollectSink()
    (
        env.from_collection(orders)
        .assign_timestamps_and_watermarks(strategy)
        .join(env.from_collection(payments).assign_timestamps_and_watermarks(strategy))
        .where(0)
        .equal_to(0)
        .window(TumblingEventTimeWindows.of(1000))
        .apply(lambda o, p: (o[2], p[2]))
        .sink_to(sink)
    )
    await run(env)
    assert results(sink) == Counter(
        {(("o1", "p1"), 1999): 1, (("o1", "p2"), 1999): 1, (("o3", "p4"), 2999): 1}
    )


def split_job(
    script: TestStream,
    configure: Callable[[Any], Any],
    parallelism: int = 1,
) -> tuple[fk.StreamExecutionEnvironment, CollectSink]:
    """Both inputs of a join from one scripted source, split by the record's first field.

    One source keeps the order of the script between the two inputs, and
    ``advance_processing_time_to`` waits until everything before it was processed.
    """
    env = fk.StreamExecutionEnvironment(parallelism=parallelism)
    source = env.from_source(script)
    left = source.filter(lambda e: e[0] == "L").map(lambda e: e[1:])
    right = source.filter(lambda e: e[0] == "R").map(lambda e: e[1:])
    sink = CollectSink()
    configure(
        left.join(right).where(key_of).equal_to(key_of).window(TumblingEventTimeWindows.of(10))
    ).apply(lambda lv, rv: (lv[2], rv[2])).sink_to(sink)
    return env, sink


@pytest.mark.parametrize("purging", [False, True])
async def test_window_join_allowed_lateness_and_trigger(purging: bool) -> None:
    script = (
        TestStream()
        .add_element(("L", "k", 1, "l1"), 1)
        .add_element(("R", "k", 2, "r1"), 2)
        .advance_watermark_to(9)  # fires [0, 10)
        .advance_processing_time_to(1)
        .add_element(("R", "k", 3, "r2"), 3)  # late, within the allowed lateness: fires again
        .advance_processing_time_to(2)
        .advance_watermark_to(14)  # cleanup of [0, 10) at 9 + 5
        .advance_processing_time_to(3)
        .add_element(("L", "k", 4, "l2"), 4)  # too late: dropped
        .add_element(("L", "k", 12, "l3"), 12)
        .add_element(("R", "k", 15, "r3"), 15)
        .advance_watermark_to_infinity()
    )

    def configure(w: Any) -> Any:
        w = w.allowed_lateness(5)
        return w.trigger(PurgingTrigger.of(EventTimeTrigger.create())) if purging else w

    env, sink = split_job(script, configure)
    await run(env)
    expected = Counter({(("l1", "r1"), 9): 1, (("l3", "r3"), 19): 1})
    # the late firing has the whole window, or (purging) only what came since the last one
    expected += Counter({(("l1", "r2"), 9): 1} if not purging else {})
    if not purging:
        expected[(("l1", "r1"), 9)] += 1
    assert results(sink) == expected


async def test_window_join_with_evictors() -> None:
    rng = random.Random(11)
    left = random_side(rng, "L", 30)
    right = random_side(rng, "R", 30)
    env = fk.StreamExecutionEnvironment(parallelism=2)
    sink = CollectSink()
    (
        env.from_source(scripted(rng, left))
        .join(env.from_source(scripted(rng, right)))
        .where(key_of)
        .equal_to(key_of)
        .window(TumblingEventTimeWindows.of(10))
        .evictor(TimeEvictor.of(4))
        .apply(lambda lv, rv: (lv[2], rv[2]))
        .sink_to(sink)
    )
    await run(env)
    expected: Counter[tuple[Any, Any]] = Counter()
    for (_key, (_start, end)), (lefts, rights) in window_groups(left, right, tumbling(10)).items():
        newest = max(e[1] for e in lefts + rights)
        for lv in lefts:
            for rv in rights:
                if lv[1] > newest - 4 and rv[1] > newest - 4:
                    expected[((lv[2], rv[2]), end - 1)] += 1
    assert results(sink) == expected


def test_window_join_rejects_bad_arguments() -> None:
    env = fk.StreamExecutionEnvironment()
    a = env.from_source(TestStream())
    b = env.from_source(TestStream())
    with pytest.raises(TypeError):
        a.join(b).where(key_of).equal_to(key_of).window("tumbling")
    windowed = a.join(b).where(key_of).equal_to(key_of).window(TumblingEventTimeWindows.of(10))
    with pytest.raises(TypeError):
        windowed.trigger("never")
    with pytest.raises(TypeError):
        windowed.evictor(CountEvictor)
    with pytest.raises(InvalidConfigurationError):
        windowed.allowed_lateness(-1)
    with pytest.raises(TypeError):
        windowed.apply(42)
    with pytest.raises(TypeError):
        windowed.apply("a string has a join method but is no JoinFunction")
    with pytest.raises(TypeError):
        a.join(b).where(3.5)
    with pytest.raises(TypeError):
        a.join(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CoGroupedStreams(a, b).where(key_of).equal_to(key_of).window(
            TumblingEventTimeWindows.of(10)
        ).apply(42)
