"""Restart strategies: when and how soon a failed job is restarted (Flink's rules).

A :class:`RestartStrategy` is an immutable description that users pass to
``env.set_restart_strategy(...)``. For every job run the runtime calls
:meth:`RestartStrategy.create_backoff` to get a stateful :class:`RestartBackoff`; on each
failure it calls :meth:`RestartBackoff.notify_failure`, then
:meth:`RestartBackoff.can_restart`, and if that is true it restarts the job after
:meth:`RestartBackoff.backoff_ms` milliseconds.

The four strategies follow Flink's ``*RestartBackoffTimeStrategy`` classes:

* ``fixed_delay(attempts, delay_ms)``: ``attempts`` restarts, each after ``delay_ms``.
* ``failure_rate(max_failures_per_interval, failure_rate_interval_ms, delay_ms)``: restart
  after ``delay_ms`` unless more than ``max_failures_per_interval`` failures happened
  within the interval.
* ``exponential_delay(...)``: restart forever (or until ``attempts_before_reset_backoff``
  consecutive quick failures), the delay doubling (``backoff_multiplier``) up to
  ``max_backoff_ms``, with random jitter, and back to ``initial_backoff_ms`` after a quiet
  period of ``reset_backoff_threshold_ms``.
* ``no_restart()``: a failure fails the job.

Time comes from an injectable clock (a zero-argument callable returning epoch
milliseconds, e.g. a :class:`flowkit.eventtime.clocks.ManualClock`) and jitter from an
injectable :class:`random.Random`, so that tests are deterministic.

Example:
    >>> strategy = RestartStrategy.fixed_delay(attempts=2, delay_ms=500)
    >>> strategy
    RestartStrategy.fixed_delay(attempts=2, delay_ms=500)
    >>> backoff = strategy.create_backoff(clock=lambda: 0)
    >>> backoff.notify_failure(RuntimeError("boom"))
    >>> backoff.can_restart(), backoff.backoff_ms()
    (True, 500)
    >>> backoff.notify_failure(RuntimeError("boom")); backoff.notify_failure(RuntimeError("x"))
    >>> backoff.can_restart(), backoff.attempts
    (False, 3)
"""

from __future__ import annotations

import datetime
import math
import random
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from flowkit.errors import InvalidConfigurationError
from flowkit.eventtime.watermarks import to_millis

__all__ = [
    "ExponentialDelayRestartBackoff",
    "ExponentialDelayRestartStrategy",
    "FailureRateRestartBackoff",
    "FailureRateRestartStrategy",
    "FixedDelayRestartBackoff",
    "FixedDelayRestartStrategy",
    "NoRestartBackoff",
    "NoRestartStrategy",
    "RestartBackoff",
    "RestartStrategies",
    "RestartStrategy",
    "system_clock_ms",
]

DurationLike = int | datetime.timedelta
"""Milliseconds as an ``int``, or a ``datetime.timedelta``."""

ClockFn = Callable[[], int]
"""A zero-argument callable returning the current time in epoch milliseconds."""


def system_clock_ms() -> int:
    """The wall-clock time in epoch milliseconds (the default clock of every backoff)."""
    return time.time_ns() // 1_000_000


def _duration(value: DurationLike, name: str) -> int:
    """``value`` in milliseconds; raises ``InvalidConfigurationError`` if negative."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidConfigurationError(f"{name} must be a finite duration, got {value!r}")
    ms = to_millis(value, name)
    if ms < 0:
        raise InvalidConfigurationError(f"{name} must be >= 0 ms, got {value!r}")
    return ms


def _count(value: int | None, name: str, minimum: int) -> int:
    """``value`` checked to be an int of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise InvalidConfigurationError(f"{name} must be >= {minimum}, got {value}")
    return value


# --------------------------------------------------------------------------------------
# Stateful backoffs (one per job run)
# --------------------------------------------------------------------------------------


class RestartBackoff(ABC):
    """The restart decision for one job run: told about failures, says whether and when.

    The caller's protocol, on each failure: ``notify_failure(cause)``, then
    ``can_restart()``; if true, restart after ``backoff_ms()`` milliseconds.
    """

    def __init__(self) -> None:
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """How many failures have been notified so far."""
        return self._attempts

    def notify_failure(self, cause: BaseException) -> None:
        """Record a failure of the job (``cause`` is the error that failed it)."""
        self._attempts += 1
        self._on_failure(cause)

    @abstractmethod
    def _on_failure(self, cause: BaseException) -> None:
        """Strategy-specific bookkeeping for one failure (``attempts`` already counts it)."""

    @abstractmethod
    def can_restart(self) -> bool:
        """Whether the job may be restarted after the failures notified so far."""

    @abstractmethod
    def backoff_ms(self) -> int:
        """Milliseconds to wait before the restart (only meaningful if ``can_restart()``)."""


class NoRestartBackoff(RestartBackoff):
    """Never restarts: the first failure fails the job."""

    def _on_failure(self, cause: BaseException) -> None:
        pass

    def can_restart(self) -> bool:
        return False

    def backoff_ms(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"NoRestartBackoff(attempts={self._attempts})"


class FixedDelayRestartBackoff(RestartBackoff):
    """Restarts at most ``max_attempts`` times, each after ``delay_ms``.

    Rule: ``notify_failure: attempt += 1``; ``can_restart: attempt <= max_attempts``.
    """

    def __init__(self, max_attempts: int, delay_ms: int) -> None:
        super().__init__()
        self._max_attempts = max_attempts
        self._delay_ms = delay_ms

    def _on_failure(self, cause: BaseException) -> None:
        pass  # the attempt counter is all the state this strategy needs

    def can_restart(self) -> bool:
        return self._attempts <= self._max_attempts

    def backoff_ms(self) -> int:
        return self._delay_ms

    def __repr__(self) -> str:
        return (
            f"FixedDelayRestartBackoff(attempts={self._attempts}, "
            f"max_attempts={self._max_attempts}, delay_ms={self._delay_ms})"
        )


class FailureRateRestartBackoff(RestartBackoff):
    """Restarts unless too many failures happened within a sliding interval.

    Keeps the times of the most recent failures (at most ``max_failures + 1``). Rule:

    * ``notify_failure``: if more than ``max_failures`` times are kept, drop the oldest;
      then append now.
    * ``can_restart``: if more than ``max_failures`` times are kept, true only if
      ``now - oldest > interval_ms`` (strictly: a failure exactly ``interval_ms`` after
      the oldest kept one still counts as inside the interval); otherwise true.

    So with ``max_failures = n`` the job fails once ``n + 1`` failures fall within
    ``interval_ms`` milliseconds (inclusive) of each other.
    """

    def __init__(self, max_failures: int, interval_ms: int, delay_ms: int, clock: ClockFn) -> None:
        super().__init__()
        self._max_failures = max_failures
        self._interval_ms = interval_ms
        self._delay_ms = delay_ms
        self._clock = clock
        self._failure_times: deque[int] = deque()

    @property
    def failure_times(self) -> tuple[int, ...]:
        """The failure times currently kept, oldest first."""
        return tuple(self._failure_times)

    def _on_failure(self, cause: BaseException) -> None:
        if len(self._failure_times) > self._max_failures:
            self._failure_times.popleft()
        self._failure_times.append(self._clock())

    def can_restart(self) -> bool:
        if len(self._failure_times) > self._max_failures:
            return self._clock() - self._failure_times[0] > self._interval_ms
        return True

    def backoff_ms(self) -> int:
        return self._delay_ms

    def __repr__(self) -> str:
        return (
            f"FailureRateRestartBackoff(attempts={self._attempts}, "
            f"failure_times={list(self._failure_times)}, max_failures={self._max_failures}, "
            f"interval_ms={self._interval_ms}, delay_ms={self._delay_ms})"
        )


class ExponentialDelayRestartBackoff(RestartBackoff):
    """Restarts with a growing delay that falls back to the initial one after a quiet time.

    The current backoff starts at ``initial_backoff_ms`` and the last failure time at 0
    (the epoch), so the first failure with a real clock always resets to the initial
    backoff. Rule of ``notify_failure`` at time ``now``:

    * if ``now - last_failure >= reset_threshold_ms + current``: ``current = initial``
      (and the count of attempts since the reset starts again at 1);
    * otherwise: ``current = int(current * multiplier)`` if ``current < max``, then
      clamped into ``[initial, max]`` (and one more attempt since the reset);
    * ``last_failure = now``.

    ``can_restart`` is true unless ``attempts_before_reset`` is set and more failures than
    that happened since the backoff was last reset. ``backoff_ms`` is
    ``min(current + jitter, max)`` where ``jitter`` is a uniformly random integer in
    ``[-int(current * jitter_factor), +int(current * jitter_factor)]``, drawn on each call.
    """

    def __init__(
        self,
        initial_backoff_ms: int,
        max_backoff_ms: int,
        backoff_multiplier: float,
        reset_backoff_threshold_ms: int,
        jitter_factor: float,
        attempts_before_reset_backoff: int | None,
        clock: ClockFn,
        rng: random.Random,
    ) -> None:
        super().__init__()
        self._initial = initial_backoff_ms
        self._max = max_backoff_ms
        self._multiplier = backoff_multiplier
        self._reset_threshold = reset_backoff_threshold_ms
        self._jitter_factor = jitter_factor
        self._attempts_before_reset = attempts_before_reset_backoff
        self._clock = clock
        self._rng = rng
        self._current = initial_backoff_ms
        self._last_failure = 0
        self._attempts_since_reset = 0

    @property
    def current_backoff_ms(self) -> int:
        """The current backoff before jitter."""
        return self._current

    @property
    def last_failure_ms(self) -> int:
        """Time of the last notified failure (0 before the first one)."""
        return self._last_failure

    @property
    def attempts_since_reset(self) -> int:
        """Failures notified since the backoff was last reset to its initial value."""
        return self._attempts_since_reset

    def _on_failure(self, cause: BaseException) -> None:
        now = self._clock()
        if now - self._last_failure >= self._reset_threshold + self._current:
            self._current = self._initial
            self._attempts_since_reset = 1
        else:
            if self._current < self._max:
                # Java's ``long *= double`` truncates toward zero
                self._current = int(self._current * self._multiplier)
            self._current = max(self._initial, min(self._current, self._max))
            self._attempts_since_reset += 1
        self._last_failure = now

    def can_restart(self) -> bool:
        if self._attempts_before_reset is None:
            return True
        return self._attempts_since_reset <= self._attempts_before_reset

    def backoff_ms(self) -> int:
        offset = int(self._current * self._jitter_factor)
        jitter = self._rng.randint(-offset, offset) if offset > 0 else 0
        return min(self._current + jitter, self._max)

    def __repr__(self) -> str:
        return (
            f"ExponentialDelayRestartBackoff(attempts={self._attempts}, "
            f"current_backoff_ms={self._current}, last_failure_ms={self._last_failure})"
        )


# --------------------------------------------------------------------------------------
# Immutable descriptions (what users configure)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class RestartStrategy(ABC):
    """An immutable description of how a failed job is restarted.

    Build one with the static factories (:meth:`fixed_delay`, :meth:`exponential_delay`,
    :meth:`failure_rate`, :meth:`no_restart`, :meth:`default`); durations are milliseconds
    (``int``) or ``datetime.timedelta``. Strategies compare equal by value and their repr
    is the factory call that builds them.
    """

    @abstractmethod
    def create_backoff(
        self, clock: ClockFn | None = None, rng: random.Random | None = None
    ) -> RestartBackoff:
        """A fresh stateful backoff for one job run.

        Args:
            clock: zero-argument callable returning epoch milliseconds; defaults to the
                wall clock.
            rng: random source for jitter; defaults to a new unseeded ``random.Random``.
        """

    # -- factories --------------------------------------------------------------------

    @staticmethod
    def fixed_delay(attempts: int = 1, delay_ms: DurationLike = 1000) -> FixedDelayRestartStrategy:
        """Restart at most ``attempts`` times, each ``delay_ms`` after the failure.

        Args:
            attempts: number of restarts allowed (0 means none); must be >= 0.
            delay_ms: delay before each restart; must be >= 0.

        Raises:
            InvalidConfigurationError: (a ``ValueError``) on invalid values.
        """
        return FixedDelayRestartStrategy(
            attempts=_count(attempts, "attempts", 0),
            delay_ms=_duration(delay_ms, "delay_ms"),
        )

    @staticmethod
    def exponential_delay(
        initial_backoff_ms: DurationLike = 1000,
        max_backoff_ms: DurationLike = 300_000,
        backoff_multiplier: float = 2.0,
        reset_backoff_threshold_ms: DurationLike = 3_600_000,
        jitter_factor: float = 0.1,
        attempts_before_reset_backoff: int | None = None,
    ) -> ExponentialDelayRestartStrategy:
        """Restart with an exponentially growing delay (Flink's default with checkpoints).

        Args:
            initial_backoff_ms: first delay, and the delay after a reset; >= 0.
            max_backoff_ms: upper bound of the delay; >= ``initial_backoff_ms``.
            backoff_multiplier: growth factor per quick failure; >= 1.
            reset_backoff_threshold_ms: quiet time (plus the current backoff) after which
                the delay returns to ``initial_backoff_ms``; >= 0.
            jitter_factor: relative random spread of each delay, in ``[0, 1]``.
            attempts_before_reset_backoff: maximum failures between two resets before the
                job fails; ``None`` (default) means unlimited, otherwise >= 1.

        Raises:
            InvalidConfigurationError: (a ``ValueError``) on invalid values.
        """
        initial = _duration(initial_backoff_ms, "initial_backoff_ms")
        maximum = _duration(max_backoff_ms, "max_backoff_ms")
        if initial > maximum:
            raise InvalidConfigurationError(
                f"initial_backoff_ms ({initial}) must be <= max_backoff_ms ({maximum})"
            )
        return ExponentialDelayRestartStrategy(
            initial_backoff_ms=initial,
            max_backoff_ms=maximum,
            backoff_multiplier=_factor(backoff_multiplier, "backoff_multiplier", 1.0, None),
            reset_backoff_threshold_ms=_duration(
                reset_backoff_threshold_ms, "reset_backoff_threshold_ms"
            ),
            jitter_factor=_factor(jitter_factor, "jitter_factor", 0.0, 1.0),
            attempts_before_reset_backoff=(
                None
                if attempts_before_reset_backoff is None
                else _count(attempts_before_reset_backoff, "attempts_before_reset_backoff", 1)
            ),
        )

    @staticmethod
    def failure_rate(
        max_failures_per_interval: int = 1,
        failure_rate_interval_ms: DurationLike = 60_000,
        delay_ms: DurationLike = 1000,
    ) -> FailureRateRestartStrategy:
        """Restart after ``delay_ms`` unless the failure rate is exceeded.

        The job fails when ``max_failures_per_interval + 1`` failures happen within
        ``failure_rate_interval_ms`` (inclusive).

        Args:
            max_failures_per_interval: failures tolerated per interval; >= 1.
            failure_rate_interval_ms: length of the sliding interval; >= 1.
            delay_ms: delay before each restart; >= 0.

        Raises:
            InvalidConfigurationError: (a ``ValueError``) on invalid values.
        """
        interval = _duration(failure_rate_interval_ms, "failure_rate_interval_ms")
        if interval < 1:
            raise InvalidConfigurationError(
                f"failure_rate_interval_ms must be >= 1 ms, got {failure_rate_interval_ms!r}"
            )
        return FailureRateRestartStrategy(
            max_failures_per_interval=_count(
                max_failures_per_interval, "max_failures_per_interval", 1
            ),
            failure_rate_interval_ms=interval,
            delay_ms=_duration(delay_ms, "delay_ms"),
        )

    @staticmethod
    def no_restart() -> NoRestartStrategy:
        """Never restart: the first failure fails the job."""
        return NoRestartStrategy()

    @staticmethod
    def default(checkpointing_enabled: bool) -> RestartStrategy:
        """Flink's default: no restart without checkpointing, exponential delay with it."""
        if checkpointing_enabled:
            return RestartStrategy.exponential_delay()
        return RestartStrategy.no_restart()


def _factor(value: float, name: str, low: float, high: float | None) -> float:
    """``value`` checked to be a finite real number in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InvalidConfigurationError(f"{name} must be {bounds}, got {value!r}")
    return float(value)


@dataclass(frozen=True, repr=False)
class NoRestartStrategy(RestartStrategy):
    """See :meth:`RestartStrategy.no_restart`."""

    def create_backoff(
        self, clock: ClockFn | None = None, rng: random.Random | None = None
    ) -> NoRestartBackoff:
        return NoRestartBackoff()

    def __repr__(self) -> str:
        return "RestartStrategy.no_restart()"


@dataclass(frozen=True, repr=False)
class FixedDelayRestartStrategy(RestartStrategy):
    """See :meth:`RestartStrategy.fixed_delay`."""

    attempts: int
    delay_ms: int

    def __post_init__(self) -> None:
        _count(self.attempts, "attempts", 0)
        _count(self.delay_ms, "delay_ms", 0)

    def create_backoff(
        self, clock: ClockFn | None = None, rng: random.Random | None = None
    ) -> FixedDelayRestartBackoff:
        return FixedDelayRestartBackoff(self.attempts, self.delay_ms)

    def __repr__(self) -> str:
        return f"RestartStrategy.fixed_delay(attempts={self.attempts}, delay_ms={self.delay_ms})"


@dataclass(frozen=True, repr=False)
class FailureRateRestartStrategy(RestartStrategy):
    """See :meth:`RestartStrategy.failure_rate`."""

    max_failures_per_interval: int
    failure_rate_interval_ms: int
    delay_ms: int

    def __post_init__(self) -> None:
        _count(self.max_failures_per_interval, "max_failures_per_interval", 1)
        _count(self.failure_rate_interval_ms, "failure_rate_interval_ms", 1)
        _count(self.delay_ms, "delay_ms", 0)

    def create_backoff(
        self, clock: ClockFn | None = None, rng: random.Random | None = None
    ) -> FailureRateRestartBackoff:
        return FailureRateRestartBackoff(
            self.max_failures_per_interval,
            self.failure_rate_interval_ms,
            self.delay_ms,
            clock if clock is not None else system_clock_ms,
        )

    def __repr__(self) -> str:
        return (
            "RestartStrategy.failure_rate("
            f"max_failures_per_interval={self.max_failures_per_interval}, "
            f"failure_rate_interval_ms={self.failure_rate_interval_ms}, "
            f"delay_ms={self.delay_ms})"
        )


@dataclass(frozen=True, repr=False)
class ExponentialDelayRestartStrategy(RestartStrategy):
    """See :meth:`RestartStrategy.exponential_delay`."""

    initial_backoff_ms: int
    max_backoff_ms: int
    backoff_multiplier: float
    reset_backoff_threshold_ms: int
    jitter_factor: float
    attempts_before_reset_backoff: int | None

    def __post_init__(self) -> None:
        _count(self.initial_backoff_ms, "initial_backoff_ms", 0)
        _count(self.max_backoff_ms, "max_backoff_ms", self.initial_backoff_ms)
        _factor(self.backoff_multiplier, "backoff_multiplier", 1.0, None)
        _count(self.reset_backoff_threshold_ms, "reset_backoff_threshold_ms", 0)
        _factor(self.jitter_factor, "jitter_factor", 0.0, 1.0)
        if self.attempts_before_reset_backoff is not None:
            _count(self.attempts_before_reset_backoff, "attempts_before_reset_backoff", 1)

    def create_backoff(
        self, clock: ClockFn | None = None, rng: random.Random | None = None
    ) -> ExponentialDelayRestartBackoff:
        return ExponentialDelayRestartBackoff(
            self.initial_backoff_ms,
            self.max_backoff_ms,
            self.backoff_multiplier,
            self.reset_backoff_threshold_ms,
            self.jitter_factor,
            self.attempts_before_reset_backoff,
            clock if clock is not None else system_clock_ms,
            rng if rng is not None else random.Random(),
        )

    def __repr__(self) -> str:
        return (
            "RestartStrategy.exponential_delay("
            f"initial_backoff_ms={self.initial_backoff_ms}, "
            f"max_backoff_ms={self.max_backoff_ms}, "
            f"backoff_multiplier={self.backoff_multiplier!r}, "
            f"reset_backoff_threshold_ms={self.reset_backoff_threshold_ms}, "
            f"jitter_factor={self.jitter_factor!r}, "
            f"attempts_before_reset_backoff={self.attempts_before_reset_backoff!r})"
        )


class RestartStrategies:
    """PyFlink's restart strategy factories; they return :class:`RestartStrategy`
    objects (``env.set_restart_strategy(RestartStrategies.fixed_delay_restart(3, 1000))``).

    Durations are milliseconds (``int``) or ``datetime.timedelta`` (PyFlink's ``Time``).

    Example:
        >>> RestartStrategies.fixed_delay_restart(3, 10_000)
        RestartStrategy.fixed_delay(attempts=3, delay_ms=10000)
    """

    @staticmethod
    def no_restart() -> RestartStrategy:
        return RestartStrategy.no_restart()

    @staticmethod
    def fall_back_restart() -> RestartStrategy | None:
        """The default strategy (none without checkpointing, exponential delay with it);
        ``env.set_restart_strategy`` takes it (None) as "use the default"."""
        return None

    @staticmethod
    def fixed_delay_restart(
        restart_attempts: int, delay_between_attempts: DurationLike
    ) -> RestartStrategy:
        return RestartStrategy.fixed_delay(restart_attempts, delay_between_attempts)

    @staticmethod
    def failure_rate_restart(
        failure_rate: int, failure_interval: DurationLike, delay_interval: DurationLike
    ) -> RestartStrategy:
        return RestartStrategy.failure_rate(failure_rate, failure_interval, delay_interval)

    @staticmethod
    def exponential_delay_restart(
        initial_backoff: DurationLike,
        max_backoff: DurationLike,
        backoff_multiplier: float,
        reset_backoff_threshold: DurationLike,
        jitter_factor: float,
    ) -> RestartStrategy:
        return RestartStrategy.exponential_delay(
            initial_backoff, max_backoff, backoff_multiplier, reset_backoff_threshold, jitter_factor
        )
