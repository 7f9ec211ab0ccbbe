"""Time-to-live of keyed state: ``StateTtlConfig``, as in Flink / PyFlink.

Only processing-time TTL exists. Each value (each list element and each map entry on its
own) remembers when it was last written (or read, with ``OnReadAndWrite``); once ``ttl``
milliseconds have passed it is expired: reads never return it (``NeverReturnExpired``, the
default) or return it one last time (``ReturnExpiredIfNotCleanedUp``), and it is removed
when read, by incremental background cleanup, and from full snapshots when configured.

Example:
    >>> config = (
    ...     StateTtlConfig.new_builder(60_000)
    ...     .set_update_type(StateTtlConfig.UpdateType.OnReadAndWrite)
    ...     .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
    ...     .build()
    ... )
    >>> config.get_ttl(), config.is_enabled()
    (60000, True)
"""

from __future__ import annotations

import datetime
import enum
from typing import Any, Final

__all__ = ["MAX_TIMESTAMP", "StateTtlConfig", "expiration_timestamp", "is_expired"]

#: Largest timestamp (Java's ``Long.MAX_VALUE``).
MAX_TIMESTAMP: Final = (1 << 63) - 1


def expiration_timestamp(timestamp: int, ttl: int) -> int:
    """When a value last accessed at ``timestamp`` expires: ``timestamp + ttl``, capped.

    The sum is capped at ``MAX_TIMESTAMP`` for positive timestamps, like Flink's
    ``TtlUtils`` guard against 64-bit overflow.

    Example:
        >>> expiration_timestamp(10, 5), expiration_timestamp(MAX_TIMESTAMP - 1, 10) == MAX_TIMESTAMP
        (15, True)
    """
    if timestamp > 0:
        headroom = MAX_TIMESTAMP - timestamp
        return timestamp + (ttl if ttl < headroom else headroom)
    return timestamp + ttl


def is_expired(timestamp: int, ttl: int, now: int) -> bool:
    """Whether a value last accessed at ``timestamp`` is expired at ``now``.

    Example:
        >>> is_expired(100, 10, 109), is_expired(100, 10, 110)
        (False, True)
    """
    return expiration_timestamp(timestamp, ttl) <= now


def _to_millis(ttl: Any) -> int:
    """A TTL given as int milliseconds, a ``timedelta`` or an object with ``to_milliseconds()``."""
    if isinstance(ttl, bool):
        raise TypeError("a TTL must be milliseconds (int), a timedelta or a Time, not a bool")
    if isinstance(ttl, int):
        millis = ttl
    elif isinstance(ttl, datetime.timedelta):
        millis = ttl.days * 86_400_000 + ttl.seconds * 1000 + ttl.microseconds // 1000
    elif callable(getattr(ttl, "to_milliseconds", None)):
        millis = int(ttl.to_milliseconds())
    else:
        raise TypeError(
            f"a TTL must be milliseconds (int), a timedelta or a Time, got {type(ttl).__name__}"
        )
    if millis <= 0:
        raise ValueError(f"a TTL must be positive, got {millis} ms")
    return millis


class StateTtlConfig:
    """How long keyed state lives and how it is cleaned up; build with :meth:`new_builder`.

    Attributes:
        update_type: When the last-access timestamp is refreshed.
        state_visibility: Whether an expired value that is still stored may be returned.
        ttl_time_characteristic: Always ``TtlTimeCharacteristic.ProcessingTime``.
        ttl: The time to live in milliseconds.
        cleanup_strategies: Background and snapshot cleanup settings.
    """

    class UpdateType(enum.Enum):
        """When the last-access timestamp of a value is refreshed."""

        #: TTL is disabled: state never expires.
        Disabled = 0
        #: On creation and on every write (the default).
        OnCreateAndWrite = 1
        #: Also on every successful read.
        OnReadAndWrite = 2

    class StateVisibility(enum.Enum):
        """Whether an expired value may be returned before it is cleaned up."""

        #: Return an expired value if it was not cleaned up yet (then remove it).
        ReturnExpiredIfNotCleanedUp = 0
        #: Never return an expired value (the default): it behaves as absent.
        NeverReturnExpired = 1

    class TtlTimeCharacteristic(enum.Enum):
        """The time TTL is measured in: only processing time exists."""

        ProcessingTime = 0

    class IncrementalCleanupStrategy:
        """Check ``cleanup_size`` entries for expiry on every state access (and record).

        Args:
            cleanup_size: Entries checked per state access, ``>= 1``.
            run_cleanup_for_every_record: Also check entries for every processed record.
        """

        def __init__(self, cleanup_size: int, run_cleanup_for_every_record: bool) -> None:
            if isinstance(cleanup_size, bool) or not isinstance(cleanup_size, int):
                raise TypeError(f"cleanup_size must be an int, got {cleanup_size!r}")
            if cleanup_size <= 0:
                raise ValueError(
                    f"the number of entries cleaned up per access must be positive, "
                    f"got {cleanup_size}"
                )
            self.cleanup_size = cleanup_size
            self._per_record = bool(run_cleanup_for_every_record)

        def get_cleanup_size(self) -> int:
            return self.cleanup_size

        def run_cleanup_for_every_record(self) -> bool:
            return self._per_record

        def __eq__(self, other: object) -> bool:
            return (
                isinstance(other, StateTtlConfig.IncrementalCleanupStrategy)
                and other.cleanup_size == self.cleanup_size
                and other._per_record == self._per_record
            )

        def __hash__(self) -> int:
            return hash((self.cleanup_size, self._per_record))

        def __repr__(self) -> str:
            return f"IncrementalCleanupStrategy({self.cleanup_size}, {self._per_record})"

    class CleanupStrategies:
        """Which cleanups run besides cleanup on read (which always happens).

        Attributes:
            full_snapshot: Drop expired entries from full snapshots.
            incremental: An explicitly configured incremental cleanup, or None.
            rocksdb_query_time_after_num_entries: Accepted for compatibility; unused by
                the heap backend.
        """

        def __init__(
            self,
            is_cleanup_in_background: bool = True,
            full_snapshot: bool = False,
            incremental: StateTtlConfig.IncrementalCleanupStrategy | None = None,
            rocksdb_query_time_after_num_entries: int | None = None,
        ) -> None:
            self._background = is_cleanup_in_background
            self.full_snapshot = full_snapshot
            self.incremental = incremental
            self.rocksdb_query_time_after_num_entries = rocksdb_query_time_after_num_entries

        def is_cleanup_in_background(self) -> bool:
            return self._background

        def in_full_snapshot(self) -> bool:
            return self.full_snapshot

        def get_incremental_cleanup_strategy(
            self,
        ) -> StateTtlConfig.IncrementalCleanupStrategy | None:
            """The incremental cleanup in effect: the configured one, else the default
            (5 entries per state access) unless background cleanup is disabled."""
            if self.incremental is not None:
                return self.incremental
            if self._background:
                return StateTtlConfig.IncrementalCleanupStrategy(5, False)
            return None

        def __repr__(self) -> str:
            return (
                f"CleanupStrategies(background={self._background}, "
                f"full_snapshot={self.full_snapshot}, incremental={self.incremental!r})"
            )

    def __init__(
        self,
        update_type: StateTtlConfig.UpdateType,
        state_visibility: StateTtlConfig.StateVisibility,
        ttl_time_characteristic: StateTtlConfig.TtlTimeCharacteristic,
        ttl: Any,
        cleanup_strategies: StateTtlConfig.CleanupStrategies,
    ) -> None:
        if not isinstance(update_type, StateTtlConfig.UpdateType):
            raise TypeError(f"update_type must be a StateTtlConfig.UpdateType, got {update_type!r}")
        if not isinstance(state_visibility, StateTtlConfig.StateVisibility):
            raise TypeError(
                f"state_visibility must be a StateTtlConfig.StateVisibility, "
                f"got {state_visibility!r}"
            )
        if not isinstance(ttl_time_characteristic, StateTtlConfig.TtlTimeCharacteristic):
            raise TypeError(f"only processing-time TTL exists, got {ttl_time_characteristic!r}")
        self.update_type = update_type
        self.state_visibility = state_visibility
        self.ttl_time_characteristic = ttl_time_characteristic
        self.ttl = _to_millis(ttl)
        self.cleanup_strategies = cleanup_strategies

    @staticmethod
    def new_builder(ttl: Any) -> StateTtlConfig.Builder:
        """Start a configuration; ``ttl`` is ms (int), a ``timedelta`` or a ``Time``."""
        return StateTtlConfig.Builder(ttl)

    def get_update_type(self) -> StateTtlConfig.UpdateType:
        return self.update_type

    def get_state_visibility(self) -> StateTtlConfig.StateVisibility:
        return self.state_visibility

    def get_ttl(self) -> int:
        """The time to live in milliseconds."""
        return self.ttl

    def get_ttl_time_characteristic(self) -> StateTtlConfig.TtlTimeCharacteristic:
        return self.ttl_time_characteristic

    def get_cleanup_strategies(self) -> StateTtlConfig.CleanupStrategies:
        return self.cleanup_strategies

    def is_enabled(self) -> bool:
        """False for ``UpdateType.Disabled``: the state then never expires."""
        return self.update_type is not StateTtlConfig.UpdateType.Disabled

    def __repr__(self) -> str:
        return (
            f"StateTtlConfig(ttl={self.ttl}ms, update_type={self.update_type.name}, "
            f"state_visibility={self.state_visibility.name}, "
            f"cleanup_strategies={self.cleanup_strategies!r})"
        )

    class Builder:
        """Builds a :class:`StateTtlConfig`; every setter returns the builder."""

        def __init__(self, ttl: Any) -> None:
            self._ttl = _to_millis(ttl)
            self._update_type = StateTtlConfig.UpdateType.OnCreateAndWrite
            self._visibility = StateTtlConfig.StateVisibility.NeverReturnExpired
            self._characteristic = StateTtlConfig.TtlTimeCharacteristic.ProcessingTime
            self._background = True
            self._full_snapshot = False
            self._incremental: StateTtlConfig.IncrementalCleanupStrategy | None = None
            self._rocksdb: int | None = None

        def set_update_type(self, update_type: StateTtlConfig.UpdateType) -> StateTtlConfig.Builder:
            """When the last-access timestamp is refreshed (``UpdateType``)."""
            if not isinstance(update_type, StateTtlConfig.UpdateType):
                raise TypeError(
                    f"update_type must be a StateTtlConfig.UpdateType, got {update_type!r}"
                )
            self._update_type = update_type
            return self

        update_type = set_update_type

        def update_ttl_on_create_and_write(self) -> StateTtlConfig.Builder:
            return self.set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)

        def update_ttl_on_read_and_write(self) -> StateTtlConfig.Builder:
            return self.set_update_type(StateTtlConfig.UpdateType.OnReadAndWrite)

        def set_state_visibility(
            self, state_visibility: StateTtlConfig.StateVisibility
        ) -> StateTtlConfig.Builder:
            """Whether expired but not yet removed values may be returned."""
            if not isinstance(state_visibility, StateTtlConfig.StateVisibility):
                raise TypeError(
                    f"state_visibility must be a StateTtlConfig.StateVisibility, "
                    f"got {state_visibility!r}"
                )
            self._visibility = state_visibility
            return self

        state_visibility = set_state_visibility

        def return_expired_if_not_cleaned_up(self) -> StateTtlConfig.Builder:
            return self.set_state_visibility(
                StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp
            )

        def never_return_expired(self) -> StateTtlConfig.Builder:
            return self.set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)

        def set_ttl_time_characteristic(
            self, ttl_time_characteristic: StateTtlConfig.TtlTimeCharacteristic
        ) -> StateTtlConfig.Builder:
            if ttl_time_characteristic is not StateTtlConfig.TtlTimeCharacteristic.ProcessingTime:
                raise ValueError(
                    f"only processing-time TTL exists, got {ttl_time_characteristic!r}"
                )
            self._characteristic = ttl_time_characteristic
            return self

        def use_processing_time(self) -> StateTtlConfig.Builder:
            return self.set_ttl_time_characteristic(
                StateTtlConfig.TtlTimeCharacteristic.ProcessingTime
            )

        def set_ttl(self, ttl: Any) -> StateTtlConfig.Builder:
            """Replace the time to live (ms, ``timedelta`` or ``Time``)."""
            self._ttl = _to_millis(ttl)
            return self

        def cleanup_full_snapshot(self) -> StateTtlConfig.Builder:
            """Leave expired entries out of full snapshots (checkpoints and savepoints)."""
            self._full_snapshot = True
            return self

        def cleanup_incrementally(
            self, cleanup_size: int, run_cleanup_for_every_record: bool
        ) -> StateTtlConfig.Builder:
            """Check ``cleanup_size`` entries on each state access (and each record if
            ``run_cleanup_for_every_record``), removing the expired ones."""
            self._incremental = StateTtlConfig.IncrementalCleanupStrategy(
                cleanup_size, run_cleanup_for_every_record
            )
            return self

        def cleanup_in_rocksdb_compact_filter(
            self, query_time_after_num_entries: int
        ) -> StateTtlConfig.Builder:
            """Accepted for compatibility; the heap backend has no compaction."""
            self._rocksdb = int(query_time_after_num_entries)
            return self

        def disable_cleanup_in_background(self) -> StateTtlConfig.Builder:
            """No default incremental cleanup (an explicit one still runs)."""
            self._background = False
            return self

        def build(self) -> StateTtlConfig:
            return StateTtlConfig(
                self._update_type,
                self._visibility,
                self._characteristic,
                self._ttl,
                StateTtlConfig.CleanupStrategies(
                    self._background, self._full_snapshot, self._incremental, self._rocksdb
                ),
            )
