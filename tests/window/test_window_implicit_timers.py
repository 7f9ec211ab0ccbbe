"""The window operator's fast path (tumbling/sliding event-time windows, default trigger,
no evictor) keeps its end-of-window timers per window instead of one per key and fires a
window from its state. Timer counts, snapshots and restores must see those
timers as real ones, and the output must equal the general path's, firing by firing.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from random_input import elements_and_watermarks

from flowkit.elements import MAX_WATERMARK, StreamRecord, Watermark
from flowkit.testing.harness import HarnessSnapshot, WindowOperatorHarness
from flowkit.window import (
    EventTimeTrigger,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)


class Count:
    """Counts a key's elements; the result names the key."""

    def create_accumulator(self) -> tuple[str, int] | None:
        return None

    def add(self, value: tuple[str, int], acc: tuple[str, int] | None) -> tuple[str, int]:
        return (value[0], 1) if acc is None else (acc[0], acc[1] + 1)

    def get_result(self, acc: tuple[str, int]) -> tuple[str, int]:
        return acc

    def merge(self, a: tuple[str, int], b: tuple[str, int]) -> tuple[str, int]:
        return (a[0], a[1] + b[1])


class PlainEventTimeTrigger(EventTimeTrigger):
    """The same trigger under another type: the operator takes its general path."""


def harness(
    assigner: Any, general: bool = False, restore_from: HarnessSnapshot | None = None
) -> WindowOperatorHarness:
    h = WindowOperatorHarness(
        assigner,
        key_selector=lambda e: e[0],
        aggregate=Count(),
        trigger=PlainEventTimeTrigger() if general else None,
        restore_from=restore_from,
    )
    assert h.operator._fast is not general  # type: ignore[attr-defined]
    return h


def firings(output: list[StreamRecord | Watermark]) -> list[Any]:
    """The output cut at each watermark, each firing's records sorted (order within a
    firing is not specified across keys)."""
    result: list[Any] = []
    current: list[tuple[Any, Any]] = []
    for item in output:
        if isinstance(item, Watermark):
            result.append((sorted(current), item.timestamp))
            current = []
        else:
            current.append((item.value, item.timestamp))
    result.append((sorted(current), None))
    return result


def test_implicit_timers_count_as_one_per_key_and_window() -> None:
    h = harness(TumblingEventTimeWindows.of(1000))
    for key, ts in [("a", 10), ("b", 20), ("a", 30), ("a", 1500)]:
        h.process_element((key, 1), ts)
    assert h.num_event_time_timers() == 3  # (a, [0,1000)), (b, [0,1000)), (a, [1000,2000))
    h.process_element(("c", 1), 40)  # after the count made them real: still counted
    h.process_element(("a", 1), 50)
    assert h.num_event_time_timers() == 4

    h.process_watermark(999)
    assert firings(h.get_output()) == [
        ([(("a", 3), 999), (("b", 1), 999), (("c", 1), 999)], 999),
        ([], None),
    ]
    assert h.num_event_time_timers() == 1
    h.clear_output()
    h.process_watermark(MAX_WATERMARK)
    assert h.extract_output_values() == [("a", 1)]
    assert h.num_event_time_timers() == 0
    assert h.num_keyed_state_entries() == 0


@pytest.mark.parametrize(
    "assigner",
    [TumblingEventTimeWindows.of(100), SlidingEventTimeWindows.of(100, 40)],
    ids=["tumbling", "sliding"],
)
@pytest.mark.parametrize("seed", range(4))
def test_output_equals_the_general_path_across_snapshots(assigner: Any, seed: int) -> None:
    rng = random.Random(seed)
    # out of order, sometimes late (dropped alike on both paths)
    steps = elements_and_watermarks(
        rng, 400, keys=12, watermark_chance=0.08, max_advance=60, behind=30, ahead=150
    )
    cuts = sorted(rng.sample(range(1, len(steps)), 3))

    def run(general: bool) -> tuple[list[Any], list[int]]:
        h = harness(assigner, general)
        output: list[Any] = []
        timer_counts: list[int] = []
        for i, step in enumerate(steps):
            if i in cuts:  # continue in a fresh harness from a snapshot
                snapshot = h.snapshot()
                output += h.get_output()
                h = harness(assigner, general, restore_from=snapshot)
            if isinstance(step, int):
                h.process_watermark(step)
            else:
                h.process_element((step[0], 1), step[1])
            if i % 50 == 25:  # timers read mid-window (made real), then more elements
                timer_counts.append(h.num_event_time_timers())
        h.process_watermark(MAX_WATERMARK)
        output += h.get_output()
        assert h.num_event_time_timers() == 0
        assert h.num_keyed_state_entries() == 0
        return output, timer_counts

    fast, fast_counts = run(general=False)
    general, general_counts = run(general=True)
    assert firings(fast) == firings(general)
    assert fast_counts == general_counts and max(fast_counts) > 0
    assert sum(1 for item in fast if isinstance(item, StreamRecord)) > 50
