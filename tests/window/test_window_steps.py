"""A large window fires in parts, letting the event loop run between them.

* a window of more than ``FIRE_STEP_KEYS`` keys fires that many keys at a time; in a
  subtask, other tasks of the event loop run between the parts, and the subtask takes no
  input until the last part has fired;
* the results, their order and the watermark after them are those of firing at once
  (in a harness, which has no subtask, it all happens at once);
* input handed to the operator before the last part (which a subtask never does) first
  completes the firing;
* with allowed lateness the contents stay for late firings.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import flowkit as fk
from flowkit.elements import StreamRecord, Watermark
from flowkit.operators import window as window_module
from flowkit.runtime.mailbox import Mailbox
from flowkit.runtime.network.channel import Notifier
from flowkit.testing.harness import WindowOperatorHarness

TIMEOUT = 60


def _harness(keys: int, allowed_lateness: int = 0) -> WindowOperatorHarness:
    h = WindowOperatorHarness(
        fk.TumblingEventTimeWindows.of(100),
        lambda x: x % keys,
        reduce=lambda a, b: a + b,
        allowed_lateness=allowed_lateness,
    )
    h.open()
    h.process_elements(list(range(3 * keys)), timestamp=10)
    return h


def _fired(monkeypatch: pytest.MonkeyPatch, step: int, lateness: int = 0) -> list[Any]:
    monkeypatch.setattr(window_module, "FIRE_STEP_KEYS", step)
    h = _harness(50, lateness)
    h.process_watermark(200)
    return h.get_output()


def test_firing_in_parts_gives_the_results_and_order_of_firing_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    at_once = _fired(monkeypatch, 10_000)
    in_parts = _fired(monkeypatch, 7)
    assert in_parts == at_once
    assert [type(e) for e in in_parts] == [StreamRecord] * 50 + [Watermark]
    assert sorted(r.value for r in in_parts[:-1]) == sorted(3 * k + 150 for k in range(50))


def test_allowed_lateness_keeps_the_contents_for_late_firings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(window_module, "FIRE_STEP_KEYS", 7)
    h = _harness(50, allowed_lateness=500)
    h.process_watermark(200)
    h.clear_output()
    h.process_element(0, timestamp=20)  # late, within the lateness: fires key 0 again
    assert h.extract_output_values() == [0 + 50 + 100 + 0]


def test_input_before_the_last_part_completes_the_firing_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(window_module, "FIRE_STEP_KEYS", 7)
    h = _harness(50)
    box = Mailbox(Notifier())
    h.operator.ctx.run_in_steps = box.run_in_steps  # as in a subtask
    h.process_watermark(200)
    assert len(h.get_output()) == 7 and len(box.steps) == 1  # one part, the rest waits
    h.process_element(3, timestamp=250)  # (a subtask would first run the steps)
    output = h.get_output()
    assert [type(e) for e in output] == [StreamRecord] * 50 + [Watermark]
    assert not list(box.steps[0])  # nothing left to run
    h.process_watermark(400)
    assert h.extract_output_values()[-1] == 3


class Probe:
    """Samples how many results a sink holds, at every turn of the event loop."""

    def __init__(self, sink: fk.CollectSink) -> None:
        self.sink = sink
        self.seen: set[int] = set()

    async def run(self) -> None:
        while True:
            self.seen.add(len(self.sink.values))
            await asyncio.sleep(0)


class WatermarkAtResult(fk.ProcessFunction):
    """Each result with the watermark the next operator had when it arrived."""

    def process_element(self, value: Any, ctx: Any) -> Any:
        yield (value, ctx.timestamp(), ctx.timer_service().current_watermark())


async def test_a_large_window_lets_the_loop_run_between_its_parts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = 3_000
    monkeypatch.setattr(window_module, "FIRE_STEP_KEYS", 100)
    env = fk.StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=0)
    strategy = fk.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda i, _ts: 0 if i < 2 * keys else 500
    )
    sink = fk.CollectSink()
    (
        env.from_collection(list(range(2 * keys + 1)))
        .assign_timestamps_and_watermarks(strategy)
        .key_by(lambda i: i % keys)
        .window(fk.TumblingEventTimeWindows.of(100))
        .reduce(lambda a, b: a + b)
        .process(WatermarkAtResult())
        .sink_to(sink)
    )
    probe = Probe(sink)
    ticking = asyncio.create_task(probe.run())
    try:
        client = await env.execute_async("large window")
        await asyncio.wait_for(client.wait(), TIMEOUT)
    finally:
        ticking.cancel()
    results = [v for v in sink.values if v[1] == 99]
    assert sorted(v[0] for v in results) == sorted(k + (k + keys) for k in range(keys))
    # Downstream, every result of the window came before the watermark that closed it.
    assert all(watermark < 99 for _v, _ts, watermark in results)
    # The loop ran while the window was half fired.
    assert any(0 < seen < keys for seen in probe.seen), sorted(probe.seen)
