"""Tests of examples/sessionization.py, written with TestStream scripts and CollectSink.

The example's ``sessions`` runs over exact scripts of clicks and watermarks: sessions that
touch merge, a gap one millisecond longer splits them, an out-of-order click bridges two
sessions, a session is emitted once the watermark passes its end, and a click too late for
any session is dropped.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flowkit import MAX_WATERMARK, CollectSink, StreamExecutionEnvironment
from flowkit.testing import StreamRecord, TestStream, Watermark, WindowOperatorHarness
from flowkit.window import EventTimeSessionWindows

ROOT = Path(__file__).resolve().parents[2]
GAP = 10_000  # the tests use a 10-second gap


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name}_under_test", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sessionization = load_example("sessionization")


def click(user: str, ts: int, page: str) -> dict[str, Any]:
    return {"user": user, "ts": ts, "page": page}


def script(*steps: dict[str, Any] | int) -> TestStream:
    """A TestStream: a dict is a click (stamped with its ``ts``), an int a watermark."""
    stream = TestStream()
    for step in steps:
        if isinstance(step, int):
            stream.advance_watermark_to(step)
        else:
            stream.add_element(step, step["ts"])
    return stream.advance_watermark_to_infinity()


def run_sessions(stream: TestStream, parallelism: int = 1) -> CollectSink:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    sink = CollectSink()
    sessionization.sessions(env.from_source(stream), gap_ms=GAP).sink_to(sink)
    env.execute("sessionization test")
    return sink


# ---------------------------------------------------------------------- the example itself
@pytest.mark.parametrize("parallelism", [1, 2, 4])
def test_the_example_finds_the_same_sessions_at_any_parallelism(parallelism: int) -> None:
    def at(time: str) -> int:
        ts: int = sessionization.click("", time, "")["ts"]
        return ts

    assert sessionization.run(parallelism=parallelism) == [
        ("alice", at("09:00"), at("09:17"), 3, ["home", "search", "product"]),
        ("alice", at("09:40"), at("09:52"), 2, ["home", "cart"]),
        ("bob", at("09:05"), at("09:35:30"), 4, ["home", "reviews", "product", "cart"]),
        ("carol", at("09:10"), at("09:40"), 4, ["home", "search", "product", "checkout"]),
        ("dave", at("09:50"), at("10:00"), 1, ["home"]),
    ]


# ---------------------------------------------------------------------- merging and splitting
def test_sessions_that_touch_merge() -> None:
    # [0, 10_000) and [10_000, 20_000) touch: one session
    sink = run_sessions(script(click("u", 0, "a"), click("u", GAP, "b")))
    assert sink.records == [StreamRecord(("u", 0, 2 * GAP, 2, ["a", "b"]), 2 * GAP - 1)]


def test_a_gap_one_millisecond_longer_splits_the_session() -> None:
    sink = run_sessions(script(click("u", 0, "a"), click("u", GAP + 1, "b")))
    assert sink.records == [
        StreamRecord(("u", 0, GAP, 1, ["a"]), GAP - 1),
        StreamRecord(("u", GAP + 1, 2 * GAP + 1, 1, ["b"]), 2 * GAP),
    ]


def test_an_out_of_order_click_bridges_two_open_sessions() -> None:
    sink = run_sessions(
        script(
            click("u", 0, "a"),
            click("u", 15_000, "c"),  # two sessions: [0, 10_000) and [15_000, 25_000)
            5_000,
            click("u", 8_000, "b"),  # [8_000, 18_000) overlaps both: one session
        )
    )
    assert sink.values == [("u", 0, 25_000, 3, ["a", "b", "c"])]


def test_users_have_separate_sessions() -> None:
    sink = run_sessions(
        script(click("u", 0, "a"), click("v", 5_000, "x"), click("u", 9_000, "b")),
        parallelism=2,
    )
    assert sorted(sink.values) == [
        ("u", 0, 19_000, 2, ["a", "b"]),
        ("v", 5_000, 15_000, 1, ["x"]),
    ]


def test_pages_are_listed_in_click_order_whatever_the_arrival_order() -> None:
    sink = run_sessions(
        script(click("u", 3_000, "c"), click("u", 1_000, "a"), click("u", 2_000, "b"))
    )
    assert sink.values == [("u", 1_000, 13_000, 3, ["a", "b", "c"])]


# ---------------------------------------------------------------------- watermarks
def test_a_session_is_emitted_once_the_watermark_reaches_its_last_millisecond() -> None:
    sink = run_sessions(
        script(
            click("u", 0, "a"),
            click("u", 4_000, "b"),  # the session ends at 14_000
            13_998,
            13_999,
            click("u", 30_000, "c"),
        )
    )
    assert sink.elements == [
        Watermark(13_998),
        StreamRecord(("u", 0, 14_000, 2, ["a", "b"]), 13_999),
        Watermark(13_999),
        StreamRecord(("u", 30_000, 40_000, 1, ["c"]), 39_999),
        Watermark(MAX_WATERMARK),
    ]


def test_a_click_too_late_for_any_session_is_dropped() -> None:
    sink = run_sessions(
        script(
            click("u", 0, "a"),
            50_000,  # the session [0, 10_000) was emitted
            click("u", 100, "late"),  # its session would end at 10_100 <= 50_000: dropped
            click("u", 60_000, "b"),
        )
    )
    assert sink.values == [("u", 0, GAP, 1, ["a"]), ("u", 60_000, 60_000 + GAP, 1, ["b"])]


def test_describe() -> None:
    session = ("carol", 9 * 3_600_000, 9 * 3_600_000 + 600_000, 1, ["home"])
    assert sessionization.describe(session) == "carol 09:00:00 - 09:10:00  1 click: home"


# ---------------------------------------------------------------------- with the harness
def session_harness(restore_from: Any = None) -> WindowOperatorHarness:
    return WindowOperatorHarness(
        EventTimeSessionWindows.with_gap(GAP),
        lambda event: event["user"],
        process=sessionization.SessionSummary(),
        restore_from=restore_from,
    )


def test_harness_open_sessions_survive_a_snapshot_and_merge_after_restore() -> None:
    before = session_harness()
    before.open()
    before.process_element(click("u", 0, "a"), 0)
    before.process_element(click("u", 15_000, "c"), 15_000)
    snapshot = before.snapshot()

    after = session_harness(restore_from=snapshot)
    after.open()
    after.process_watermark(5_000)
    after.process_element(click("u", 8_000, "b"), 8_000)  # bridges the restored sessions
    after.process_watermark(24_998)
    assert after.extract_output_values() == []
    after.process_watermark(24_999)
    assert after.get_output() == [
        Watermark(5_000),
        Watermark(24_998),
        StreamRecord(("u", 0, 25_000, 3, ["a", "b", "c"]), 24_999),
        Watermark(24_999),
    ]
    assert after.num_event_time_timers() == 0
    assert after.num_keyed_state_entries() == 0
