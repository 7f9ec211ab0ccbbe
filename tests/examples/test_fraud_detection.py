"""Tests of examples/fraud_detection.py, written with TestStream scripts and CollectSink.

Each test runs the example's own ``detect_fraud`` job over an exact script of
transactions and watermarks, so the outcome of every edge case is fixed: the pattern
inside and outside the minute, the thresholds, the reset by a transaction in between,
interleaved accounts, and the timer that clears the state. Harness tests look at the
timers and state entries directly. The guide docs/testing-event-time.md is checked here
too: its worked example is a test of this file, and its other snippets run.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flowkit import MAX_WATERMARK, CollectSink, StreamExecutionEnvironment
from flowkit.testing import KeyedProcessFunctionHarness, StreamRecord, TestStream, Watermark

ROOT = Path(__file__).resolve().parents[2]


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name}_under_test", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fraud = load_example("fraud_detection")


def tx(account: int, ts: int, amount: float) -> dict[str, Any]:
    """A transaction of ``account`` at ``ts`` ms."""
    return {"account": account, "ts": ts, "amount": amount}


def alert(account: int, small_at: int, large_at: int, amount: float) -> dict[str, Any]:
    return {"account": account, "small_at": small_at, "large_at": large_at, "amount": amount}


def script(*steps: dict[str, Any] | int) -> TestStream:
    """A TestStream: a dict is a transaction (stamped with its ``ts``), an int a watermark."""
    stream = TestStream()
    for step in steps:
        if isinstance(step, int):
            stream.advance_watermark_to(step)
        else:
            stream.add_element(step, step["ts"])
    return stream.advance_watermark_to_infinity()


def run_detector(stream: TestStream, detector: Any = None, parallelism: int = 1) -> CollectSink:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    sink = CollectSink()
    fraud.detect_fraud(env.from_source(stream), detector).sink_to(sink)
    env.execute("fraud detection test")
    return sink


class TracedDetector(fraud.FraudDetector):
    """The example's detector, also reporting each timer that fires as ``("timer", key, ts)``."""

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        super().on_timer(timestamp, ctx)
        yield ("timer", ctx.get_current_key(), timestamp)


# ---------------------------------------------------------------------- the example itself
@pytest.mark.parametrize("parallelism", [1, 2, 4])
def test_the_example_raises_the_same_alerts_at_any_parallelism(parallelism: int) -> None:
    at = fraud.transaction
    assert fraud.run(parallelism=parallelism) == [
        alert(1, at(1, "10:00:05", 0)["ts"], at(1, "10:00:40", 0)["ts"], 725.00),
        alert(5, at(5, "10:02:00", 0)["ts"], at(5, "10:03:00", 0)["ts"], 500.01),
        alert(1, at(1, "10:03:10", 0)["ts"], at(1, "10:03:50", 0)["ts"], 1000.00),
    ]


# ---------------------------------------------------------------------- the worked example
def test_an_alert_within_the_minute_and_none_once_the_timer_fired() -> None:
    stream = (
        TestStream()
        .add_element({"account": 7, "ts": 1_000, "amount": 0.50}, 1_000)
        .add_element({"account": 7, "ts": 31_000, "amount": 900.00}, 31_000)
        .add_element({"account": 8, "ts": 40_000, "amount": 0.10}, 40_000)
        .advance_watermark_to(100_000)  # account 8's minute is over: its timer fires
        .add_element({"account": 8, "ts": 90_000, "amount": 700.00}, 90_000)
        .advance_watermark_to_infinity()
    )
    env = StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    fraud.detect_fraud(env.from_source(stream)).sink_to(sink)
    env.execute()

    assert sink.elements == [
        StreamRecord(
            {"account": 7, "small_at": 1_000, "large_at": 31_000, "amount": 900.0}, 31_000
        ),
        Watermark(100_000),
        Watermark(MAX_WATERMARK),
    ]


# ---------------------------------------------------------------------- the minute
@pytest.mark.parametrize(
    ("large_at", "alerts"),
    [
        (59_999, 1),
        (60_000, 1),  # exactly one minute later still counts
        (60_001, 0),  # one millisecond too late, even though no watermark has come yet
    ],
)
def test_the_minute_is_measured_between_the_timestamps(large_at: int, alerts: int) -> None:
    sink = run_detector(script(tx(1, 0, 0.10), tx(1, large_at, 501.00)))
    assert sink.values == [alert(1, 0, large_at, 501.00)] * alerts


@pytest.mark.parametrize(("watermark", "alerts"), [(59_999, 1), (60_000, 0)])
def test_the_timer_forgets_the_small_transaction_once_the_minute_has_passed(
    watermark: int, alerts: int
) -> None:
    # The large transaction is behind the watermark (late) and inside the minute: only the
    # timer, which fires when the watermark reaches 60_000, makes the difference.
    sink = run_detector(script(tx(1, 0, 0.10), watermark, tx(1, 30_000, 750.00)))
    assert sink.values == [alert(1, 0, 30_000, 750.00)] * alerts


# ---------------------------------------------------------------------- the pattern
@pytest.mark.parametrize(
    ("first", "second", "alerts"),
    [
        (0.99, 500.01, 1),
        (1.00, 900.00, 0),  # 1.00 is not small
        (0.50, 500.00, 0),  # 500.00 is not large
        (50.00, 900.00, 0),  # large without a small one before
    ],
)
def test_thresholds(first: float, second: float, alerts: int) -> None:
    sink = run_detector(script(tx(1, 0, first), tx(1, 1_000, second)))
    assert sink.values == [alert(1, 0, 1_000, second)] * alerts


def test_large_transactions_alone_raise_nothing() -> None:
    sink = run_detector(script(tx(1, 0, 900.00), tx(1, 1_000, 5_000.00), tx(2, 2_000, 600.00)))
    assert sink.elements == [Watermark(MAX_WATERMARK)]


def test_a_transaction_in_between_resets_the_pattern() -> None:
    sink = run_detector(
        script(
            tx(1, 0, 0.10),
            tx(1, 1_000, 20.00),  # resets
            tx(1, 2_000, 800.00),  # no alert
            tx(1, 3_000, 0.20),
            tx(1, 4_000, 0.30),  # a small one after a small one re-arms the pattern
            tx(1, 5_000, 800.00),  # alert
            tx(1, 6_000, 800.00),  # the pattern was consumed: no second alert
        )
    )
    assert sink.records == [StreamRecord(alert(1, 4_000, 5_000, 800.00), 5_000)]


@pytest.mark.parametrize("parallelism", [1, 2, 3])
def test_interleaved_accounts_do_not_share_state(parallelism: int) -> None:
    stream = script(
        tx(1, 0, 0.10),
        tx(2, 1_000, 0.20),
        tx(3, 2_000, 700.00),  # no small one for account 3
        tx(2, 3_000, 40.00),  # resets account 2 only
        tx(1, 4_000, 600.00),  # alert for account 1
        tx(3, 5_000, 0.30),
        tx(2, 6_000, 650.00),  # account 2 was reset: no alert
        10_000,
        tx(4, 11_000, 0.40),
        tx(3, 12_000, 1_200.00),  # alert for account 3
        tx(4, 80_000, 900.00),  # 69 s after account 4's small one: no alert
    )
    sink = run_detector(stream, parallelism=parallelism)
    assert sorted(sink.records, key=lambda r: r.value["large_at"]) == [
        StreamRecord(alert(1, 0, 4_000, 600.00), 4_000),
        StreamRecord(alert(3, 5_000, 12_000, 1_200.00), 12_000),
    ]


# ---------------------------------------------------------------------- timers
def test_one_timer_per_pending_small_transaction_and_deleted_timers_never_fire() -> None:
    stream = script(
        tx(1, 0, 0.10),  # timer at 60_000 ...
        tx(1, 10_000, 600.00),  # ... alert, and the timer is deleted
        tx(2, 20_000, 0.20),  # timer at 80_000: never consumed
        tx(1, 50_000, 0.30),  # timer at 110_000
        100_000,  # fires account 2's timer only
        tx(1, 105_000, 700.00),  # account 1's flag is still set: alert; timer deleted
        tx(2, 70_000, 900.00),  # late, inside account 2's minute, but its flag was cleared
    )
    sink = run_detector(stream, TracedDetector())
    assert sink.elements == [
        StreamRecord(alert(1, 0, 10_000, 600.00), 10_000),
        StreamRecord(("timer", 2, 80_000), 80_000),  # output of an event-time timer
        Watermark(100_000),
        StreamRecord(alert(1, 50_000, 105_000, 700.00), 105_000),
        Watermark(MAX_WATERMARK),  # deleted timers (60_000, 110_000) did not fire
    ]


def test_a_timer_clears_only_its_own_account() -> None:
    stream = script(
        tx(1, 0, 0.10),
        tx(2, 30_000, 0.20),
        60_000,  # account 1's minute is over; account 2's is not
        tx(1, 61_000, 600.00),
        tx(2, 61_000, 600.00),
    )
    sink = run_detector(stream, TracedDetector(), parallelism=2)
    assert sorted(sink.values, key=str) == [
        ("timer", 1, 60_000),
        alert(2, 30_000, 61_000, 600.00),
    ]


# ---------------------------------------------------------------------- the guide
GUIDE = (ROOT / "docs" / "testing-event-time.md").read_text(encoding="utf-8")
WORKED_EXAMPLE = GUIDE.split("## Worked example", 1)[1].split("\n## ", 1)[0]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.DOTALL)


def test_the_guides_worked_example_is_a_test_of_this_file() -> None:
    blocks = python_blocks(WORKED_EXAMPLE)
    assert len(blocks) == 1
    assert blocks[0].startswith(
        "def test_an_alert_within_the_minute_and_none_once_the_timer_fired() -> None:\n"
    )
    assert blocks[0] in Path(__file__).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "snippet",
    python_blocks(GUIDE.replace(WORKED_EXAMPLE, "")),
    ids=lambda snippet: snippet.split("\n\n\n")[-1].split("(")[0][:30],
)
def test_the_guides_other_snippets_run(snippet: str, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(snippet, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------- with the harness
def harness(restore_from: Any = None) -> KeyedProcessFunctionHarness:
    return KeyedProcessFunctionHarness(
        fraud.FraudDetector(), key_selector=lambda t: t["account"], restore_from=restore_from
    )


def test_harness_the_timer_leaves_no_state_behind() -> None:
    detector = harness()
    detector.open()
    detector.process_element(tx(1, 0, 0.10), 0)
    detector.process_element(tx(2, 5_000, 0.20), 5_000)
    assert detector.num_event_time_timers() == 2
    assert detector.num_keyed_state_entries() == 4  # flag and timer of two accounts

    detector.process_watermark(59_999)
    assert detector.num_event_time_timers() == 2
    detector.process_watermark(60_000)  # account 1's minute is over
    assert detector.num_event_time_timers() == 1
    assert detector.num_keyed_state_entries() == 2

    detector.process_element(tx(2, 6_000, 800.00), 6_000)  # alert; deletes account 2's timer
    assert detector.num_event_time_timers() == 0
    assert detector.num_keyed_state_entries() == 0
    assert detector.get_output() == [
        Watermark(59_999),
        Watermark(60_000),
        StreamRecord(alert(2, 5_000, 6_000, 800.00), 6_000),
    ]


def test_harness_a_restored_detector_remembers_the_small_transaction() -> None:
    before = harness()
    before.open()
    before.process_element(tx(1, 0, 0.10), 0)
    snapshot = before.snapshot()

    after = harness(restore_from=snapshot)
    after.open()
    assert after.num_event_time_timers() == 1
    after.process_element(tx(1, 30_000, 900.00), 30_000)
    assert after.extract_output_values() == [alert(1, 0, 30_000, 900.00)]

    expired = harness(restore_from=snapshot)
    expired.open()
    expired.process_watermark(60_000)  # the restored timer fires
    expired.process_element(tx(1, 30_000, 900.00), 30_000)
    assert expired.extract_output_values() == []
    assert expired.num_keyed_state_entries() == 0
