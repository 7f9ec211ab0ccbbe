"""Adaptive buffer sizing: the size formula, the announcement rules and the throughput meter.

Most cases follow the scenarios of Flink's BufferDebloaterTest (written anew here); they use
``samples=1`` (smoothing factor 1, no averaging) so that a single period shows the formula.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.errors import InvalidConfigurationError
from flowkit.runtime.debloat import (
    DEFAULT_MIN_BUFFER_SIZE,
    BufferDebloatConfig,
    BufferDebloater,
    BufferSizeEMA,
    ThroughputCalculator,
    java_round,
)


def make(
    min_size: int,
    max_size: int,
    *,
    target_ms: int = 1000,
    samples: int = 1,
    threshold: int = 25,
) -> BufferDebloater:
    config = BufferDebloatConfig(
        enabled=True,
        target_ms=target_ms,
        samples=samples,
        threshold_percentages=threshold,
        min_buffer_size=min_size,
        max_buffer_size=max_size,
    )
    return BufferDebloater(config)


class FakeClock:
    """Monotonic seconds, moved by the test."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- configuration
def test_config_defaults_are_flinks() -> None:
    config = BufferDebloatConfig()
    assert config.enabled is False
    assert config.target_ms == 1000
    assert config.period_ms == 200
    assert config.period_seconds == pytest.approx(0.2)
    assert config.samples == 20
    assert config.threshold_percentages == 25
    assert config.min_buffer_size == DEFAULT_MIN_BUFFER_SIZE == 256
    assert config.max_buffer_size is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_ms": 0},
        {"period_ms": 0},
        {"samples": 0},
        {"threshold_percentages": -1},
        {"min_buffer_size": 0},
        {"max_buffer_size": 0},
        {"min_buffer_size": 512, "max_buffer_size": 511},
        {"target_ms": 1.5},
        {"samples": True},
        {"enabled": 1},
    ],
)
def test_config_rejects_invalid_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidConfigurationError, match="buffer debloating"):
        BufferDebloatConfig(**kwargs)  # type: ignore[arg-type]


def test_config_resolve_fills_in_the_buffer_size() -> None:
    config = BufferDebloatConfig(enabled=True)
    resolved = config.resolve(32768)
    assert resolved.max_buffer_size == 32768
    assert resolved.min_buffer_size == 256
    explicit = BufferDebloatConfig(max_buffer_size=4096)
    assert explicit.resolve(32768) is explicit
    with pytest.raises(InvalidConfigurationError, match="max_buffer_size"):
        explicit.resolve(1024)
    with pytest.raises(InvalidConfigurationError, match="min_buffer_size"):
        BufferDebloatConfig().resolve(128)


def test_debloater_needs_a_maximum() -> None:
    with pytest.raises(InvalidConfigurationError, match="max_buffer_size"):
        BufferDebloater(BufferDebloatConfig())
    debloater = BufferDebloater(BufferDebloatConfig(), buffer_size=8192)
    assert debloater.max_buffer_size == 8192
    assert debloater.last_announced == 8192
    assert debloater.estimated_time_to_consume_ms == 0


def test_negative_throughput_is_rejected() -> None:
    with pytest.raises(ValueError, match="throughput"):
        make(50, 1000).recalculate(-1, 1)


# --------------------------------------------------------------------------- rounding
def test_java_round_rounds_halves_up() -> None:
    assert java_round(2.5) == 3
    assert java_round(0.5) == 1
    assert java_round(249.9375) == 250
    assert java_round(249.4999) == 249
    assert java_round(-2.5) == -2
    assert java_round(-2.6) == -3
    assert java_round(7.0) == 7
    # Python's round() would give 2 here (halves to even).
    assert round(2.5) == 2


def test_half_sizes_are_rounded_up() -> None:
    # 1001 bytes over 2 buffers: 500.5 per buffer, announced as 501.
    assert make(1, 10_000).recalculate(1001, 2) == 501


def test_desired_total_is_floored_before_dividing() -> None:
    # 1001 B/s for 1.5 s is 1501.5 bytes; the integer computation keeps 1501.
    assert make(1, 10_000, target_ms=1500).recalculate(1001, 1) == 1501
    # 999 B/s for 1 ms is 0.999 bytes, i.e. nothing: the minimum.
    assert make(10, 10_000, target_ms=1).recalculate(999, 1) == 10


# --------------------------------------------------------------------------- Flink's cases
def test_zero_buffers_in_use_count_as_one() -> None:
    assert make(50, 2400).recalculate(1200, 0) == 1200
    zero, one = make(50, 2400, samples=20), make(50, 2400, samples=20)
    for _ in range(30):
        assert zero.recalculate(1200, 0) == one.recalculate(1200, 1)
        assert zero.estimated_time_to_consume_ms == one.estimated_time_to_consume_ms


def test_size_follows_the_formula() -> None:
    # 3333 B/s * 1.2 s = 3999 bytes over 16 buffers = 249.94 bytes each -> 250.
    debloater = make(50, 1100, target_ms=1200)
    assert debloater.recalculate(3333, 16) == 250
    assert debloater.last_announced == 250


def test_size_below_the_minimum_becomes_the_minimum() -> None:
    assert make(250, 1100, target_ms=1200).recalculate(3333, 16) == 250
    assert make(300, 1100, target_ms=1200).recalculate(3333, 16) == 300


def test_zero_throughput_gives_the_minimum() -> None:
    debloater = make(50, 1100, target_ms=1200)
    assert debloater.recalculate(0, 16) == 50
    # No throughput: the time is computed as for 1 B/s.
    assert debloater.estimated_time_to_consume_ms == 50 * 16 * 1000


def test_too_short_target_gives_the_minimum() -> None:
    assert make(50, 1100, target_ms=7).recalculate(3333, 16) == 50


def test_size_above_the_maximum_is_not_announced_again() -> None:
    # The computed size is capped at the maximum, which is what was announced first.
    debloater = make(50, 248, target_ms=1200)
    assert debloater.recalculate(3333, 16) is None
    assert debloater.last_announced == 248


def test_size_close_to_the_current_one_is_not_announced() -> None:
    debloater = make(50, 260, target_ms=1200)
    assert debloater.recalculate(3333, 16) is None  # 250 is within 25 % of 260
    assert debloater.last_announced == 260


def test_maximum_is_announced_despite_a_small_change() -> None:
    debloater = make(50, 1100)
    assert debloater.recalculate(500, 1) == 500
    assert debloater.recalculate(1000, 1) == 1000
    # 2000 is capped at 1100: only 10 % more than 1000, but the maximum is always announced.
    assert debloater.recalculate(2000, 1) == 1100
    assert debloater.last_announced == 1100
    # ... and not twice.
    assert debloater.recalculate(2000, 1) is None
    assert debloater.last_announced == 1100


def test_minimum_is_announced_despite_a_small_change() -> None:
    debloater = make(50, 1100)
    assert debloater.recalculate(60, 1) == 60
    assert debloater.recalculate(60, 1) is None
    # 40 is raised to 50: a change of 10 bytes, far below 25 %, announced as the minimum.
    assert debloater.recalculate(40, 1) == 50
    assert debloater.last_announced == 50
    assert debloater.recalculate(40, 1) is None


def test_skip_update_rules() -> None:
    max_size, min_size = 32768, 256
    debloater = make(min_size, max_size, threshold=30)
    current = max_size // 2
    assert debloater.recalculate(current, 1) == current
    delta = int(current * 0.3)  # 4915 bytes
    assert delta == 4915
    skipped = [current, current - 1, current + 1, current - delta + 1, current + delta - 1]
    for size in skipped:
        assert debloater.skip_update(size), size
    announced = [
        current - delta,
        current + delta,
        min_size + 1,
        min_size,
        max_size - 1,
        max_size,
        max_size + 1,
        min_size - 1,
    ]
    for size in announced:
        assert not debloater.skip_update(size), size


def test_threshold_skips_changes_below_it() -> None:
    debloater = make(1, 1000)  # 25 %: 250 bytes below the first announced size (1000)
    assert debloater.recalculate(800, 1) is None
    assert debloater.recalculate(751, 1) is None
    assert debloater.last_announced == 1000
    assert debloater.recalculate(750, 1) == 750
    # Now 25 % of 750, truncated: 187 bytes.
    assert debloater.recalculate(564, 1) is None
    assert debloater.recalculate(563, 1) == 563
    # 25 % of 563, truncated: 140 bytes.
    assert debloater.recalculate(702, 1) is None
    assert debloater.recalculate(703, 1) == 703


def test_threshold_change_is_measured_from_the_last_announced_size() -> None:
    # Many small steps add up: each is below the threshold of the last computed size, but
    # the size is announced once it has moved far enough from the one announced last.
    debloater = make(1, 1000)
    results = [debloater.recalculate(tp, 1) for tp in (900, 820, 760, 740)]
    assert results == [None, None, None, 740]


def test_threshold_factor_is_computed_in_floating_point() -> None:
    # 29 % of 100 bytes is 28.999... in double arithmetic, truncated to 28 as in Flink: a
    # change of 28 bytes is therefore announced.
    debloater = make(1, 100, threshold=29)
    assert debloater.recalculate(72, 1) == 72


def test_threshold_zero_announces_every_change() -> None:
    debloater = make(1, 1000, threshold=0)
    assert debloater.recalculate(999, 1) == 999
    assert debloater.recalculate(998, 1) == 998
    assert debloater.recalculate(998, 1) is None


# --------------------------------------------------------------------------- direction
def test_size_decreases_when_throughput_drops() -> None:
    debloater = make(256, 32768, samples=1)
    assert debloater.recalculate(32768 * 4, 4) is None  # exactly the maximum: unchanged
    # The consumer slows down to 16 KiB/s: 4 buffers should hold 16 KiB -> 4 KiB each.
    assert debloater.recalculate(16384, 4) == 4096
    assert debloater.recalculate(4096, 4) == 1024
    assert debloater.estimated_time_to_consume_ms == 1000


def test_size_increases_when_throughput_rises() -> None:
    debloater = make(256, 32768, samples=1)
    assert debloater.recalculate(4096, 4) == 1024
    assert debloater.recalculate(8192, 4) == 2048
    assert debloater.recalculate(10_000_000, 4) == 4096  # capped at twice the size
    assert debloater.recalculate(10_000_000, 4) == 8192


def test_growth_is_capped_at_twice_the_current_size() -> None:
    debloater = make(256, 32768, samples=1)
    assert debloater.recalculate(0, 1) == 256
    sizes = [debloater.recalculate(10**12, 1) for _ in range(8)]
    assert sizes == [512, 1024, 2048, 4096, 8192, 16384, 32768, None]


def test_growth_cap_applies_to_the_average() -> None:
    # With averaging, one period moves the size by at most alpha * size in either direction.
    ema = BufferSizeEMA(max_buffer_size=32768, min_buffer_size=256, samples=20, starting_size=1000)
    alpha = 2 / 21
    assert ema.alpha == pytest.approx(alpha)
    assert ema.calculate_buffer_size(10**12, 1) == java_round(1000 + alpha * 1000)
    assert ema.last_size == pytest.approx(1000 * (1 + alpha))


def test_shrinking_without_input_follows_the_moving_average() -> None:
    ema = BufferSizeEMA(max_buffer_size=32768, min_buffer_size=256, samples=20)
    assert ema.last_size == 32768
    sizes = [ema.calculate_buffer_size(0, 1) for _ in range(5)]
    expected = [java_round(32768 * (19 / 21) ** k) for k in range(1, 6)]
    assert sizes == expected
    assert sizes[0] == 29647


def test_moving_average_converges_to_the_desired_size() -> None:
    max_size, desired = 32768, 2500
    debloater = make(256, max_size, samples=20)
    throughput, buffers = desired * 8, 8  # 8 buffers of 2500 bytes hold one second
    announced = []
    alpha = 2 / 21
    for period in range(1, 201):
        result = debloater.recalculate(throughput, buffers)
        if result is not None:
            announced.append(result)
        expected = desired + (max_size - desired) * (1 - alpha) ** period
        assert debloater.ema.last_size == pytest.approx(expected, rel=1e-9)
    assert debloater.ema.last_size == pytest.approx(desired, abs=0.01)
    # Every announcement is a drop of at least 25 %, so the sizes shrink in a few big steps
    # and the last one is within the threshold of where the average settles.
    assert announced == sorted(announced, reverse=True)
    assert len(announced) >= 4
    previous = max_size
    for size in announced:
        assert previous - size >= int(previous * 0.25)
        previous = size
    assert announced[-1] >= desired
    assert announced[-1] - desired < int(announced[-1] * 0.25)
    assert debloater.recalculate(throughput, buffers) is None


def test_average_stays_within_bounds() -> None:
    ema = BufferSizeEMA(max_buffer_size=1000, min_buffer_size=100, samples=3)
    for _ in range(50):
        assert ema.calculate_buffer_size(0, 1) >= 100
    assert ema.last_size == 100
    for _ in range(50):
        assert ema.calculate_buffer_size(10**15, 1) <= 1000
    assert ema.last_size == 1000
    with pytest.raises(ValueError):
        ema.calculate_buffer_size(-1, 1)
    with pytest.raises(ValueError):
        ema.calculate_buffer_size(1, 0)


# --------------------------------------------------------------------------- time to consume
def test_estimated_time_to_consume() -> None:
    debloater = make(50, 1100, target_ms=1200)
    assert debloater.recalculate(3333, 16) == 250
    # 250 bytes * 16 buffers / 3333 B/s = 1.20012 s, floored to whole milliseconds.
    assert debloater.estimated_time_to_consume_ms == 1200


def test_estimated_time_is_updated_when_the_size_is_not_announced() -> None:
    debloater = make(50, 1000)
    assert debloater.recalculate(900, 1) is None  # 900 is within 25 % of 1000
    assert debloater.estimated_time_to_consume_ms == 1000  # 900 * 1000 // 900
    assert debloater.recalculate(10**9, 3) is None  # the maximum again
    assert debloater.estimated_time_to_consume_ms == 1000 * 3 * 1000 // 10**9


def test_debloating_brings_the_time_to_consume_to_the_target() -> None:
    # A slow consumer (20 KB/s) behind 4 full 32 KiB buffers needs 6.5 s to drain them;
    # with default settings the announced size approaches 5000 bytes per buffer.
    debloater = BufferDebloater(BufferDebloatConfig(enabled=True), buffer_size=32768)
    # First period: 32768 + (2/21) * (5000 - 32768) = 30123.4 -> 30123, an 8 % change.
    assert debloater.recalculate(20_000, 4) is None
    assert debloater.estimated_time_to_consume_ms == 30123 * 4 * 1000 // 20_000 == 6024
    for _ in range(200):
        debloater.recalculate(20_000, 4)
    assert 5000 <= debloater.last_announced < 5000 / 0.75
    in_flight = debloater.last_announced * 4
    assert in_flight * 6 < 32768 * 4  # less than a sixth of the full buffers
    assert 1000 <= in_flight * 1000 // 20_000 < 1000 / 0.75
    assert debloater.estimated_time_to_consume_ms == 1000


# --------------------------------------------------------------------------- property
@st.composite
def scenarios(draw: st.DrawFn) -> tuple[BufferDebloatConfig, list[tuple[int, int]]]:
    min_size = draw(st.integers(1, 4096))
    max_size = draw(st.integers(min_size, min_size + 100_000))
    config = BufferDebloatConfig(
        enabled=True,
        target_ms=draw(st.integers(1, 5000)),
        samples=draw(st.integers(1, 40)),
        threshold_percentages=draw(st.integers(0, 100)),
        min_buffer_size=min_size,
        max_buffer_size=max_size,
    )
    periods = draw(
        st.lists(
            st.tuples(
                st.one_of(st.just(0), st.integers(0, 10**6), st.integers(0, 10**12)),
                st.integers(0, 64),
            ),
            max_size=60,
        )
    )
    return config, periods


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_announced_sizes_are_within_bounds_and_always_changes(
    scenario: tuple[BufferDebloatConfig, list[tuple[int, int]]],
) -> None:
    config, periods = scenario
    debloater = BufferDebloater(config)
    lo, hi = config.min_buffer_size, debloater.max_buffer_size
    factor = config.threshold_percentages / 100.0
    for throughput, in_use in periods:
        before = debloater.last_announced
        result = debloater.recalculate(throughput, in_use)
        assert lo <= debloater.ema.last_size <= hi
        computed = java_round(debloater.ema.last_size)
        assert debloater.estimated_time_to_consume_ms == (
            computed * max(1, in_use) * 1000 // max(1, throughput)
        )
        if result is None:
            assert debloater.last_announced == before
            continue
        assert lo <= result <= hi
        assert result != before
        assert debloater.last_announced == result
        assert result == computed
        if lo < result < hi:
            assert abs(result - before) >= int(before * factor)


# --------------------------------------------------------------------------- throughput
def test_throughput_over_busy_time() -> None:
    clock = FakeClock()
    calc = ThroughputCalculator(clock)
    calc.resume_measurement()
    calc.record(1000)
    clock.now = 0.5
    assert calc.calculate_throughput() == 2000


def test_idle_time_does_not_count() -> None:
    clock = FakeClock()
    calc = ThroughputCalculator(clock)
    calc.resume_measurement(0.0)
    calc.record(500)
    calc.pause_measurement(0.25)
    assert calc.paused
    # Ten seconds of waiting for input: not part of the measurement.
    calc.resume_measurement(10.25)
    calc.record(500)
    assert calc.accumulated_bytes == 1000
    assert calc.calculate_throughput(10.5) == 2000
    assert calc.accumulated_bytes == 0


def test_each_calculation_starts_a_new_period() -> None:
    clock = FakeClock()
    calc = ThroughputCalculator(clock)
    calc.record(4000)  # starts the measurement at 0.0
    assert calc.calculate_throughput(2.0) == 2000
    # Still running: the next period starts where the previous one ended.
    calc.record(300)
    assert calc.calculate_throughput(3.0) == 300
    calc.pause_measurement(3.5)
    assert calc.calculate_throughput(4.0) == 0  # measured 0.5 s without bytes


def test_period_without_measured_time_repeats_the_last_value() -> None:
    clock = FakeClock()
    calc = ThroughputCalculator(clock)
    assert calc.calculate_throughput() == 0  # nothing ever measured
    calc.resume_measurement(0.0)
    calc.record(100)
    calc.pause_measurement(0.1)
    assert calc.calculate_throughput(0.2) == 1000
    # Paused for the whole next period: no time measured, the last value stands.
    assert calc.calculate_throughput(5.0) == 1000


def test_recording_while_paused_resumes_the_measurement() -> None:
    clock = FakeClock(1.0)
    calc = ThroughputCalculator(clock)
    calc.pause_measurement()
    assert calc.paused
    calc.record(250)  # resumes at the clock's time, 1.0
    assert not calc.paused
    clock.now = 1.25
    assert calc.calculate_throughput() == 1000


def test_pause_and_resume_are_idempotent() -> None:
    calc = ThroughputCalculator(FakeClock())
    calc.resume_measurement(0.0)
    calc.resume_measurement(0.5)  # already running since 0.0
    calc.record(1000)
    calc.pause_measurement(1.0)
    calc.pause_measurement(2.0)  # already paused
    assert calc.calculate_throughput(3.0) == 1000


def test_throughput_feeds_the_debloater() -> None:
    clock = FakeClock()
    calc = ThroughputCalculator(clock)
    debloater = make(256, 32768)
    # One period of 200 ms in which the consumer was busy 100 ms and took 1000 bytes.
    calc.resume_measurement(0.0)
    calc.record(1000)
    calc.pause_measurement(0.1)
    throughput = calc.calculate_throughput(0.2)
    assert throughput == 10_000
    assert debloater.recalculate(throughput, 2) == 5000
    assert debloater.estimated_time_to_consume_ms == 1000
