"""Restart strategies follow Flink's rules (SEMANTICS.md 5.7) step by step on a manual clock."""

from __future__ import annotations

import dataclasses
import doctest
import random
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import flowkit.checkpoint.restart as restart_module
from flowkit.checkpoint.restart import (
    ExponentialDelayRestartBackoff,
    ExponentialDelayRestartStrategy,
    FailureRateRestartBackoff,
    FixedDelayRestartStrategy,
    NoRestartStrategy,
    RestartBackoff,
    RestartStrategy,
    system_clock_ms,
)
from flowkit.errors import InvalidConfigurationError
from flowkit.eventtime.clocks import ManualClock

# a realistic epoch time, so that "last failure = 0" is long ago, as with a real clock
T0 = 1_700_000_000_000
BOOM = RuntimeError("boom")


def fail(backoff: RestartBackoff) -> tuple[bool, int]:
    """What the failover handler does on a failure: notify, then ask."""
    backoff.notify_failure(BOOM)
    return backoff.can_restart(), backoff.backoff_ms()


def exponential(clock: ManualClock, **options: Any) -> ExponentialDelayRestartBackoff:
    options.setdefault("jitter_factor", 0.0)
    backoff = RestartStrategy.exponential_delay(**options).create_backoff(
        clock=clock, rng=random.Random(7)
    )
    assert isinstance(backoff, ExponentialDelayRestartBackoff)
    return backoff


# ---------------------------------------------------------------------------- fixed delay


def test_fixed_delay_defaults_allow_one_restart_after_one_second() -> None:
    strategy = RestartStrategy.fixed_delay()
    assert (strategy.attempts, strategy.delay_ms) == (1, 1000)
    backoff = strategy.create_backoff(clock=ManualClock(T0))
    assert backoff.attempts == 0
    assert fail(backoff) == (True, 1000)
    assert backoff.can_restart() is True  # asking again does not count an attempt
    assert fail(backoff)[0] is False
    assert backoff.attempts == 2


def test_fixed_delay_allows_exactly_attempts_restarts() -> None:
    backoff = RestartStrategy.fixed_delay(attempts=3, delay_ms=250).create_backoff()
    answers = [fail(backoff) for _ in range(5)]
    assert answers == [(True, 250), (True, 250), (True, 250), (False, 250), (False, 250)]
    assert backoff.attempts == 5


def test_fixed_delay_with_zero_attempts_never_restarts() -> None:
    backoff = RestartStrategy.fixed_delay(attempts=0, delay_ms=0).create_backoff()
    assert backoff.can_restart() is True  # no failure yet: attempt 0 <= 0
    assert fail(backoff) == (False, 0)


def test_fixed_delay_ignores_time() -> None:
    clock = ManualClock(T0)
    backoff = RestartStrategy.fixed_delay(attempts=1, delay_ms=0).create_backoff(clock=clock)
    assert fail(backoff)[0] is True
    clock.advance_by(10 * 3_600_000)  # hours later the budget is still used up
    assert fail(backoff)[0] is False


# --------------------------------------------------------------------------- failure rate


def test_failure_rate_defaults() -> None:
    strategy = RestartStrategy.failure_rate()
    assert (
        strategy.max_failures_per_interval,
        strategy.failure_rate_interval_ms,
        strategy.delay_ms,
    ) == (1, 60_000, 1000)


def test_failure_rate_fails_when_one_more_than_max_falls_in_the_interval() -> None:
    clock = ManualClock(T0)
    strategy = RestartStrategy.failure_rate(3, 10_000, delay_ms=500)
    backoff = strategy.create_backoff(clock=clock)
    for _ in range(3):
        assert fail(backoff) == (True, 500)
    assert fail(backoff) == (False, 500)
    assert backoff.attempts == 4


def test_failure_rate_interval_boundary_is_exclusive() -> None:
    # max 2 per 100 ms: the third failure must come strictly more than 100 ms after the
    # first kept one; exactly 100 ms later is still inside the interval
    for third_at, expected in [(99, False), (100, False), (101, True)]:
        clock = ManualClock(T0)
        backoff = RestartStrategy.failure_rate(2, 100, delay_ms=0).create_backoff(clock=clock)
        assert fail(backoff)[0] is True  # t = 0
        clock.advance_to(T0 + 50)
        assert fail(backoff)[0] is True  # t = 50
        clock.advance_to(T0 + third_at)
        assert fail(backoff)[0] is expected, third_at


def test_failure_rate_window_slides_and_keeps_at_most_max_plus_one_times() -> None:
    clock = ManualClock(T0)
    backoff = RestartStrategy.failure_rate(2, 100, delay_ms=0).create_backoff(clock=clock)
    assert isinstance(backoff, FailureRateRestartBackoff)
    steps = [
        # (time, can_restart, kept failure times after the notification)
        (0, True, [0]),
        (60, True, [0, 60]),
        (120, True, [0, 60, 120]),  # 3 kept: 120 - 0 = 120 > 100
        (150, False, [60, 120, 150]),  # oldest dropped; 150 - 60 = 90 <= 100
        (260, True, [120, 150, 260]),  # 260 - 120 = 140 > 100
        (300, True, [150, 260, 300]),  # 300 - 150 = 150 > 100
        (360, False, [260, 300, 360]),  # 360 - 260 = 100, not > 100
    ]
    for at, allowed, kept in steps:
        clock.advance_to(T0 + at)
        assert fail(backoff)[0] is allowed, at
        assert backoff.failure_times == tuple(T0 + t for t in kept), at
    assert backoff.attempts == len(steps)


def test_failure_rate_can_restart_reads_the_clock_when_asked() -> None:
    # the rule compares the oldest kept failure with "now" at the time of the question
    clock = ManualClock(T0)
    backoff = RestartStrategy.failure_rate(1, 1000, delay_ms=0).create_backoff(clock=clock)
    assert fail(backoff)[0] is True
    clock.advance_by(500)
    assert fail(backoff)[0] is False
    clock.advance_to(T0 + 1000)
    assert backoff.can_restart() is False
    clock.advance_to(T0 + 1001)
    assert backoff.can_restart() is True


def test_failure_rate_with_max_one_and_failures_spread_out_restarts_forever() -> None:
    clock = ManualClock(T0)
    backoff = RestartStrategy.failure_rate(1, 1, delay_ms=0).create_backoff(clock=clock)
    for _ in range(10):
        assert fail(backoff)[0] is True
        clock.advance_by(2)
    assert backoff.attempts == 10
    assert len(backoff.failure_times) == 2


# ---------------------------------------------------------------------- exponential delay


def test_exponential_delay_defaults() -> None:
    strategy = RestartStrategy.exponential_delay()
    assert dataclasses.asdict(strategy) == {
        "initial_backoff_ms": 1000,
        "max_backoff_ms": 300_000,
        "backoff_multiplier": 2.0,
        "reset_backoff_threshold_ms": 3_600_000,
        "jitter_factor": 0.1,
        "attempts_before_reset_backoff": None,
    }


def test_exponential_delay_grows_by_the_multiplier_up_to_the_cap() -> None:
    clock = ManualClock(T0)
    backoff = exponential(clock, initial_backoff_ms=1000, max_backoff_ms=5000)
    delays = []
    for _ in range(6):
        allowed, delay = fail(backoff)
        assert allowed is True
        delays.append(delay)
        clock.advance_by(delay + 10)  # fails again soon after restarting
    # the first failure is long after "last failure = 0": reset to the initial backoff
    assert delays == [1000, 2000, 4000, 5000, 5000, 5000]
    assert backoff.current_backoff_ms == 5000
    assert backoff.attempts == 6


def test_exponential_delay_truncates_like_java_long_times_double() -> None:
    clock = ManualClock(T0)
    backoff = exponential(clock, initial_backoff_ms=3, max_backoff_ms=20, backoff_multiplier=1.5)
    delays = [fail(backoff)[1] for _ in range(7)]
    # 3 -> int(4.5)=4 -> 6 -> 9 -> int(13.5)=13 -> int(19.5)=19 -> min(28, 20)=20
    assert delays == [3, 4, 6, 9, 13, 19, 20]


def test_exponential_delay_multiplier_one_keeps_the_initial_backoff() -> None:
    clock = ManualClock(T0)
    backoff = exponential(clock, initial_backoff_ms=700, backoff_multiplier=1.0)
    assert [fail(backoff)[1] for _ in range(4)] == [700, 700, 700, 700]


def test_exponential_delay_resets_after_threshold_plus_current_backoff() -> None:
    # threshold 10 s; after failures with backoffs 1 s, 2 s, 4 s the current backoff is 4 s,
    # so the next failure resets only if it comes >= 10 s + 4 s after the last one
    for gap, expected in [(13_999, 8000), (14_000, 1000), (14_001, 1000)]:
        clock = ManualClock(T0)
        backoff = exponential(
            clock,
            initial_backoff_ms=1000,
            max_backoff_ms=60_000,
            reset_backoff_threshold_ms=10_000,
        )
        assert [fail(backoff)[1] for _ in range(3)] == [1000, 2000, 4000]
        clock.advance_by(gap)
        assert fail(backoff) == (True, expected), gap
        assert backoff.last_failure_ms == T0 + gap


def test_exponential_delay_last_failure_starts_at_the_epoch() -> None:
    # with a clock that reads 0 the first failure is not "long after" the (zero) last
    # failure, so the backoff grows at once: exactly Flink's rule
    clock = ManualClock(0)
    backoff = exponential(clock, initial_backoff_ms=1000, reset_backoff_threshold_ms=5000)
    assert backoff.last_failure_ms == 0
    assert fail(backoff)[1] == 2000
    # but a clock already past threshold + initial resets on the first failure
    clock = ManualClock(6000)
    backoff = exponential(clock, initial_backoff_ms=1000, reset_backoff_threshold_ms=5000)
    assert fail(backoff)[1] == 1000


def test_exponential_delay_jitter_stays_within_bounds() -> None:
    clock = ManualClock(T0)
    backoff = exponential(clock, initial_backoff_ms=1000, max_backoff_ms=4000, jitter_factor=0.1)
    backoff.notify_failure(BOOM)  # current = 1000
    draws = [backoff.backoff_ms() for _ in range(5000)]
    assert min(draws) == 900
    assert max(draws) == 1100
    assert len(set(draws)) == 201  # every integer in [900, 1100] shows up
    for _ in range(3):
        backoff.notify_failure(BOOM)  # 2000, 4000, 4000 (cap)
    assert backoff.current_backoff_ms == 4000
    draws = [backoff.backoff_ms() for _ in range(5000)]
    # jitter is +-400 but the result never exceeds the maximum backoff
    assert min(draws) == 3600
    assert max(draws) == 4000
    assert sum(d == 4000 for d in draws) > 2000  # the upper half collapses onto the cap


def test_exponential_delay_full_jitter_and_truncated_offset() -> None:
    clock = ManualClock(T0)
    backoff = exponential(clock, initial_backoff_ms=10, max_backoff_ms=1000, jitter_factor=1.0)
    backoff.notify_failure(BOOM)
    draws = {backoff.backoff_ms() for _ in range(2000)}
    assert draws == set(range(21))
    # offset = int(15 * 0.1) = 1
    backoff = exponential(clock, initial_backoff_ms=15, jitter_factor=0.1)
    backoff.notify_failure(BOOM)
    assert {backoff.backoff_ms() for _ in range(500)} == {14, 15, 16}
    # jitter 0: exactly the current backoff
    backoff = exponential(clock, initial_backoff_ms=15, jitter_factor=0.0)
    backoff.notify_failure(BOOM)
    assert {backoff.backoff_ms() for _ in range(50)} == {15}


def test_exponential_delay_jitter_is_reproducible_with_a_seeded_rng() -> None:
    strategy = RestartStrategy.exponential_delay(jitter_factor=0.5)

    def run(seed: int) -> list[int]:
        backoff = strategy.create_backoff(clock=ManualClock(T0), rng=random.Random(seed))
        return [fail(backoff)[1] for _ in range(8)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_exponential_delay_attempts_before_reset_backoff() -> None:
    clock = ManualClock(T0)
    backoff = exponential(
        clock,
        initial_backoff_ms=100,
        reset_backoff_threshold_ms=1000,
        attempts_before_reset_backoff=2,
    )
    assert fail(backoff) == (True, 100)
    assert backoff.attempts_since_reset == 1
    assert fail(backoff) == (True, 200)
    assert fail(backoff)[0] is False  # a third failure without a reset
    assert backoff.attempts_since_reset == 3
    # a quiet period resets both the backoff and the count
    clock.advance_by(1000 + 400)
    assert fail(backoff) == (True, 100)
    assert backoff.attempts_since_reset == 1
    assert backoff.attempts == 4


def test_exponential_delay_without_attempt_limit_restarts_forever() -> None:
    backoff = exponential(ManualClock(T0))
    assert all(fail(backoff)[0] for _ in range(200))
    assert backoff.current_backoff_ms == 300_000


# ----------------------------------------------------------------------------- no restart


def test_no_restart_never_restarts() -> None:
    backoff = RestartStrategy.no_restart().create_backoff()
    assert fail(backoff) == (False, 0)
    assert backoff.attempts == 1


# ------------------------------------------------------------------------------- defaults


def test_default_depends_on_checkpointing() -> None:
    assert RestartStrategy.default(checkpointing_enabled=False) == RestartStrategy.no_restart()
    assert isinstance(RestartStrategy.default(False), NoRestartStrategy)
    with_checkpoints = RestartStrategy.default(checkpointing_enabled=True)
    assert isinstance(with_checkpoints, ExponentialDelayRestartStrategy)
    assert with_checkpoints == RestartStrategy.exponential_delay()


def test_default_clock_is_wall_clock_epoch_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    now = system_clock_ms()
    after = time.time_ns() // 1_000_000
    assert before <= now <= after
    # with the wall clock the first failure is long after the epoch: initial backoff
    backoff = RestartStrategy.exponential_delay(jitter_factor=0.0).create_backoff()
    assert fail(backoff) == (True, 1000)
    assert isinstance(backoff, ExponentialDelayRestartBackoff)
    assert before <= backoff.last_failure_ms <= time.time_ns() // 1_000_000


def test_each_backoff_is_independent() -> None:
    strategy = RestartStrategy.fixed_delay(attempts=1, delay_ms=0)
    first, second = strategy.create_backoff(), strategy.create_backoff()
    fail(first)
    fail(first)
    assert first.can_restart() is False
    assert second.attempts == 0
    assert fail(second)[0] is True


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RestartStrategy.fixed_delay(attempts=-1), "attempts must be >= 0"),
        (lambda: RestartStrategy.fixed_delay(delay_ms=-1), "delay_ms must be >= 0"),
        (
            lambda: RestartStrategy.fixed_delay(delay_ms=timedelta(milliseconds=-1)),
            "delay_ms must be >= 0",
        ),
        (
            lambda: RestartStrategy.failure_rate(max_failures_per_interval=0),
            "max_failures_per_interval must be >= 1",
        ),
        (
            lambda: RestartStrategy.failure_rate(failure_rate_interval_ms=0),
            "failure_rate_interval_ms must be >= 1",
        ),
        (
            lambda: RestartStrategy.failure_rate(failure_rate_interval_ms=-5),
            "failure_rate_interval_ms must be >= 0",
        ),
        (lambda: RestartStrategy.failure_rate(delay_ms=-1), "delay_ms must be >= 0"),
        (
            lambda: RestartStrategy.exponential_delay(initial_backoff_ms=-1),
            "initial_backoff_ms must be >= 0",
        ),
        (
            lambda: RestartStrategy.exponential_delay(initial_backoff_ms=10, max_backoff_ms=5),
            r"initial_backoff_ms \(10\) must be <= max_backoff_ms \(5\)",
        ),
        (
            lambda: RestartStrategy.exponential_delay(backoff_multiplier=0.5),
            "backoff_multiplier must be >= 1",
        ),
        (
            lambda: RestartStrategy.exponential_delay(backoff_multiplier=float("inf")),
            "backoff_multiplier must be >= 1",
        ),
        (
            lambda: RestartStrategy.exponential_delay(reset_backoff_threshold_ms=-1),
            "reset_backoff_threshold_ms must be >= 0",
        ),
        (
            lambda: RestartStrategy.exponential_delay(jitter_factor=-0.1),
            r"jitter_factor must be in \[0.0, 1.0\]",
        ),
        (
            lambda: RestartStrategy.exponential_delay(jitter_factor=1.5),
            r"jitter_factor must be in \[0.0, 1.0\]",
        ),
        (
            lambda: RestartStrategy.exponential_delay(jitter_factor=float("nan")),
            "jitter_factor",
        ),
        (
            lambda: RestartStrategy.exponential_delay(attempts_before_reset_backoff=0),
            "attempts_before_reset_backoff must be >= 1",
        ),
        (lambda: RestartStrategy.fixed_delay(delay_ms=float("inf")), "finite"),  # type: ignore[arg-type]
        (lambda: FixedDelayRestartStrategy(attempts=-2, delay_ms=0), "attempts must be >= 0"),
    ],
)
def test_invalid_values_raise_value_errors(build: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidConfigurationError, match=message) as info:
        build()
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "build",
    [
        lambda: RestartStrategy.fixed_delay(attempts="3"),  # type: ignore[arg-type]
        lambda: RestartStrategy.fixed_delay(attempts=True),
        lambda: RestartStrategy.fixed_delay(attempts=2.0),  # type: ignore[arg-type]
        lambda: RestartStrategy.fixed_delay(delay_ms="1s"),  # type: ignore[arg-type]
        lambda: RestartStrategy.exponential_delay(jitter_factor="0.1"),  # type: ignore[arg-type]
        lambda: RestartStrategy.failure_rate(max_failures_per_interval=None),  # type: ignore[arg-type]
    ],
)
def test_wrong_types_raise_type_errors(build: Callable[[], object]) -> None:
    with pytest.raises(TypeError):
        build()


def test_boundary_values_are_accepted() -> None:
    assert RestartStrategy.fixed_delay(attempts=0, delay_ms=0).attempts == 0
    strategy = RestartStrategy.exponential_delay(
        initial_backoff_ms=0,
        max_backoff_ms=0,
        backoff_multiplier=1,
        reset_backoff_threshold_ms=0,
        jitter_factor=1,
        attempts_before_reset_backoff=1,
    )
    assert strategy.backoff_multiplier == 1.0
    assert strategy.jitter_factor == 1.0
    backoff = strategy.create_backoff(clock=ManualClock(T0))
    assert fail(backoff) == (True, 0)
    assert RestartStrategy.failure_rate(1, 1, 0).failure_rate_interval_ms == 1


# ------------------------------------------------------------------------ timedelta, repr


def test_durations_accept_timedelta() -> None:
    fixed = RestartStrategy.fixed_delay(attempts=2, delay_ms=timedelta(seconds=2, milliseconds=5))
    assert fixed.delay_ms == 2005
    assert fixed == RestartStrategy.fixed_delay(attempts=2, delay_ms=2005)
    rate = RestartStrategy.failure_rate(
        3, failure_rate_interval_ms=timedelta(minutes=5), delay_ms=timedelta(seconds=10)
    )
    assert (rate.failure_rate_interval_ms, rate.delay_ms) == (300_000, 10_000)
    expo = RestartStrategy.exponential_delay(
        initial_backoff_ms=timedelta(milliseconds=1500),
        max_backoff_ms=timedelta(minutes=2),
        reset_backoff_threshold_ms=timedelta(hours=2),
    )
    assert (expo.initial_backoff_ms, expo.max_backoff_ms, expo.reset_backoff_threshold_ms) == (
        1500,
        120_000,
        7_200_000,
    )
    assert fail(expo.create_backoff(clock=ManualClock(T0), rng=random.Random(1)))[0] is True


def test_repr_is_the_factory_call_and_round_trips() -> None:
    strategies = [
        RestartStrategy.fixed_delay(attempts=3, delay_ms=0),
        RestartStrategy.failure_rate(2, timedelta(seconds=30), 100),
        RestartStrategy.exponential_delay(attempts_before_reset_backoff=5),
        RestartStrategy.no_restart(),
    ]
    assert [repr(s) for s in strategies] == [
        "RestartStrategy.fixed_delay(attempts=3, delay_ms=0)",
        "RestartStrategy.failure_rate(max_failures_per_interval=2, "
        "failure_rate_interval_ms=30000, delay_ms=100)",
        "RestartStrategy.exponential_delay(initial_backoff_ms=1000, max_backoff_ms=300000, "
        "backoff_multiplier=2.0, reset_backoff_threshold_ms=3600000, jitter_factor=0.1, "
        "attempts_before_reset_backoff=5)",
        "RestartStrategy.no_restart()",
    ]
    for strategy in strategies:
        assert eval(repr(strategy), {"RestartStrategy": RestartStrategy}) == strategy


def test_strategies_are_immutable_hashable_values() -> None:
    strategy = RestartStrategy.fixed_delay(attempts=3, delay_ms=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        strategy.attempts = 4  # type: ignore[misc]
    assert strategy == RestartStrategy.fixed_delay(3, 10)
    assert strategy != RestartStrategy.fixed_delay(3, 11)
    never: RestartStrategy = RestartStrategy.no_restart()
    assert strategy != never
    assert len({strategy, RestartStrategy.fixed_delay(3, 10), never}) == 2


def test_backoff_reprs_show_their_state() -> None:
    clock = ManualClock(T0)
    backoff = RestartStrategy.failure_rate(2, 100, 0).create_backoff(clock=clock)
    backoff.notify_failure(BOOM)
    assert repr(backoff) == (
        f"FailureRateRestartBackoff(attempts=1, failure_times=[{T0}], max_failures=2, "
        "interval_ms=100, delay_ms=0)"
    )
    expo = exponential(clock)
    expo.notify_failure(BOOM)
    assert repr(expo) == (
        f"ExponentialDelayRestartBackoff(attempts=1, current_backoff_ms=1000, last_failure_ms={T0})"
    )


def test_module_docstring_example() -> None:
    result = doctest.testmod(restart_module, raise_on_error=False, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
