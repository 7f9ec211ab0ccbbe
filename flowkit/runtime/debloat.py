"""Adaptive buffer sizing (Flink's buffer debloating).

A consumer measures how many bytes per second it takes from its input channels and, every
``period_ms``, works out a buffer size such that the data in flight on its input can be
consumed in about ``target_ms``. When that size differs enough from the one announced
last, it announces it to the producers of its channels, which then fill each buffer only
up to that size. The number of buffers is unchanged: only how much of each is used.

Three pieces, each usable on its own:

* :class:`BufferDebloatConfig`: the options (Flink's ``taskmanager.network.memory.
  buffer-debloat.*`` and ``min-segment-size``), validated when created;
* :class:`ThroughputCalculator`: bytes consumed divided by the time the consumer was not
  waiting idly for input;
* :class:`BufferSizeEMA` and :class:`BufferDebloater`: the size computation, exactly as
  Flink's ``BufferSizeEMA`` / ``BufferDebloater`` compute it (integer arithmetic where
  Flink uses longs, Java's ``Math.round``, the growth cap of twice the current size, and
  the rule that skips small changes but always announces the bounds).

Example:
    >>> debloater = BufferDebloater(BufferDebloatConfig(enabled=True), buffer_size=32768)
    >>> debloater.recalculate(throughput_bytes_per_second=0, buffers_in_use=4)
    >>> debloater.last_announced
    32768
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from flowkit.errors import InvalidConfigurationError

__all__ = [
    "DEFAULT_MIN_BUFFER_SIZE",
    "BufferDebloatConfig",
    "BufferDebloater",
    "BufferSizeEMA",
    "ThroughputCalculator",
    "java_round",
]

#: Flink's ``taskmanager.memory.min-segment-size``: the smallest size ever announced.
DEFAULT_MIN_BUFFER_SIZE = 256

_MILLIS_PER_SECOND = 1000


def _check_int(name: str, value: object, minimum: int) -> None:
    if type(value) is not int:
        raise InvalidConfigurationError(
            f"buffer debloating: {name} must be an int, got {type(value).__name__} {value!r}"
        )
    if value < minimum:
        raise InvalidConfigurationError(
            f"buffer debloating: {name} must be >= {minimum}, got {value}"
        )


def java_round(value: float) -> int:
    """Round to the nearest integer, halves up (towards positive infinity).

    This is Java's ``Math.round(double)`` (``floor(value + 1/2)`` computed exactly), which
    differs from Python's ``round`` (halves to even): ``java_round(2.5) == 3``,
    ``java_round(-2.5) == -2``.
    """
    floor = math.floor(value)
    # value - floor is exact for doubles, so this does not suffer from value + 0.5 rounding.
    return floor + 1 if value - floor >= 0.5 else floor


@dataclass(frozen=True, slots=True)
class BufferDebloatConfig:
    """Options of adaptive buffer sizing (defaults are Flink's).

    Attributes:
        enabled: whether consumers recompute and announce buffer sizes at all.
        target_ms: time in which the data in flight on a consumer's input should be
            consumed (``buffer-debloat.target``, 1 s).
        period_ms: how often the size is recomputed (``buffer-debloat.period``, 200 ms).
        samples: number of samples of the exponential moving average; its smoothing
            factor is ``2 / (samples + 1)`` (``buffer-debloat.samples``, 20).
        threshold_percentages: smallest change, in percent of the size announced last,
            that is announced (``buffer-debloat.threshold-percentages``, 25); the bounds
            are announced regardless.
        min_buffer_size: smallest size ever announced (``min-segment-size``, 256 B).
        max_buffer_size: largest size ever announced and the size announced first; None
            means the channels' ``buffer_size`` (see :meth:`resolve`).

    Raises:
        InvalidConfigurationError: an option is not an int or out of range, or
            ``min_buffer_size > max_buffer_size``.
    """

    enabled: bool = False
    target_ms: int = 1000
    period_ms: int = 200
    samples: int = 20
    threshold_percentages: int = 25
    min_buffer_size: int = DEFAULT_MIN_BUFFER_SIZE
    max_buffer_size: int | None = None

    def __post_init__(self) -> None:
        if type(self.enabled) is not bool:
            raise InvalidConfigurationError(
                f"buffer debloating: enabled must be a bool, got {self.enabled!r}"
            )
        _check_int("target_ms", self.target_ms, 1)
        _check_int("period_ms", self.period_ms, 1)
        _check_int("samples", self.samples, 1)
        _check_int("threshold_percentages", self.threshold_percentages, 0)
        _check_int("min_buffer_size", self.min_buffer_size, 1)
        if self.max_buffer_size is not None:
            _check_int("max_buffer_size", self.max_buffer_size, 1)
            if self.min_buffer_size > self.max_buffer_size:
                raise InvalidConfigurationError(
                    f"buffer debloating: min_buffer_size ({self.min_buffer_size}) must be "
                    f"<= max_buffer_size ({self.max_buffer_size})"
                )

    @property
    def period_seconds(self) -> float:
        """``period_ms`` in seconds (for ``loop.call_later``)."""
        return self.period_ms / _MILLIS_PER_SECOND

    def resolve(self, buffer_size: int) -> BufferDebloatConfig:
        """This configuration with ``max_buffer_size`` fixed for channels of ``buffer_size``.

        ``max_buffer_size`` None becomes ``buffer_size``; a producer cannot fill more than
        a whole buffer, so a larger explicit maximum is an error, and so is a minimum
        above the buffer size.

        Raises:
            InvalidConfigurationError: ``max_buffer_size > buffer_size`` or
                ``min_buffer_size > buffer_size``.
        """
        _check_int("buffer_size", buffer_size, 1)
        maximum = buffer_size if self.max_buffer_size is None else self.max_buffer_size
        if maximum > buffer_size:
            raise InvalidConfigurationError(
                f"buffer debloating: max_buffer_size ({maximum}) must be <= buffer_size "
                f"({buffer_size}); a buffer cannot be filled beyond its size"
            )
        if self.min_buffer_size > maximum:
            raise InvalidConfigurationError(
                f"buffer debloating: min_buffer_size ({self.min_buffer_size}) must be <= "
                f"buffer_size ({maximum}); lower min_buffer_size or raise buffer_size"
            )
        if maximum == self.max_buffer_size:
            return self
        return replace(self, max_buffer_size=maximum)


class BufferSizeEMA:
    """Exponential moving average of the desirable buffer size (Flink's ``BufferSizeEMA``).

    The state starts at ``max_buffer_size``. Each sample is capped at twice the current
    average, so that the size grows at most as fast as it can shrink, and the average is
    kept within ``[min_buffer_size, max_buffer_size]``.

    Args:
        max_buffer_size: upper bound and starting value.
        min_buffer_size: lower bound.
        samples: number of samples; the smoothing factor is ``2 / (samples + 1)``.
        starting_size: start from this value instead of ``max_buffer_size``.
    """

    __slots__ = ("_alpha", "_last", "max_buffer_size", "min_buffer_size")

    def __init__(
        self,
        max_buffer_size: int,
        min_buffer_size: int,
        samples: int,
        starting_size: int | None = None,
    ) -> None:
        if min_buffer_size < 1 or max_buffer_size < min_buffer_size:
            raise InvalidConfigurationError(
                f"buffer debloating: need 1 <= min_buffer_size ({min_buffer_size}) "
                f"<= max_buffer_size ({max_buffer_size})"
            )
        if samples < 1:
            raise InvalidConfigurationError(
                f"buffer debloating: samples must be >= 1, got {samples}"
            )
        self.max_buffer_size = max_buffer_size
        self.min_buffer_size = min_buffer_size
        self._alpha = 2.0 / (samples + 1)
        self._last = float(max_buffer_size if starting_size is None else starting_size)

    @property
    def alpha(self) -> float:
        """The smoothing factor ``2 / (samples + 1)``."""
        return self._alpha

    @property
    def last_size(self) -> float:
        """The current (unrounded) average."""
        return self._last

    def calculate_buffer_size(self, total_buffer_size: int, total_buffers: int) -> int:
        """Add one sample and return the new average, rounded half up.

        Args:
            total_buffer_size: bytes that should be in flight (>= 0).
            total_buffers: buffers they are spread over (> 0).

        Raises:
            ValueError: ``total_buffer_size < 0`` or ``total_buffers <= 0``.
        """
        if total_buffer_size < 0:
            raise ValueError(f"total_buffer_size must be >= 0, got {total_buffer_size}")
        if total_buffers <= 0:
            raise ValueError(f"total_buffers must be > 0, got {total_buffers}")
        last = self._last
        # Both operands become doubles before dividing, as in Java.
        desirable = min(float(total_buffer_size) / float(total_buffers), 2.0 * last)
        last += self._alpha * (desirable - last)
        last = max(float(self.min_buffer_size), min(last, float(self.max_buffer_size)))
        self._last = last
        return java_round(last)


class BufferDebloater:
    """Computes the buffer size a consumer announces to its producers (Flink's
    ``BufferDebloater``).

    Call :meth:`recalculate` once per period with the throughput measured over it and
    the number of buffers in use on the input; announce what it returns (None: keep the
    current size).

    Args:
        config: the options; ``config.max_buffer_size`` may be None when ``buffer_size``
            is given (see :meth:`BufferDebloatConfig.resolve`).
        buffer_size: the channels' buffer size, used to resolve ``config``.

    Raises:
        InvalidConfigurationError: the maximum size is unknown (``config.max_buffer_size``
            and ``buffer_size`` both None) or the configuration does not fit the buffers.

    Example:
        >>> config = BufferDebloatConfig(samples=1, min_buffer_size=50, max_buffer_size=2400)
        >>> BufferDebloater(config).recalculate(1200, 0)
        1200
    """

    __slots__ = (
        "_ema",
        "_estimated_ms",
        "_last_announced",
        "_target_ms",
        "_threshold_factor",
        "config",
        "max_buffer_size",
        "min_buffer_size",
    )

    def __init__(self, config: BufferDebloatConfig, buffer_size: int | None = None) -> None:
        if buffer_size is not None:
            config = config.resolve(buffer_size)
        if config.max_buffer_size is None:
            raise InvalidConfigurationError(
                "buffer debloating: max_buffer_size is unknown; pass buffer_size or set "
                "max_buffer_size"
            )
        self.config = config
        self.max_buffer_size: int = config.max_buffer_size
        self.min_buffer_size = config.min_buffer_size
        self._target_ms = config.target_ms
        self._threshold_factor = config.threshold_percentages / 100.0
        self._ema = BufferSizeEMA(self.max_buffer_size, self.min_buffer_size, config.samples)
        self._last_announced = self.max_buffer_size
        self._estimated_ms = 0

    @property
    def last_announced(self) -> int:
        """The size announced last (``max_buffer_size`` before the first announcement)."""
        return self._last_announced

    @property
    def estimated_time_to_consume_ms(self) -> int:
        """Time, in whole milliseconds, to consume the buffers in use at the size computed
        by the last :meth:`recalculate` (announced or not) and the throughput given to it;
        0 before the first call."""
        return self._estimated_ms

    @property
    def ema(self) -> BufferSizeEMA:
        """The moving average behind the computed sizes."""
        return self._ema

    def recalculate(self, throughput_bytes_per_second: int, buffers_in_use: int) -> int | None:
        """Compute the size for the last period; return it if it is to be announced.

        Args:
            throughput_bytes_per_second: bytes per second the consumer took from its
                input over the last period (>= 0).
            buffers_in_use: buffers of the consumer's input in use; 0 counts as 1.

        Returns:
            The new size (announce it to every producer of the input), or None when the
            change is too small to be worth announcing.

        Raises:
            ValueError: a negative throughput.
        """
        if throughput_bytes_per_second < 0:
            raise ValueError(
                f"throughput_bytes_per_second must be >= 0, got {throughput_bytes_per_second}"
            )
        buffers = max(1, buffers_in_use)
        desired_total = throughput_bytes_per_second * self._target_ms // _MILLIS_PER_SECOND
        new_size = self._ema.calculate_buffer_size(desired_total, buffers)
        self._estimated_ms = (
            new_size * buffers * _MILLIS_PER_SECOND // max(1, throughput_bytes_per_second)
        )
        if self.skip_update(new_size):
            return None
        self._last_announced = new_size
        return new_size

    def skip_update(self, new_size: int) -> bool:
        """Whether ``new_size`` is not worth announcing after :attr:`last_announced`.

        Unchanged sizes are skipped; sizes at or beyond a bound are always announced;
        others only if they differ from the last announced size by at least
        ``threshold_percentages`` percent of it, truncated to whole bytes (computed in
        floating point as Flink does: 29 % of 100 bytes is 28 bytes there).
        """
        last = self._last_announced
        if new_size == last:
            return True
        if new_size <= self.min_buffer_size or new_size >= self.max_buffer_size:
            return False
        # As in Java: the factor is a double, the product is truncated to whole bytes.
        delta = int(last * self._threshold_factor)
        return abs(new_size - last) < delta


class ThroughputCalculator:
    """Bytes a consumer takes per second of the time it was not waiting idly for input.

    The consumer calls :meth:`record` for every buffer it takes, :meth:`pause_measurement`
    before it waits for input and :meth:`resume_measurement` when it wakes up, and
    :meth:`calculate_throughput` once per period, which starts a new period. Time spent
    paused does not count, so a consumer that is fast but starved is not mistaken for a
    slow one (Flink's ``ThroughputCalculator``).

    Args:
        clock: monotonic time in seconds (``time.monotonic`` or ``loop.time``); used when
            a method is called without ``now``.

    Example:
        >>> t = iter([0.0, 0.5])
        >>> calc = ThroughputCalculator(clock=lambda: next(t))
        >>> calc.record(1000)
        >>> calc.calculate_throughput()
        2000
    """

    __slots__ = ("_bytes", "_clock", "_measured", "_start", "_throughput")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._bytes = 0
        #: Seconds measured (not paused) in the current period, up to ``_start``.
        self._measured = 0.0
        #: When the running measurement started; None while paused.
        self._start: float | None = None
        self._throughput = 0

    @property
    def paused(self) -> bool:
        """True while time does not count (the consumer waits idly for input)."""
        return self._start is None

    @property
    def accumulated_bytes(self) -> int:
        """Bytes recorded in the current period."""
        return self._bytes

    def record(self, nbytes: int) -> None:
        """Count ``nbytes`` taken from the input; resumes a paused measurement."""
        if self._start is None:
            self._start = self._clock()
        self._bytes += nbytes

    def pause_measurement(self, now: float | None = None) -> None:
        """The consumer starts waiting idly: stop counting time (no effect if paused)."""
        start = self._start
        if start is not None:
            if now is None:
                now = self._clock()
            self._measured += max(0.0, now - start)
            self._start = None

    def resume_measurement(self, now: float | None = None) -> None:
        """The consumer has work again: count time from ``now`` (no effect if running)."""
        if self._start is None:
            self._start = self._clock() if now is None else now

    def calculate_throughput(self, now: float | None = None) -> int:
        """Bytes per second over the measured time of the period now ending.

        Starts a new period (a running measurement keeps running). When no time was
        measured at all in the period, returns the previous result (0 at first).
        """
        start = self._start
        if start is not None:
            if now is None:
                now = self._clock()
            self._measured += max(0.0, now - start)
            self._start = now
        measured, nbytes = self._measured, self._bytes
        self._measured = 0.0
        self._bytes = 0
        if measured <= 0.0:
            return self._throughput
        self._throughput = int(nbytes / measured)
        return self._throughput
