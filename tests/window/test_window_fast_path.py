"""The window operator's fast path against its general path, step by step.

Time windows of the built-in event-time assigners with the default trigger and no
evictor take the fast path: window assignment by arithmetic, contents added a batch at a
time, timers kept per window. Every other configuration takes the general path, which
calls the assigner and the trigger for each element and queues one timer per key and
window. ``PlainEventTimeTrigger`` (EventTimeTrigger under another type) sends the same
job through the general path, so each scenario here runs on both and must give the same
output (as a multiset per watermark), the same side outputs and late counts, the same
number of timers whenever they are counted, and the same state, also across snapshots,
checkpoints (copy on write: the running operator keeps changing its state after the
snapshot) and restores from one path into the other.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flowkit.elements import MAX_WATERMARK, OutputTag, StreamRecord, Watermark
from flowkit.functions import AggregateFunction, ProcessWindowFunction
from flowkit.state.descriptors import ValueStateDescriptor
from flowkit.state.ttl import StateTtlConfig
from flowkit.testing.harness import HarnessSnapshot, WindowOperatorHarness
from flowkit.window import (
    EventTimeTrigger,
    SlidingEventTimeWindows,
    TimeWindow,
    TumblingEventTimeWindows,
)

LATE = OutputTag("late")
REFIRED = OutputTag("refired")
YIELDED = OutputTag("yielded")
CLEARED = OutputTag("cleared")
TAGS = (LATE, REFIRED, YIELDED, CLEARED)

Element = tuple[str, int]
Step = tuple[str, Any]  # ("batch", [(element, ts), ...]) or ("watermark", w)


class PlainEventTimeTrigger(EventTimeTrigger):
    """The default trigger under another type: the operator takes its general path."""


class MutableCount(AggregateFunction):
    """Count and sum in a list changed in place (a snapshot must not see later adds)."""

    def create_accumulator(self) -> list[int]:
        return [0, 0]

    def add(self, value: Element, acc: list[int]) -> list[int]:
        acc[0] += 1
        acc[1] += value[1]
        return acc

    def get_result(self, acc: list[int]) -> tuple[int, int]:
        return (acc[0], acc[1])

    def merge(self, a: list[int], b: list[int]) -> list[int]:
        return [a[0] + b[0], a[1] + b[1]]


def add_up(a: Element, b: Element) -> Element:
    return (a[0], a[1] + b[1])


class Describe(ProcessWindowFunction):
    """Emits what the context shows; counts firings per window (window state) and
    elements per key (global state); side outputs from ``output()``, from a yielded
    ``(tag, value)`` and from ``clear()``."""

    def seen(self) -> ValueStateDescriptor:
        return ValueStateDescriptor("seen", default=0)

    def process(self, key: Any, context: Any, elements: Any) -> Iterator[Any]:
        fired = context.window_state().get_state(ValueStateDescriptor("fired", default=0))
        seen = context.global_state().get_state(self.seen())
        values = list(elements)
        fired.update(fired.value() + 1)
        seen.update((seen.value() or 0) + len(values))
        window = context.window()
        assert context.get_current_key() == key
        yield (key, window.start, window.end, repr(values), fired.value(), seen.value())
        yield (key, "watermark", context.current_watermark())
        if fired.value() > 1:
            context.output(REFIRED, (key, window.start, fired.value()))
        yield (YIELDED, (key, window.end))

    def clear(self, context: Any) -> None:
        fired = context.window_state().get_state(ValueStateDescriptor("fired", default=0))
        window = context.window()
        context.output(CLEARED, (context.get_current_key(), window.start, fired.value()))
        fired.clear()


class DescribeWithTtl(Describe):
    """Describe with a time-to-live on its global state, cleaned up on every record: the
    backend then has more to do on a key change than setting the key."""

    def seen(self) -> ValueStateDescriptor:
        descriptor = ValueStateDescriptor("seen", default=0)
        config = StateTtlConfig.new_builder(10**9).cleanup_incrementally(2, True).build()
        descriptor.enable_time_to_live(config)
        return descriptor


class Apply:
    """A WindowFunction: ``apply(key, window, inputs)``."""

    def apply(self, key: Any, window: TimeWindow, inputs: Any) -> list[Any]:
        return [(key, window.start, sorted(inputs))]


FUNCTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "aggregate": lambda: {"aggregate": MutableCount()},
    "aggregate+window-function": lambda: {
        "aggregate": MutableCount(),
        "window_function": Describe(),
    },
    "reduce": lambda: {"reduce": add_up},
    "reduce+window-function": lambda: {"reduce": add_up, "window_function": Describe()},
    "aggregate+window-function-ttl": lambda: {
        "aggregate": MutableCount(),
        "window_function": DescribeWithTtl(),
    },
    "process": lambda: {"process": Describe()},
    "apply": lambda: {"process": Apply()},
}

ASSIGNERS = {
    "tumbling": lambda: TumblingEventTimeWindows.of(100),
    "tumbling-offset": lambda: TumblingEventTimeWindows.of(100, 30),
    "sliding": lambda: SlidingEventTimeWindows.of(100, 40),
}


def make_harness(
    assigner: str,
    function: str,
    lateness: int,
    general: bool,
    restore_from: HarnessSnapshot | None = None,
) -> WindowOperatorHarness:
    h = WindowOperatorHarness(
        ASSIGNERS[assigner](),
        key_selector=lambda e: e[0],
        trigger=PlainEventTimeTrigger() if general else None,
        allowed_lateness=lateness,
        late_tag=LATE if lateness else None,
        restore_from=restore_from,
        **FUNCTIONS[function](),
    )
    assert h.operator._fast is not general  # type: ignore[attr-defined]
    return h


def checkpoint_restore(h: WindowOperatorHarness, fresh: WindowOperatorHarness) -> None:
    """Restore ``fresh`` from a checkpoint of ``h`` the way a job does."""
    restore(fresh, h.operator.snapshot_state(1))


def restore(fresh: WindowOperatorHarness, state: Any) -> None:
    """Restore ``fresh`` from a checkpoint, pickled now (a job serializes it after the
    barrier, while records flow); the watermark starts over, as in a job."""
    fresh.operator.initialize_state([pickle.loads(pickle.dumps(state))])
    fresh.open()
    fresh.operator._restore_keyed_after_open()


def script(seed: int, steps: int = 300) -> list[Step]:
    """Elements of 12 keys in batches of 1-12, out of order and sometimes late, and
    rising watermarks."""
    rng = random.Random(seed)
    out: list[Step] = []
    watermark = -1
    for _ in range(steps):
        if rng.random() < 0.15:
            watermark += rng.randint(1, 70)
            out.append(("watermark", watermark))
        else:
            batch = [
                (
                    (f"k{rng.randrange(12)}", rng.randrange(10)),
                    max(0, watermark + rng.randint(-90, 150)),
                )
                for _ in range(rng.randint(1, 12))
            ]
            out.append(("batch", batch))
    return out


class Run:
    """Drives a harness through steps, collecting everything observable."""

    def __init__(self, h: WindowOperatorHarness) -> None:
        self.h = h
        self.output: list[StreamRecord | Watermark] = []
        self.sides: dict[str, list[Any]] = {tag.tag_id: [] for tag in TAGS}
        self.timer_counts: list[int] = []
        self.late_dropped = 0

    def step(self, step: Step) -> None:
        h = self.h
        h._ensure_open()
        kind, arg = step
        if kind == "watermark":
            h.process_watermark(arg)
        else:
            h.operator.process_batch([e for e, _ in arg], [ts for _, ts in arg])
        self.timer_counts.append(h.num_event_time_timers())

    def harvest(self) -> None:
        """Move the harness's output here (before it is replaced)."""
        h = self.h
        self.output += h.get_output()
        for tag in TAGS:
            self.sides[tag.tag_id] += [(r.value, r.timestamp) for r in h.get_side_output(tag)]
        self.late_dropped += h.num_late_records_dropped
        h.clear_output()

    def finish(self) -> Run:
        self.step(("watermark", MAX_WATERMARK))
        self.harvest()
        self.state_entries = self.h.num_keyed_state_entries()
        self.final_timers = self.h.num_event_time_timers()
        return self


def firings(output: list[StreamRecord | Watermark]) -> list[Any]:
    """The output cut at each watermark; within a cut, records as a sorted multiset."""
    result: list[Any] = []
    current: list[str] = []
    for item in output:
        if isinstance(item, Watermark):
            result.append((sorted(current), item.timestamp))
            current = []
        else:
            current.append(repr((item.value, item.timestamp)))
    result.append((sorted(current), None))
    return result


def observed(run: Run) -> dict[str, Any]:
    return {
        "firings": firings(run.output),
        "sides": {tag: sorted(map(repr, values)) for tag, values in run.sides.items()},
        "late_dropped": run.late_dropped,
        "timer_counts": run.timer_counts,
        "state_entries": run.state_entries,
        "final_timers": run.final_timers,
    }


def play(
    steps: list[Step],
    make: Callable[..., WindowOperatorHarness],
    general: bool,
    cuts: tuple[int, ...] = (),
    mode: str = "snapshot",
    restore_general: bool | None = None,
) -> Run:
    """Run ``steps``; at each cut continue in a fresh operator restored from a harness
    snapshot or a checkpoint of the current one (of the other path if
    ``restore_general`` says so)."""
    run = Run(make(general))
    target = general if restore_general is None else restore_general
    for i, step in enumerate(steps):
        if i in cuts:
            run.harvest()
            if mode == "snapshot":
                run.h = make(target, run.h.snapshot())
            else:
                fresh = make(target)
                checkpoint_restore(run.h, fresh)
                run.h = fresh
        run.step(step)
    return run.finish()


CASES = [
    pytest.param(assigner, function, lateness, id=f"{assigner}-{function}-lateness{lateness}")
    for assigner in ASSIGNERS
    for function in FUNCTIONS
    for lateness in (0, 60)
]


@pytest.mark.parametrize(("assigner", "function", "lateness"), CASES)
@pytest.mark.parametrize("seed", range(2))
def test_fast_path_equals_general_path(
    assigner: str, function: str, lateness: int, seed: int
) -> None:
    steps = script(seed)

    def make(general: bool, snapshot: HarnessSnapshot | None = None) -> WindowOperatorHarness:
        return make_harness(assigner, function, lateness, general, snapshot)

    fast = observed(play(steps, make, general=False))
    general = observed(play(steps, make, general=True))
    assert fast == general
    assert sum(len(cut) for cut, _ in fast["firings"]) > 50


@pytest.mark.parametrize(("assigner", "function", "lateness"), CASES)
@pytest.mark.parametrize("mode", ["snapshot", "checkpoint"])
def test_fast_path_equals_general_path_across_restores(
    assigner: str, function: str, lateness: int, mode: str
) -> None:
    steps = script(7)
    cuts = (40, 120, 121, 200)

    def make(general: bool, snapshot: HarnessSnapshot | None = None) -> WindowOperatorHarness:
        return make_harness(assigner, function, lateness, general, snapshot)

    general = observed(play(steps, make, general=True, cuts=cuts, mode=mode))
    fast = observed(play(steps, make, general=False, cuts=cuts, mode=mode))
    assert fast == general
    # Snapshots of one path restore into the other, with the same outcome.
    into_fast = observed(play(steps, make, True, cuts, mode, restore_general=False))
    into_general = observed(play(steps, make, False, cuts, mode, restore_general=True))
    assert into_fast["firings"] == general["firings"]
    assert into_fast["sides"] == general["sides"]
    assert into_general["firings"] == general["firings"]
    assert into_general["sides"] == general["sides"]


@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_checkpoint_keeps_the_state_of_its_moment(function: str) -> None:
    """A checkpoint taken while the operator keeps adding to the same windows (in place,
    for MutableCount and lists) restores the state it had when it was taken."""
    steps = script(3)
    cut = 150

    def make(general: bool, snapshot: HarnessSnapshot | None = None) -> WindowOperatorHarness:
        return make_harness("sliding", function, 60, general, snapshot)

    reference = Run(make(False))
    for step in steps[:cut]:
        reference.step(step)
    state = reference.h.operator.snapshot_state(1)
    for step in steps[cut:]:
        reference.step(step)
    fresh = make(False)
    restore(fresh, state)  # serialized only now, after the operator went on
    # Taking the checkpoint changed nothing for the running operator.
    assert observed(reference.finish()) == observed(play(steps, make, general=False))
    restored = Run(fresh)
    for step in steps[cut:]:
        restored.step(step)
    # The general path restored from its own checkpoint at the same step: a restored
    # operator starts without a watermark, so both see the same later steps alike.
    general = Run(make(True))
    for step in steps[:cut]:
        general.step(step)
    general_fresh = make(True)
    checkpoint_restore(general.h, general_fresh)
    general_restored = Run(general_fresh)
    for step in steps[cut:]:
        general_restored.step(step)
    assert observed(restored.finish()) == observed(general_restored.finish())


def test_a_window_with_many_keys_fires_each_key_once() -> None:
    """Firing a window evaluates each key with contents once, whatever the number of keys,
    and a window fires only when the watermark reaches its max timestamp."""
    h = make_harness("tumbling", "aggregate+window-function", 0, general=False)
    h.open()
    keys = [f"k{i}" for i in range(5000)]
    h.operator.process_batch([(k, 1) for k in keys], [i % 100 for i in range(5000)])
    assert h.num_event_time_timers() == 5000
    h.process_watermark(98)
    assert h.extract_output_values() == []
    h.process_watermark(99)
    rows = [v for v in h.extract_output_values() if v[1] != "watermark"]
    assert sorted(v[0] for v in rows) == sorted(keys)
    assert {v[4] for v in rows} == {1}  # fired once each
    assert h.num_event_time_timers() == 0
    assert len(h.get_side_output(CLEARED)) == 5000


@pytest.mark.parametrize("lateness", [0, 60])
@pytest.mark.parametrize("function", ["aggregate+window-function", "process"])
def test_restored_timers_that_do_not_match_the_contents_fire_as_restored(
    function: str, lateness: int
) -> None:
    """A snapshot whose timers are not one per key with contents (a key without timers,
    a window without timers, a timer of a key without contents) restores into the fast
    path as it does into the general path: only the timers that are there fire."""
    steps = script(11)
    cut = 100

    def make(general: bool, snapshot: HarnessSnapshot | None = None) -> WindowOperatorHarness:
        return make_harness("sliding", function, lateness, general, snapshot)

    before = Run(make(True))
    for step in steps[:cut]:
        before.step(step)
    snapshot = before.h.snapshot()
    assert snapshot.timers is not None
    event = snapshot.timers["event"]
    windows = sorted({window for _, _, window in event})
    assert len(windows) >= 3
    without = windows[1]
    kept = [(ts, key, w) for ts, key, w in event if key != "k1" and w != without]
    first = windows[0]
    kept.append((first.max_timestamp() + lateness, "nobody", first))
    assert len(kept) < len(event)
    snapshot.timers["event"] = kept
    results = []
    for general in (True, False):
        run = Run(make(general, snapshot))
        for step in steps[cut:]:
            run.step(step)
        results.append(observed(run.finish()))
    assert results[0] == results[1]
    assert any(repr("nobody") in value for value in results[0]["sides"][CLEARED.tag_id])


@pytest.mark.parametrize("assigner", list(ASSIGNERS))
@pytest.mark.parametrize("lateness", [0, 60])
def test_lateness_boundaries(assigner: str, lateness: int) -> None:
    """At watermark ``w`` an element is late once ``ts + lateness <= w`` and its windows
    are, and a window whose end has passed but not its cleanup fires again at once."""
    offset = 30 if assigner == "tumbling-offset" else 0
    end = 100 + offset  # the end of a window in every assigner here
    watermark = end - 1 + lateness
    steps: list[Step] = [
        ("batch", [(("a", 1), end - 1), (("b", 1), end - 60)]),
        ("watermark", end - 1),  # the window ending at ``end`` fires
        ("batch", [(("a", 2), end - 1 - lateness // 2)]),  # late but allowed (lateness 60)
        ("watermark", watermark),
        ("batch", [(("c", 1), end - 1), (("c", 2), end), (("d", 5), watermark - lateness)]),
        ("watermark", watermark + 1),
    ]

    def make(general: bool, snapshot: HarnessSnapshot | None = None) -> WindowOperatorHarness:
        return make_harness(assigner, "aggregate+window-function", lateness, general, snapshot)

    fast = observed(play(steps, make, general=False))
    general = observed(play(steps, make, general=True))
    assert fast == general
    late = fast["sides"][LATE.tag_id]
    dropped = fast["late_dropped"]
    # ("c", 1) at ``end - 1`` and ("d", 5) are late (dropped or side output) when every
    # window of theirs is, and ("a", 2) without lateness; sliding windows still hold
    # them in later windows.
    if assigner == "sliding":
        assert dropped == 0 and late == []
    else:
        assert dropped + len(late) == (2 if lateness else 3)
