"""Barrier handling at a subtask's input (SEMANTICS.md 5.3).

Cases in the spirit of Flink's AlignedCheckpointsTest (exactly-once alignment) and
CheckpointBarrierTrackerTest (at-least-once tracking), plus property tests over random
interleavings of barrier sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.checkpoint.alignment import BarrierAligner, BarrierTracker, make_barrier_handler

Action = tuple[str, int]


def _aligner(num_channels: int) -> tuple[BarrierAligner, list[Action]]:
    actions: list[Action] = []
    return BarrierAligner(num_channels, actions.append), actions


def _tracker(num_channels: int, max_pending: int = 50) -> tuple[BarrierTracker, list[Action]]:
    actions: list[Action] = []
    return BarrierTracker(num_channels, actions.append, max_pending=max_pending), actions


def _triggered(actions: list[Action]) -> list[int]:
    return [cid for kind, cid in actions if kind == "trigger"]


def _aborted(actions: list[Action]) -> list[int]:
    return [cid for kind, cid in actions if kind == "abort"]


# --------------------------------------------------------------------------------------
# Exactly-once alignment
# --------------------------------------------------------------------------------------


def test_single_channel_triggers_on_every_barrier_without_blocking() -> None:
    aligner, actions = _aligner(1)
    for cid in (1, 2, 3):
        aligner.on_barrier(cid, channel=0)
        assert aligner.blocked == set()
    assert actions == [("trigger", 1), ("trigger", 2), ("trigger", 3)]


def test_single_channel_ignores_repeated_or_older_barrier() -> None:
    aligner, actions = _aligner(1)
    aligner.on_barrier(2, channel=0)
    aligner.on_barrier(2, channel=0)
    aligner.on_barrier(1, channel=0)
    assert actions == [("trigger", 2)]
    assert aligner.blocked == set()


def test_alignment_blocks_exactly_the_channels_that_delivered_the_barrier() -> None:
    aligner, actions = _aligner(3)
    aligner.on_barrier(1, channel=1)
    assert aligner.blocked == {1}
    aligner.on_barrier(1, channel=0)
    assert aligner.blocked == {0, 1}
    assert actions == []
    aligner.on_barrier(1, channel=2)
    assert actions == [("trigger", 1)]
    assert aligner.blocked == set()


def test_consecutive_checkpoints_each_align_separately() -> None:
    aligner, actions = _aligner(2)
    for cid in (1, 2, 3):
        aligner.on_barrier(cid, channel=cid % 2)
        assert aligner.blocked == {cid % 2}
        aligner.on_barrier(cid, channel=1 - cid % 2)
        assert aligner.blocked == set()
    assert actions == [("trigger", 1), ("trigger", 2), ("trigger", 3)]


def test_checkpoint_ids_may_skip() -> None:
    aligner, actions = _aligner(2)
    aligner.on_barrier(2, channel=0)
    aligner.on_barrier(2, channel=1)
    aligner.on_barrier(5, channel=1)
    aligner.on_barrier(5, channel=0)
    assert actions == [("trigger", 2), ("trigger", 5)]


def test_newer_barrier_during_alignment_aborts_older_and_aligns_newer() -> None:
    aligner, actions = _aligner(3)
    aligner.on_barrier(1, channel=0)
    aligner.on_barrier(1, channel=1)
    assert aligner.blocked == {0, 1}
    # Channel 2 skipped checkpoint 1 (e.g. its upstream declined it) and delivers 2.
    aligner.on_barrier(2, channel=2)
    assert actions == [("abort", 1)]
    assert aligner.blocked == {2}  # only the channel that delivered barrier 2
    aligner.on_barrier(2, channel=0)
    assert aligner.blocked == {0, 2}
    aligner.on_barrier(2, channel=1)
    assert actions == [("abort", 1), ("trigger", 2)]
    assert aligner.blocked == set()


def test_barriers_of_a_triggered_checkpoint_are_ignored() -> None:
    aligner, actions = _aligner(2)
    aligner.on_barrier(1, channel=0)
    aligner.on_barrier(1, channel=1)
    aligner.on_barrier(1, channel=0)  # stray repeat
    assert aligner.blocked == set()
    assert actions == [("trigger", 1)]


def test_trailing_barriers_of_an_aborted_checkpoint_are_ignored() -> None:
    aligner, actions = _aligner(3)
    aligner.on_barrier(1, channel=0)
    aligner.on_barrier(2, channel=1)  # aborts 1
    # Channel 2 now delivers the late barrier 1: it must not block nor restart 1.
    aligner.on_barrier(1, channel=2)
    assert aligner.blocked == {1}
    aligner.on_barrier(2, channel=2)
    aligner.on_barrier(2, channel=0)
    assert actions == [("abort", 1), ("trigger", 2)]
    # After 2 triggered, another late barrier 1 is still ignored.
    aligner.on_barrier(1, channel=0)
    assert aligner.blocked == set()
    assert actions == [("abort", 1), ("trigger", 2)]


def test_end_of_partition_before_barrier_counts_as_delivered() -> None:
    aligner, actions = _aligner(3)
    aligner.on_end_of_partition(1)
    aligner.on_barrier(1, channel=0)
    assert aligner.blocked == {0}
    aligner.on_barrier(1, channel=2)
    assert actions == [("trigger", 1)]
    # ... and for every later checkpoint too.
    aligner.on_barrier(2, channel=2)
    aligner.on_barrier(2, channel=0)
    assert actions == [("trigger", 1), ("trigger", 2)]
    assert aligner.blocked == set()


def test_channel_finishing_while_others_are_blocked_triggers_checkpoint() -> None:
    aligner, actions = _aligner(3)
    aligner.on_barrier(4, channel=0)
    aligner.on_barrier(4, channel=2)
    assert aligner.blocked == {0, 2}
    aligner.on_end_of_partition(1)
    assert actions == [("trigger", 4)]
    assert aligner.blocked == set()


def test_end_of_partition_without_alignment_triggers_nothing() -> None:
    aligner, actions = _aligner(2)
    aligner.on_end_of_partition(0)
    aligner.on_end_of_partition(1)
    assert actions == []
    assert aligner.blocked == set()


def test_only_one_open_channel_left_behaves_like_single_channel() -> None:
    aligner, actions = _aligner(2)
    aligner.on_end_of_partition(0)
    aligner.on_barrier(1, channel=1)
    assert actions == [("trigger", 1)]
    assert aligner.blocked == set()


def test_cancellation_of_current_checkpoint_aborts_and_unblocks() -> None:
    aligner, actions = _aligner(3)
    aligner.on_barrier(1, channel=0)
    aligner.on_barrier(1, channel=1)
    aligner.abort(1)
    assert actions == [("abort", 1)]
    assert aligner.blocked == set()
    # The remaining barrier of 1 is ignored; checkpoint 2 aligns normally.
    aligner.on_barrier(1, channel=2)
    assert aligner.blocked == set()
    for channel in (2, 0, 1):
        aligner.on_barrier(2, channel=channel)
    assert actions == [("abort", 1), ("trigger", 2)]


def test_cancellation_before_any_barrier_prevents_the_checkpoint() -> None:
    aligner, actions = _aligner(2)
    aligner.abort(3)
    assert actions == [("abort", 3)]
    # Barriers of the cancelled checkpoint that still arrive must not start alignment.
    aligner.on_barrier(3, channel=0)
    assert aligner.blocked == set()
    aligner.on_barrier(3, channel=1)
    assert actions == [("abort", 3)]


def test_cancellation_of_newer_checkpoint_aborts_current_alignment() -> None:
    aligner, actions = _aligner(2)
    aligner.on_barrier(1, channel=0)
    aligner.abort(2)
    assert actions == [("abort", 1), ("abort", 2)]
    assert aligner.blocked == set()
    aligner.on_barrier(2, channel=1)
    assert aligner.blocked == set()
    aligner.on_barrier(3, channel=1)
    aligner.on_barrier(3, channel=0)
    assert _triggered(actions) == [3]


def test_stale_or_repeated_cancellation_is_ignored() -> None:
    aligner, actions = _aligner(2)
    aligner.on_barrier(1, channel=0)
    aligner.on_barrier(1, channel=1)
    aligner.abort(1)  # already triggered
    aligner.on_barrier(3, channel=0)
    aligner.abort(2)  # older than the alignment in progress
    assert aligner.blocked == {0}
    aligner.abort(3)
    aligner.abort(3)
    assert actions == [("trigger", 1), ("abort", 3)]
    assert aligner.blocked == set()


# --------------------------------------------------------------------------------------
# At-least-once tracking
# --------------------------------------------------------------------------------------


def test_tracker_single_channel_triggers_immediately() -> None:
    tracker, actions = _tracker(1)
    tracker.on_barrier(1, channel=0)
    tracker.on_barrier(2, channel=0)
    tracker.on_barrier(2, channel=0)
    assert actions == [("trigger", 1), ("trigger", 2)]
    assert tracker.blocked == set()


def test_tracker_blocks_nothing_and_triggers_when_all_channels_delivered() -> None:
    tracker, actions = _tracker(3)
    tracker.on_barrier(1, channel=2)
    tracker.on_barrier(1, channel=0)
    assert tracker.blocked == set()
    assert actions == []
    tracker.on_barrier(1, channel=1)
    assert actions == [("trigger", 1)]
    assert tracker.blocked == set()


def test_tracker_interleaved_checkpoints_trigger_independently() -> None:
    tracker, actions = _tracker(2)
    tracker.on_barrier(1, channel=0)
    tracker.on_barrier(2, channel=0)  # channel 0 runs ahead: nothing blocks it
    tracker.on_barrier(3, channel=0)
    tracker.on_barrier(1, channel=1)
    tracker.on_barrier(2, channel=1)
    tracker.on_barrier(3, channel=1)
    assert actions == [("trigger", 1), ("trigger", 2), ("trigger", 3)]


def test_tracker_newer_trigger_drops_older_pending_silently() -> None:
    tracker, actions = _tracker(3)
    tracker.on_barrier(1, channel=0)
    tracker.on_barrier(2, channel=0)
    tracker.on_barrier(2, channel=1)
    tracker.on_barrier(3, channel=0)
    tracker.on_barrier(3, channel=1)
    tracker.on_barrier(3, channel=2)
    assert actions == [("trigger", 3)]
    assert tracker.pending == {}
    # Late barriers of the dropped checkpoints do nothing.
    tracker.on_barrier(1, channel=1)
    tracker.on_barrier(1, channel=2)
    tracker.on_barrier(2, channel=2)
    assert actions == [("trigger", 3)]
    assert tracker.pending == {}


def test_tracker_ignores_first_barrier_older_than_latest_pending() -> None:
    tracker, actions = _tracker(2)
    tracker.on_barrier(5, channel=0)
    tracker.on_barrier(3, channel=1)  # 3 was never seen before and is older than 5
    tracker.on_barrier(3, channel=0)
    assert set(tracker.pending) == {5}
    assert actions == []
    tracker.on_barrier(5, channel=1)
    assert actions == [("trigger", 5)]


def test_tracker_tracks_at_most_max_pending_checkpoints() -> None:
    tracker, actions = _tracker(2, max_pending=3)
    for cid in (1, 2, 3, 4):
        tracker.on_barrier(cid, channel=0)
    assert sorted(tracker.pending) == [2, 3, 4]  # the oldest was evicted
    tracker.on_barrier(1, channel=1)  # evicted: can no longer trigger
    assert actions == []
    tracker.on_barrier(2, channel=1)
    assert actions == [("trigger", 2)]


def test_tracker_default_limit_is_fifty() -> None:
    tracker, actions = _tracker(2)
    for cid in range(1, 61):
        tracker.on_barrier(cid, channel=0)
    assert len(tracker.pending) == 50
    assert min(tracker.pending) == 11
    tracker.on_barrier(10, channel=1)
    tracker.on_barrier(11, channel=1)
    assert actions == [("trigger", 11)]


def test_tracker_end_of_partition_case_from_semantics() -> None:
    tracker, actions = _tracker(3)
    for cid, channel in ((1, 0), (2, 0), (2, 1), (3, 0), (4, 0), (4, 1)):
        tracker.on_barrier(cid, channel=channel)
    assert actions == []
    tracker.on_end_of_partition(2)
    tracker.on_barrier(5, channel=1)
    assert _triggered(actions) == [4]
    assert _aborted(actions) == []


def test_tracker_finished_channel_counts_for_later_barriers() -> None:
    tracker, actions = _tracker(3)
    tracker.on_end_of_partition(0)
    tracker.on_barrier(1, channel=1)
    assert actions == []
    tracker.on_barrier(1, channel=2)
    assert actions == [("trigger", 1)]


def test_tracker_cancellation_prevents_trigger() -> None:
    tracker, actions = _tracker(2)
    tracker.on_barrier(1, channel=0)
    tracker.abort(1)
    tracker.on_barrier(1, channel=1)
    assert actions == [("abort", 1)]
    tracker.on_barrier(2, channel=1)
    tracker.on_barrier(2, channel=0)
    assert actions == [("abort", 1), ("trigger", 2)]


def test_tracker_cancellation_before_any_barrier_prevents_trigger() -> None:
    tracker, actions = _tracker(2)
    tracker.abort(4)
    tracker.abort(4)
    tracker.on_barrier(4, channel=0)
    tracker.on_barrier(4, channel=1)
    assert actions == [("abort", 4)]
    assert tracker.pending == {}


def test_tracker_cancellation_aborts_older_pending() -> None:
    tracker, actions = _tracker(3)
    tracker.on_barrier(1, channel=0)
    tracker.on_barrier(2, channel=0)
    tracker.on_barrier(4, channel=0)
    tracker.abort(3)
    assert actions == [("abort", 1), ("abort", 2)]
    assert set(tracker.pending) == {4}  # a later checkpoint still completes
    tracker.on_barrier(4, channel=1)
    tracker.on_barrier(4, channel=2)
    assert _triggered(actions) == [4]


def test_tracker_cancellation_of_triggered_checkpoint_is_ignored() -> None:
    tracker, actions = _tracker(1)
    tracker.on_barrier(1, channel=0)
    tracker.abort(1)
    assert actions == [("trigger", 1)]


@pytest.mark.parametrize(
    ("mode", "cls"), [("exactly_once", BarrierAligner), ("at_least_once", BarrierTracker)]
)
def test_make_barrier_handler_picks_the_mode(
    mode: str, cls: type[BarrierAligner] | type[BarrierTracker]
) -> None:
    actions: list[Action] = []
    handler = make_barrier_handler(mode, 2, actions.append)
    assert isinstance(handler, cls)
    handler.on_barrier(1, channel=0)
    handler.on_barrier(1, channel=1)
    assert actions == [("trigger", 1)]


# --------------------------------------------------------------------------------------
# Properties over random interleavings
# --------------------------------------------------------------------------------------


@dataclass
class _Channel:
    """One input channel's remaining events: increasing barrier ids, then maybe EOP."""

    barriers: list[int]
    ends: bool
    delivered: list[int] = field(default_factory=list)
    finished: bool = False

    def has_next(self) -> bool:
        return bool(self.barriers) or (self.ends and not self.finished)


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[list[_Channel], list[int], list[int]]:
    """Channels with their barrier sequences, a schedule, and cancellation points."""
    num_channels = draw(st.integers(min_value=1, max_value=4))
    common = draw(st.booleans())  # every channel delivers the same ids (no skipping)
    shared = sorted(draw(st.sets(st.integers(1, 12), max_size=8)))
    channels = []
    for _ in range(num_channels):
        ids = shared if common else sorted(draw(st.sets(st.integers(1, 12), max_size=8)))
        channels.append(_Channel(list(ids), ends=draw(st.booleans())))
    schedule = draw(st.lists(st.integers(0, num_channels - 1), max_size=80))
    cancels = draw(st.lists(st.integers(1, 12), max_size=3))
    return channels, schedule, cancels


def _check_step(
    aligner: BarrierAligner,
    channels: list[_Channel],
    actions: list[Action],
    seen: int,
    done: set[int],
) -> int:
    """Check the aligner's invariants after one step; returns the new action count."""
    for kind, cid in actions[seen:]:
        if kind == "trigger":
            for index, channel in enumerate(channels):
                if not channel.finished:
                    assert cid in channel.delivered, (cid, index)
        assert cid not in done, "an id is triggered or aborted at most once"
        assert all(cid > earlier for earlier in done), "ids are acted on in increasing order"
        done.add(cid)
    for index in aligner.blocked:
        channel = channels[index]
        assert not channel.finished
        assert channel.delivered, "a blocked channel delivered a barrier"
        assert channel.delivered[-1] not in done, "blocked for a checkpoint already over"
        assert channel.delivered[-1] == aligner.current
    return len(actions)


@settings(max_examples=400, deadline=None)
@given(scenario=_scenarios())
def test_aligner_invariants_over_random_interleavings(
    scenario: tuple[list[_Channel], list[int], list[int]],
) -> None:
    channels, schedule, cancels = scenario
    common = len({tuple(c.barriers) for c in channels}) == 1
    all_ids = sorted({cid for c in channels for cid in c.barriers})
    aligner, actions = _aligner(len(channels))
    done: set[int] = set()
    seen = 0

    def step(index: int) -> None:
        channel = channels[index]
        if channel.barriers:
            cid = channel.barriers.pop(0)
            channel.delivered.append(cid)
            aligner.on_barrier(cid, channel=index)
        else:
            channel.finished = True
            aligner.on_end_of_partition(index)

    def runnable() -> list[int]:
        return [i for i, c in enumerate(channels) if c.has_next() and i not in aligner.blocked]

    # The drawn schedule first (skipping channels that are blocked or exhausted), with
    # cancellations injected at fixed points, then round-robin until nothing can move.
    for position, index in enumerate(schedule):
        if position < len(cancels) * 7 and position % 7 == 6:
            aligner.abort(cancels[position // 7])
            seen = _check_step(aligner, channels, actions, seen, done)
        if index in runnable():
            step(index)
            seen = _check_step(aligner, channels, actions, seen, done)
    while candidates := runnable():
        step(candidates[0])
        seen = _check_step(aligner, channels, actions, seen, done)

    # Liveness: once every channel has ended, no alignment is left hanging.
    if all(c.ends for c in channels):
        assert aligner.blocked == set()
        assert aligner.current == 0
    if common and not cancels:
        # Without skipped ids and cancellations nothing is ever aborted, and every id is
        # triggered once all channels delivered it.
        assert actions == [("trigger", cid) for cid in all_ids]


@settings(max_examples=300, deadline=None)
@given(scenario=_scenarios())
def test_tracker_invariants_over_random_interleavings(
    scenario: tuple[list[_Channel], list[int], list[int]],
) -> None:
    channels, schedule, _ = scenario
    common = len({tuple(c.barriers) for c in channels}) == 1
    tracker, actions = _tracker(len(channels))
    triggered: list[int] = []
    order = list(schedule) + [i for i in range(len(channels)) for _ in range(10)]
    for index in order:
        channel = channels[index]
        if channel.barriers:
            cid = channel.barriers.pop(0)
            channel.delivered.append(cid)
            tracker.on_barrier(cid, channel=index)
        elif channel.ends and not channel.finished:
            channel.finished = True
            tracker.on_end_of_partition(index)
        assert tracker.blocked == set()
        for kind, cid in actions[len(triggered) :]:
            assert kind == "trigger"
            for other in channels:
                assert other.finished or cid in other.delivered
            assert not triggered or cid > triggered[-1]
            triggered.append(cid)
    if common and channels[0].delivered:
        # With every channel delivering the same ids the newest one always triggers.
        assert triggered[-1] == channels[0].delivered[-1]
