"""StatusWatermarkValve: how the watermarks and idleness of an input's channels combine.

Each test drives the valve channel by channel and checks exactly what it emits: output
watermarks as ``("wm", t)`` and statuses as ``"IDLE"`` / ``"ACTIVE"``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK
from flowkit.eventtime.valve import StatusWatermarkValve


class Recorder:
    """A valve plus everything it emitted, in order; ``take()`` returns and clears it."""

    def __init__(self, channels: int) -> None:
        self.events: list[Any] = []
        self.valve = StatusWatermarkValve(channels, self._on_watermark, self._on_status)

    def _on_watermark(self, timestamp: int) -> None:
        self.events.append(("wm", timestamp))

    def _on_status(self, idle: bool) -> None:
        self.events.append("IDLE" if idle else "ACTIVE")

    def wm(self, timestamp: int, channel: int) -> list[Any]:
        self.valve.input_watermark(timestamp, channel)
        return self.take()

    def idle(self, channel: int) -> list[Any]:
        self.valve.input_status(True, channel)
        return self.take()

    def active(self, channel: int) -> list[Any]:
        self.valve.input_status(False, channel)
        return self.take()

    def take(self) -> list[Any]:
        events, self.events = self.events, []
        return events


# ----------------------------------------------------------------- single channel


def test_single_channel_forwards_only_advancing_watermarks() -> None:
    v = Recorder(1)
    assert v.wm(0, 0) == [("wm", 0)]
    assert v.wm(25, 0) == [("wm", 25)]
    assert v.wm(18, 0) == []  # lower: ignored
    assert v.wm(25, 0) == []  # equal: ignored
    assert v.wm(42, 0) == [("wm", 42)]
    assert v.valve.last_output == 42


def test_min_watermark_is_never_emitted() -> None:
    v = Recorder(1)
    assert v.wm(MIN_WATERMARK, 0) == []
    assert v.wm(MIN_WATERMARK + 1, 0) == [("wm", MIN_WATERMARK + 1)]


def test_single_channel_idle_then_active() -> None:
    v = Recorder(1)
    assert v.wm(10, 0) == [("wm", 10)]
    # the channel's watermark equals the last output, but the max (10) is no advance
    assert v.idle(0) == ["IDLE"]
    assert v.wm(20, 0) == []  # ignored while idle
    assert v.active(0) == ["ACTIVE"]
    assert v.valve.channels[0].watermark == 10  # the 20 sent while idle was not kept
    assert v.wm(10, 0) == []
    assert v.wm(15, 0) == [("wm", 15)]


def test_single_channel_idle_at_start_emits_only_status() -> None:
    v = Recorder(1)
    assert v.idle(0) == ["IDLE"]
    assert v.active(0) == ["ACTIVE"]
    assert v.wm(5, 0) == [("wm", 5)]


# ----------------------------------------------------------------- several channels


def test_output_is_the_minimum_over_channels() -> None:
    v = Recorder(3)
    assert v.wm(10, 0) == []  # channels 1 and 2 are still at MIN
    assert v.wm(5, 1) == []
    assert v.wm(3, 2) == [("wm", 3)]
    assert v.wm(7, 2) == [("wm", 5)]  # now channel 1 holds the minimum
    assert v.wm(12, 1) == [("wm", 7)]
    assert v.wm(20, 2) == [("wm", 10)]
    assert v.wm(11, 0) == [("wm", 11)]
    assert v.wm(30, 0) == [("wm", 12)]


def test_channel_watermark_going_backwards_is_ignored() -> None:
    v = Recorder(2)
    assert v.wm(10, 0) == []
    assert v.wm(20, 1) == [("wm", 10)]
    assert v.wm(5, 0) == []  # lower than channel 0's own watermark: ignored
    assert v.wm(15, 0) == [("wm", 15)]
    assert [c.watermark for c in v.valve.channels] == [15, 20]


def test_channel_that_does_not_hold_the_minimum_does_not_emit() -> None:
    v = Recorder(2)
    assert v.wm(10, 0) == []
    assert v.wm(20, 1) == [("wm", 10)]
    assert v.wm(30, 1) == []  # channel 0 still holds the output at 10


# ----------------------------------------------------------------- idleness


def test_idle_channel_is_left_out_of_the_minimum() -> None:
    v = Recorder(2)
    assert v.idle(1) == []  # not all channels idle: no status; MIN stays MIN
    assert v.wm(10, 0) == [("wm", 10)]  # channel 1 (still at MIN) no longer holds it back
    assert v.wm(20, 0) == [("wm", 20)]


def test_channel_going_idle_that_held_the_minimum_releases_it() -> None:
    v = Recorder(3)
    v.wm(20, 0)
    v.wm(30, 1)
    assert v.wm(10, 2) == [("wm", 10)]
    assert v.idle(2) == [("wm", 20)]  # recomputed over channels 0 and 1
    assert v.idle(0) == [("wm", 30)]
    assert v.valve.idle is False


def test_channel_going_idle_above_the_output_changes_nothing() -> None:
    v = Recorder(2)
    v.wm(10, 0)
    assert v.wm(20, 1) == [("wm", 10)]
    assert v.idle(1) == []  # its watermark 20 != last output 10: no recomputation
    assert v.wm(15, 0) == [("wm", 15)]


def test_watermarks_on_an_idle_channel_are_ignored() -> None:
    v = Recorder(2)
    v.wm(10, 0)
    assert v.wm(10, 1) == [("wm", 10)]
    assert v.idle(1) == []
    assert v.wm(50, 1) == []
    assert v.valve.channels[1].watermark == 10  # not even recorded
    assert v.wm(40, 0) == [("wm", 40)]


def test_all_channels_idle_emits_max_watermark_then_idle() -> None:
    v = Recorder(2)
    v.wm(10, 0)
    assert v.wm(20, 1) == [("wm", 10)]
    assert v.idle(1) == []
    # channel 0's watermark (10) equals the last output: flush the max over all channels
    assert v.idle(0) == [("wm", 20), "IDLE"]
    assert v.valve.idle is True
    assert v.valve.last_output == 20


def test_all_idle_without_a_larger_watermark_emits_only_idle() -> None:
    v = Recorder(2)
    v.wm(10, 0)
    assert v.wm(10, 1) == [("wm", 10)]
    assert v.idle(0) == []
    assert v.idle(1) == ["IDLE"]


def test_all_idle_flushes_max_only_when_last_idling_channel_is_at_output() -> None:
    v = Recorder(3)
    v.wm(10, 0)
    v.wm(20, 1)
    assert v.wm(20, 2) == [("wm", 10)]
    assert v.idle(0) == [("wm", 20)]
    # channel 0 comes back behind the output (10 < 20): unaligned
    assert v.active(0) == []
    assert v.wm(50, 2) == []  # min over aligned channels 1 and 2 is still 20
    assert v.idle(2) == []  # 50 != last output 20
    assert v.idle(1) == []  # 20 == 20: recompute, but no aligned channel is left
    # The last channel to go idle (0, at 10) is not at the output watermark (20): the
    # valve goes idle without emitting the max (50).
    assert v.idle(0) == ["IDLE"]
    assert v.valve.last_output == 20


def test_all_idle_at_start_emits_only_idle() -> None:
    v = Recorder(2)
    assert v.idle(0) == []
    assert v.idle(1) == ["IDLE"]
    assert v.valve.last_output == MIN_WATERMARK


def test_watermarks_while_the_valve_is_idle_are_ignored() -> None:
    v = Recorder(2)
    v.wm(5, 0)
    v.wm(5, 1)
    v.idle(0)
    assert v.idle(1) == ["IDLE"]
    assert v.wm(100, 0) == []
    assert v.wm(100, 1) == []
    assert [c.watermark for c in v.valve.channels] == [5, 5]


def test_active_status_is_emitted_only_when_the_valve_was_idle() -> None:
    v = Recorder(2)
    assert v.idle(0) == []
    assert v.active(0) == []  # the valve was active all along
    v.idle(0)
    assert v.idle(1) == ["IDLE"]
    assert v.active(1) == ["ACTIVE"]
    assert v.active(0) == []  # valve already active again
    assert v.valve.idle is False


def test_repeated_statuses_are_ignored() -> None:
    v = Recorder(1)
    assert v.active(0) == []  # already active
    assert v.idle(0) == ["IDLE"]
    assert v.idle(0) == []  # already idle
    assert v.active(0) == ["ACTIVE"]
    assert v.active(0) == []


def test_reactivated_channel_rejoins_only_after_catching_up() -> None:
    v = Recorder(2)
    assert v.idle(1) == []
    assert v.wm(10, 0) == [("wm", 10)]
    assert v.active(1) == []  # channel 1 is at MIN < 10: unaligned
    assert v.valve.channels[1].aligned is False
    assert v.wm(20, 0) == [("wm", 20)]  # channel 1 does not hold the output back
    assert v.wm(15, 1) == []  # 15 < 20: still unaligned
    assert v.valve.channels[1].aligned is False
    assert v.wm(30, 0) == [("wm", 30)]
    assert v.wm(30, 1) == []  # caught up (30 >= 30): aligned again; min is 30, no advance
    assert v.valve.channels[1].aligned is True
    assert v.wm(40, 0) == []  # now channel 1 holds the minimum
    assert v.wm(35, 1) == [("wm", 35)]


def test_reactivated_channel_ahead_of_output_is_aligned_at_once() -> None:
    v = Recorder(2)
    v.wm(10, 0)
    assert v.wm(50, 1) == [("wm", 10)]
    assert v.idle(1) == []
    assert v.active(1) == []  # its watermark 50 >= output 10: aligned immediately
    assert v.valve.channels[1].aligned is True
    assert v.wm(60, 0) == [("wm", 50)]  # channel 1 holds the output at its 50


def test_unaligned_channel_catching_up_exactly_to_output_counts_again() -> None:
    v = Recorder(2)
    v.wm(20, 0)
    v.wm(20, 1)
    assert v.idle(1) == []
    assert v.wm(30, 0) == [("wm", 30)]
    v.active(1)  # at 20 < 30: unaligned
    assert v.wm(25, 1) == []
    assert v.wm(30, 1) == []  # equal to the output: aligned
    assert v.valve.channels[1].aligned is True
    assert v.wm(45, 0) == []
    assert v.wm(41, 1) == [("wm", 41)]


def test_idle_then_active_valve_resumes_from_last_output() -> None:
    v = Recorder(2)
    v.wm(10, 0)
    v.wm(30, 1)
    v.idle(1)
    assert v.idle(0) == [("wm", 30), "IDLE"]
    assert v.active(0) == ["ACTIVE"]  # channel 0 at 10 < 30: unaligned
    assert v.wm(25, 0) == []
    assert v.wm(31, 0) == [("wm", 31)]  # caught up and only aligned channel


def test_max_watermark_passes() -> None:
    v = Recorder(2)
    v.wm(MAX_WATERMARK, 0)
    assert v.wm(MAX_WATERMARK, 1) == [("wm", MAX_WATERMARK)]


def test_idle_channel_with_max_watermark_when_other_finishes() -> None:
    v = Recorder(2)
    assert v.wm(MAX_WATERMARK, 0) == []
    assert v.idle(1) == [("wm", MAX_WATERMARK)]  # channel 1 at MIN == output: recompute


# ----------------------------------------------------------------- reference model


class SpecValve:
    """The valve rules written out literally, independent of the implementation."""

    def __init__(self, n: int) -> None:
        self.wm = [MIN_WATERMARK] * n
        self.idle = [False] * n
        self.aligned = [True] * n
        self.last = MIN_WATERMARK
        self.valve_idle = False
        self.out: list[Any] = []

    def _emit_min(self) -> None:
        marks = [w for w, a in zip(self.wm, self.aligned) if a]
        if marks and min(marks) > self.last:
            self.last = min(marks)
            self.out.append(("wm", self.last))

    def watermark(self, w: int, c: int) -> None:
        if self.valve_idle or self.idle[c] or w <= self.wm[c]:
            return
        self.wm[c] = w
        if not self.aligned[c] and w >= self.last:
            self.aligned[c] = True
        self._emit_min()

    def status(self, idle: bool, c: int) -> None:
        if idle and not self.idle[c]:
            self.idle[c] = True
            self.aligned[c] = False
            if all(self.idle):
                if self.wm[c] == self.last and max(self.wm) > self.last:
                    self.last = max(self.wm)
                    self.out.append(("wm", self.last))
                self.valve_idle = True
                self.out.append("IDLE")
            elif self.wm[c] == self.last:
                self._emit_min()
        elif not idle and self.idle[c]:
            self.idle[c] = False
            self.aligned[c] = self.wm[c] >= self.last
            if self.valve_idle:
                self.valve_idle = False
                self.out.append("ACTIVE")


_ops = st.lists(
    st.tuples(
        st.sampled_from(["wm", "idle", "active"]),
        st.integers(min_value=0, max_value=3),
        st.integers(min_value=0, max_value=60),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(channels=st.integers(min_value=1, max_value=4), ops=_ops)
def test_valve_matches_rules_and_output_strictly_increases(
    channels: int, ops: list[tuple[str, int, int]]
) -> None:
    v = Recorder(channels)
    spec = SpecValve(channels)
    everything: list[Any] = []
    for kind, channel, value in ops:
        channel %= channels
        if kind == "wm":
            v.valve.input_watermark(value, channel)
            spec.watermark(value, channel)
        else:
            v.valve.input_status(kind == "idle", channel)
            spec.status(kind == "idle", channel)
        everything.extend(v.take())
    assert everything == spec.out
    marks = [e[1] for e in everything if isinstance(e, tuple)]
    assert marks == sorted(set(marks))  # strictly increasing
    statuses = [e for e in everything if isinstance(e, str)]
    assert statuses == ["IDLE", "ACTIVE"] * (len(statuses) // 2) + ["IDLE"] * (len(statuses) % 2)


@pytest.mark.parametrize("channels", [1, 2, 5])
def test_fresh_valve_state(channels: int) -> None:
    v = Recorder(channels)
    assert v.valve.last_output == MIN_WATERMARK
    assert v.valve.idle is False
    assert all(c.watermark == MIN_WATERMARK and c.aligned and not c.idle for c in v.valve.channels)
