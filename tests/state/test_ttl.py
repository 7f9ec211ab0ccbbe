"""State TTL (SEMANTICS.md 7.2) driven by a fake processing-time clock."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from flowkit.eventtime.clocks import ManualClock
from flowkit.functions import AggregateFunction
from flowkit.state import (
    AggregatingStateDescriptor,
    BackendSnapshot,
    HeapKeyedStateBackend,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    StateMigrationError,
    StateTtlConfig,
    ValueStateDescriptor,
)
from flowkit.state.ttl import MAX_TIMESTAMP, expiration_timestamp, is_expired

UpdateType = StateTtlConfig.UpdateType
Visibility = StateTtlConfig.StateVisibility

TTL = 100


class FakeClock:
    """Processing time set by the test."""

    def __init__(self, now: int = 0) -> None:
        self.time = now

    def now(self) -> int:
        return self.time


def ttl_config(
    ttl: Any = TTL,
    update: StateTtlConfig.UpdateType = UpdateType.OnCreateAndWrite,
    visibility: StateTtlConfig.StateVisibility = Visibility.NeverReturnExpired,
    background: bool = False,
) -> StateTtlConfig:
    builder = (
        StateTtlConfig.new_builder(ttl).set_update_type(update).set_state_visibility(visibility)
    )
    if not background:
        builder.disable_cleanup_in_background()
    return builder.build()


def with_ttl(descriptor: StateDescriptor, config: StateTtlConfig | None = None) -> Any:
    descriptor.enable_time_to_live(config if config is not None else ttl_config())
    return descriptor


def backend_at(clock: FakeClock) -> HeapKeyedStateBackend:
    backend = HeapKeyedStateBackend(clock=clock)
    backend.set_current_key("k")
    return backend


class Average(AggregateFunction):
    """An accumulator that is changed in place (as many users write them)."""

    def create_accumulator(self) -> list[int]:
        return [0, 0]

    def add(self, value: int, accumulator: list[int]) -> list[int]:
        accumulator[0] += value
        accumulator[1] += 1
        return accumulator

    def get_result(self, accumulator: list[int]) -> float:
        return accumulator[0] / accumulator[1]

    def merge(self, a: list[int], b: list[int]) -> list[int]:
        return [a[0] + b[0], a[1] + b[1]]


# ----------------------------------------------------------------------------- config


def test_builder_defaults_follow_flink() -> None:
    config = StateTtlConfig.new_builder(1000).build()
    assert config.get_ttl() == 1000
    assert config.get_update_type() is UpdateType.OnCreateAndWrite
    assert config.get_state_visibility() is Visibility.NeverReturnExpired
    assert (
        config.get_ttl_time_characteristic() is StateTtlConfig.TtlTimeCharacteristic.ProcessingTime
    )
    assert config.is_enabled()
    strategies = config.get_cleanup_strategies()
    assert strategies.is_cleanup_in_background()
    assert not strategies.in_full_snapshot()
    incremental = strategies.get_incremental_cleanup_strategy()
    assert incremental is not None
    assert incremental.get_cleanup_size() == 5
    assert not incremental.run_cleanup_for_every_record()


def test_builder_setters_and_aliases() -> None:
    config = (
        StateTtlConfig.new_builder(datetime.timedelta(seconds=2))
        .update_type(UpdateType.OnReadAndWrite)
        .state_visibility(Visibility.ReturnExpiredIfNotCleanedUp)
        .cleanup_full_snapshot()
        .cleanup_incrementally(10, True)
        .disable_cleanup_in_background()
        .build()
    )
    assert config.get_ttl() == 2000
    assert config.update_type is UpdateType.OnReadAndWrite
    assert config.state_visibility is Visibility.ReturnExpiredIfNotCleanedUp
    strategies = config.get_cleanup_strategies()
    assert strategies.in_full_snapshot()
    assert not strategies.is_cleanup_in_background()
    # An explicitly configured incremental cleanup still runs.
    assert strategies.get_incremental_cleanup_strategy() == (
        StateTtlConfig.IncrementalCleanupStrategy(10, True)
    )
    shortcuts = (
        StateTtlConfig.new_builder(5)
        .update_ttl_on_read_and_write()
        .return_expired_if_not_cleaned_up()
        .use_processing_time()
        .set_ttl(7)
        .build()
    )
    assert shortcuts.get_ttl() == 7
    assert shortcuts.get_update_type() is UpdateType.OnReadAndWrite
    assert shortcuts.get_state_visibility() is Visibility.ReturnExpiredIfNotCleanedUp


def test_builder_accepts_time_objects_and_rejects_bad_ttls() -> None:
    class Time:
        def to_milliseconds(self) -> int:
            return 250

    assert StateTtlConfig.new_builder(Time()).build().get_ttl() == 250
    for bad in (0, -1, datetime.timedelta(0)):
        with pytest.raises(ValueError, match="positive"):
            StateTtlConfig.new_builder(bad)
    for wrong in (True, "10", 1.5):
        with pytest.raises(TypeError):
            StateTtlConfig.new_builder(wrong)
    with pytest.raises(ValueError, match="positive"):
        StateTtlConfig.new_builder(10).cleanup_incrementally(0, False)
    with pytest.raises(TypeError):
        StateTtlConfig.new_builder(10).set_update_type("OnReadAndWrite")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="StateTtlConfig"):
        ValueStateDescriptor("v").enable_time_to_live(1000)  # type: ignore[arg-type]


def test_disabled_update_type_means_no_ttl() -> None:
    clock = FakeClock()
    backend = backend_at(clock)
    descriptor = ValueStateDescriptor("v", default=-1)
    descriptor.enable_time_to_live(ttl_config(update=UpdateType.Disabled))
    assert not descriptor.has_ttl
    state = backend.get_state(descriptor)
    assert state.value() == -1  # the default still applies: this is plain state
    state.update(5)
    clock.time = 10 * TTL
    assert state.value() == 5
    assert backend.tables["v"] == {None: {"k": 5}}  # no timestamps stored


def test_expiry_rule_and_overflow_guard() -> None:
    assert not is_expired(1000, 100, 1099)
    assert is_expired(1000, 100, 1100)
    assert expiration_timestamp(-5, 10) == 5
    assert expiration_timestamp(0, MAX_TIMESTAMP) == MAX_TIMESTAMP
    assert expiration_timestamp(5, MAX_TIMESTAMP) == MAX_TIMESTAMP
    assert expiration_timestamp(MAX_TIMESTAMP - 10, 100) == MAX_TIMESTAMP
    assert not is_expired(MAX_TIMESTAMP - 10, MAX_TIMESTAMP, MAX_TIMESTAMP - 1)
    assert is_expired(MAX_TIMESTAMP - 10, MAX_TIMESTAMP, MAX_TIMESTAMP)


def test_overflow_guard_in_state() -> None:
    clock = FakeClock(MAX_TIMESTAMP - 10)
    backend = backend_at(clock)
    state = backend.get_state(with_ttl(ValueStateDescriptor("v"), ttl_config(ttl=MAX_TIMESTAMP)))
    state.update("x")
    clock.time = MAX_TIMESTAMP - 1
    assert state.value() == "x"
    clock.time = MAX_TIMESTAMP
    assert state.value() is None


# ----------------------------------------------------------------------------- value state


@pytest.mark.parametrize("update", [UpdateType.OnCreateAndWrite, UpdateType.OnReadAndWrite])
@pytest.mark.parametrize(
    "visibility", [Visibility.NeverReturnExpired, Visibility.ReturnExpiredIfNotCleanedUp]
)
def test_value_state_update_type_and_visibility(
    update: StateTtlConfig.UpdateType, visibility: StateTtlConfig.StateVisibility
) -> None:
    clock = FakeClock(1000)
    backend = backend_at(clock)
    state = backend.get_state(
        with_ttl(ValueStateDescriptor("v"), ttl_config(TTL, update, visibility))
    )
    state.update("a")  # ts = 1000
    clock.time = 1060
    assert state.value() == "a"  # OnReadAndWrite: ts = 1060
    clock.time = 1120  # past 1000 + 100, before 1060 + 100
    if update is UpdateType.OnReadAndWrite:
        assert state.value() == "a"  # refreshed by the read at 1060; now ts = 1120
        clock.time = 1220
    expected = "a" if visibility is Visibility.ReturnExpiredIfNotCleanedUp else None
    assert state.value() == expected
    # Either way the expired value was removed by the read.
    assert backend.num_entries("v") == 0
    assert state.value() is None


def test_write_refreshes_timestamp_and_read_does_not_by_default() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    state = backend.get_state(with_ttl(ValueStateDescriptor("v")))
    state.update(1)
    clock.time = 80
    assert state.value() == 1
    state.update(2)  # ts = 80
    clock.time = 179
    assert state.value() == 2
    clock.time = 180
    assert state.value() is None


def test_descriptor_default_is_ignored_with_ttl() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    state = backend.get_state(with_ttl(ValueStateDescriptor("v", default=7)))
    assert state.value() is None
    state.update(3)
    clock.time = TTL
    assert state.value() is None


def test_update_none_and_clear_remove_the_value() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    state = backend.get_state(with_ttl(ValueStateDescriptor("v")))
    state.update(1)
    state.update(None)
    assert backend.num_entries("v") == 0
    state.update(1)
    state.clear()
    assert state.value() is None and backend.num_entries("v") == 0


def test_values_of_different_keys_expire_independently() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    state = backend.get_state(with_ttl(ValueStateDescriptor("v")))
    backend.set_current_key("a")
    state.update("A")
    clock.time = 50
    backend.set_current_key("b")
    state.update("B")
    clock.time = 100
    assert state.value() == "B"
    backend.set_current_key("a")
    assert state.value() is None


# ----------------------------------------------------------------------------- list state


def test_list_elements_expire_individually() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    state = backend.get_list_state(with_ttl(ListStateDescriptor("l")))
    state.add("a")  # ts 0
    clock.time = 50
    state.add_all(["b", "c"])  # ts 50
    clock.time = 99
    assert state.get() == ["a", "b", "c"]
    clock.time = 100
    assert state.get() == ["b", "c"]
    assert [v for v, _ in backend.tables["l"][None]["k"]] == ["b", "c"]  # cleaned on read
    state.add("d")  # ts 100
    clock.time = 150
    assert list(state) == ["d"]
    clock.time = 200
    assert state.get() == []
    assert backend.num_entries("l") == 0


def test_list_return_expired_returns_stale_elements_once() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    config = ttl_config(visibility=Visibility.ReturnExpiredIfNotCleanedUp)
    state = backend.get_list_state(with_ttl(ListStateDescriptor("l"), config))
    state.add("a")
    clock.time = 50
    state.add("b")
    clock.time = 120
    assert state.get() == ["a", "b"]
    assert state.get() == ["b"]


def test_list_on_read_and_write_refreshes_elements() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    config = ttl_config(update=UpdateType.OnReadAndWrite)
    state = backend.get_list_state(with_ttl(ListStateDescriptor("l"), config))
    state.update(["a", "b"])
    clock.time = 90
    assert state.get() == ["a", "b"]  # both refreshed to 90
    clock.time = 189
    assert state.get() == ["a", "b"]
    clock.time = 289
    assert state.get() == []


def test_list_update_replaces_timestamps() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    state = backend.get_list_state(with_ttl(ListStateDescriptor("l")))
    state.add("old")
    clock.time = 90
    state.update(["x", "y"])
    clock.time = 150
    assert state.get() == ["x", "y"]
    state.update([])
    assert backend.num_entries("l") == 0


# ----------------------------------------------------------------------------- map state


def test_map_entries_expire_individually() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    state = backend.get_map_state(with_ttl(MapStateDescriptor("m")))
    state.put("x", 1)
    clock.time = 50
    state.put_all({"y": 2, "z": 3})
    clock.time = 100
    assert state.get("x") is None
    assert not state.contains("x")
    assert state.get("y") == 2
    assert sorted(state.keys()) == ["y", "z"]
    assert sorted(state.values()) == [2, 3]
    assert sorted(state.items()) == [("y", 2), ("z", 3)]
    assert not state.is_empty()
    assert set(backend.tables["m"][None]["k"]) == {"y", "z"}
    state.remove("y")
    clock.time = 150
    assert state.is_empty()
    assert backend.num_entries("m") == 0


def test_map_put_refreshes_only_that_entry() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    state = backend.get_map_state(with_ttl(MapStateDescriptor("m")))
    state.put_all({"x": 1, "y": 2})
    clock.time = 60
    state.put("x", 10)
    clock.time = 100
    assert dict(state.items()) == {"x": 10}
    assert state["x"] == 10 and "y" not in state


def test_map_return_expired_and_on_read() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    config = ttl_config(
        update=UpdateType.OnReadAndWrite, visibility=Visibility.ReturnExpiredIfNotCleanedUp
    )
    state = backend.get_map_state(with_ttl(MapStateDescriptor("m"), config))
    state.put_all({"x": 1, "y": 2})
    clock.time = 90
    assert state.get("y") == 2  # y refreshed to 90
    clock.time = 120
    assert state.get("x") == 1  # stale, returned once and removed
    assert state.get("x") is None
    assert state.contains("y")
    clock.time = 215  # y: refreshed at 120 by contains()
    assert dict(state.items()) == {"y": 2}
    clock.time = 400
    assert dict(state.items()) == {"y": 2}  # stale, returned once
    assert state.is_empty()


# ----------------------------------------------------------------------------- reducing / aggregating


def test_reducing_state_with_ttl() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    state = backend.get_reducing_state(with_ttl(ReducingStateDescriptor("r", lambda a, b: a + b)))
    state.add(1)
    clock.time = 50
    state.add(2)  # 3, ts 50
    clock.time = 149
    assert state.get() == 3
    clock.time = 150
    state.add(5)  # the expired 3 is not reduced into
    assert state.get() == 5
    clock.time = 250
    assert state.get() is None


def test_reducing_state_reduces_into_visible_expired_value() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    config = ttl_config(visibility=Visibility.ReturnExpiredIfNotCleanedUp)
    state = backend.get_reducing_state(
        with_ttl(ReducingStateDescriptor("r", lambda a, b: a + b), config)
    )
    state.add(1)
    clock.time = 150
    state.add(5)
    assert state.get() == 6


def test_aggregating_state_with_ttl_restarts_expired_accumulator() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    state = backend.get_aggregating_state(with_ttl(AggregatingStateDescriptor("a", Average())))
    state.add(2)
    state.add(4)
    assert state.get() == 3
    clock.time = 100
    assert state.get() is None
    state.add(10)
    assert state.get() == 10


def test_merge_namespaces_skips_expired_sources() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    state = backend.get_reducing_state(with_ttl(ReducingStateDescriptor("r", lambda a, b: a + b)))
    state.set_current_namespace("w1")
    state.add(1)
    clock.time = 60
    state.set_current_namespace("w2")
    state.add(10)
    state.set_current_namespace("w3")
    state.add(100)
    clock.time = 110  # w1 expired
    state.merge_namespaces("w3", ["w1", "w2"])
    assert state.get() == 110
    state.set_current_namespace("w1")
    assert state.get() is None
    assert backend.keys("r", "w2") == []


# ----------------------------------------------------------------------------- cleanup


def fill_expired(backend: HeapKeyedStateBackend, state: Any, clock: FakeClock, n: int) -> None:
    for i in range(n):
        backend.set_current_key(i)
        state.update(i)
    clock.time += TTL


def test_incremental_cleanup_checks_five_entries_per_access() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    config = StateTtlConfig.new_builder(TTL).build()  # default background cleanup
    state = backend.get_state(with_ttl(ValueStateDescriptor("v"), config))
    fill_expired(backend, state, clock, 20)
    backend.set_current_key("absent")
    remaining = []
    for _ in range(4):
        state.value()
        remaining.append(backend.num_entries("v"))
    assert remaining == [15, 10, 5, 0]


def test_incremental_cleanup_keeps_live_entries() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    config = StateTtlConfig.new_builder(TTL).cleanup_incrementally(3, False).build()
    state = backend.get_state(with_ttl(ValueStateDescriptor("v"), config))
    for i in range(10):
        backend.set_current_key(i)
        state.update(i)
    clock.time = 50
    for i in range(10, 15):
        backend.set_current_key(i)
        state.update(i)  # alive until 150
    clock.time = 120
    backend.set_current_key("absent")
    for _ in range(20):
        state.value()
    assert sorted(backend.keys("v")) == list(range(10, 15))


def test_incremental_cleanup_of_lists_and_maps_is_element_wise() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    config = StateTtlConfig.new_builder(TTL).cleanup_incrementally(50, False).build()
    lists = backend.get_list_state(with_ttl(ListStateDescriptor("l"), config))
    maps = backend.get_map_state(with_ttl(MapStateDescriptor("m"), config))
    backend.set_current_key("a")
    lists.add("old")
    maps.put("old", 1)
    clock.time = 50
    lists.add("new")
    maps.put("new", 2)
    clock.time = 120
    backend.set_current_key("other")
    lists.get()
    maps.get("x")
    stored = backend.tables
    assert [v for v, _ in stored["l"][None]["a"]] == ["new"]
    assert list(stored["m"][None]["a"]) == ["new"]


def test_no_background_cleanup_when_disabled() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    state = backend.get_state(with_ttl(ValueStateDescriptor("v")))  # background disabled
    fill_expired(backend, state, clock, 10)
    backend.set_current_key("absent")
    for _ in range(10):
        state.value()
    assert backend.num_entries("v") == 10  # expired but unread state persists
    backend.set_current_key(3)
    assert state.value() is None
    assert backend.num_entries("v") == 9  # cleanup on read always happens


def test_cleanup_for_every_record_runs_on_key_changes() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    config = (
        StateTtlConfig.new_builder(TTL)
        .cleanup_incrementally(2, True)
        .disable_cleanup_in_background()
        .build()
    )
    state = backend.get_state(with_ttl(ValueStateDescriptor("v"), config))
    fill_expired(backend, state, clock, 6)
    backend.set_current_key("x")  # a record: no state access at all
    assert backend.num_entries("v") == 4
    backend.set_current_key("y")
    backend.set_current_key("z")
    assert backend.num_entries("v") == 0


def test_full_snapshot_cleanup_drops_expired_entries_from_snapshots() -> None:
    clock = FakeClock(0)

    def build(full: bool) -> BackendSnapshot:
        backend = backend_at(clock)
        builder = StateTtlConfig.new_builder(TTL).disable_cleanup_in_background()
        if full:
            builder.cleanup_full_snapshot()
        config = builder.build()
        values = backend.get_state(with_ttl(ValueStateDescriptor("v"), config))
        lists = backend.get_list_state(with_ttl(ListStateDescriptor("l"), config))
        clock.time = 0
        backend.set_current_key("old")
        values.update(1)
        lists.add("x")
        clock.time = 60
        backend.set_current_key("new")
        values.update(2)
        lists.add("y")
        backend.set_current_key("old")
        lists.add("z")
        clock.time = 100
        return backend.snapshot()

    cleaned = build(full=True)
    restored = HeapKeyedStateBackend(clock=clock)
    restored.restore([cleaned.to_bytes()])
    tables = restored.tables
    assert set(tables["v"][None]) == {"new"}
    assert {k: [v for v, _ in items] for k, items in tables["l"][None].items()} == {
        "new": ["y"],
        "old": ["z"],
    }
    assert sorted((e[3], e[4]) for e in cleaned.entries("v")) == [("new", 2)]

    kept = build(full=False)
    assert sorted((e[3], e[4]) for e in kept.entries("v")) == [("new", 2), ("old", 1)]


# ----------------------------------------------------------------------------- clocks, restore


def test_clock_kinds_and_late_configuration() -> None:
    now = [0]
    backend = HeapKeyedStateBackend(clock=lambda: now[0])
    backend.set_current_key("k")
    state = backend.get_state(with_ttl(ValueStateDescriptor("v")))
    state.update(1)
    now[0] = TTL
    assert state.value() is None

    manual = ManualClock(500)
    backend.configure(clock=manual)
    assert backend.now() == 500
    state.update(2)
    manual.advance_to(599)
    assert state.value() == 2
    manual.advance_to(600)
    assert state.value() is None
    with pytest.raises(TypeError, match="clock"):
        HeapKeyedStateBackend(clock=42)


def test_ttl_timestamps_survive_snapshot_and_restore() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    backend.get_state(with_ttl(ValueStateDescriptor("v"))).update("x")
    data = backend.snapshot().to_bytes()

    later = FakeClock(50)
    restored = HeapKeyedStateBackend(clock=later)
    restored.restore([data])
    restored.set_current_key("k")
    state = restored.get_state(with_ttl(ValueStateDescriptor("v")))
    later.time = 99
    assert state.value() == "x"
    later.time = 100
    assert state.value() is None


def test_enabling_or_disabling_ttl_on_restored_state_fails() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    backend.get_state(with_ttl(ValueStateDescriptor("with"))).update(1)
    backend.get_state(ValueStateDescriptor("without")).update(1)
    data = backend.snapshot().to_bytes()

    restored = HeapKeyedStateBackend(clock=clock)
    restored.restore([data])
    with pytest.raises(StateMigrationError, match="TTL"):
        restored.get_state(ValueStateDescriptor("with"))
    with pytest.raises(StateMigrationError, match="TTL"):
        restored.get_state(with_ttl(ValueStateDescriptor("without")))


def test_registering_a_name_with_and_without_ttl_fails() -> None:
    backend = backend_at(FakeClock())
    backend.get_state(with_ttl(ValueStateDescriptor("v")))
    with pytest.raises(ValueError, match="TTL"):
        backend.get_state(ValueStateDescriptor("v"))


def test_mutable_values_with_ttl_are_isolated_from_snapshots() -> None:
    clock = FakeClock(0)
    backend = backend_at(clock)
    config = ttl_config(ttl=10_000)
    values = backend.get_state(with_ttl(ValueStateDescriptor("v"), config))
    maps = backend.get_map_state(with_ttl(MapStateDescriptor("m"), config))
    aggs = backend.get_aggregating_state(
        with_ttl(AggregatingStateDescriptor("a", Average()), config)
    )
    values.update({"n": 1})
    maps.put("x", [1])
    aggs.add(4)
    snapshot = backend.snapshot()
    values.value()["n"] = 99  # in-place change of a value read after the snapshot
    maps.get("x").append(2)
    aggs.add(8)  # Average.add changes the accumulator in place
    assert values.value() == {"n": 99} and maps.get("x") == [1, 2] and aggs.get() == 6

    restored = HeapKeyedStateBackend(clock=clock)
    restored.restore([snapshot.to_bytes()])
    restored.set_current_key("k")
    assert restored.get_state(with_ttl(ValueStateDescriptor("v"), config)).value() == {"n": 1}
    assert restored.get_map_state(with_ttl(MapStateDescriptor("m"), config)).get("x") == [1]
    agg = restored.get_aggregating_state(
        with_ttl(AggregatingStateDescriptor("a", Average()), config)
    )
    assert agg.get() == 4
