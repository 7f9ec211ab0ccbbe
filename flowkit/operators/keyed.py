"""Rolling aggregations on keyed streams: reduce, sum, min, max, min_by, max_by."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from flowkit._native import speedups
from flowkit.elements import MAX_WATERMARK
from flowkit.operators.base import KEY_SELECTOR, Batch, Timestamps, key_selector_fails
from flowkit.operators.simple import UdfOperator
from flowkit.state.key_groups import CanonicalKeys, user_key
from flowkit.typeinfo import pickled_sort_key

__all__ = [
    "KeyChecker",
    "KeyedReduceOperator",
    "aggregation",
    "is_hashable",
    "unhashable_key_error",
]

_MISSING = object()
_native_reduce = speedups.reduce_batch if speedups is not None else None


class KeyedReduceOperator(UdfOperator):
    """Emits the running reduction of each key after every record (Flink's reduce).

    The first record of a key is emitted as is; each later one is ``reduce(acc, value)``.
    Output records keep the input record's timestamp. Keys are told apart by type as in
    Flink (:func:`~flowkit.state.key_groups.state_key`): ``1``, ``1.0`` and ``True`` have
    running results of their own; all NaN keys are one key.
    """

    method = "reduce"

    def __init__(
        self,
        name: str,
        function: Any,
        key_selector: Callable[[Any], Any],
        key_order: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(name, function)
        self.key_selector = key_selector
        #: Current reduction per key (keys in the form state stores them).
        self.accumulators: dict[Any, Any] = {}
        self._canonical = CanonicalKeys().canonical
        self._dict_sum_field: str | None = getattr(self.fn, "dict_sum_field", None)
        position = getattr(self.fn, "pair_sum_position", None)
        self._pair_sum_second = position == 1
        #: BATCH execution: no running results, the final one per key at the end.
        self.batch = False
        self._emitted_finals = False
        #: BATCH execution: the order of the keys' final results (Flink's sort of the
        #: keyed input: ``pickled_sort_key`` for keys without type information).
        self.key_order = key_order or pickled_sort_key

    def enable_batch_execution(self) -> None:
        """BATCH mode: keep reducing, but emit only each key's final result, once the
        input has ended (at the end-of-input watermark), keys in Flink's order."""
        self.batch = True

    def process_watermark(self, timestamp: int) -> None:
        if self.batch and timestamp >= MAX_WATERMARK:
            self._emit_finals()
        self.output.emit_watermark(timestamp)

    def finish(self) -> None:
        if self.batch:
            self._emit_finals()

    def _emit_finals(self) -> None:
        if self._emitted_finals:
            return
        self._emitted_finals = True
        accs = self.accumulators
        if not accs:
            return
        try:
            order = self.key_order
            keys = sorted(accs, key=lambda key: order(user_key(key)))
        except Exception:  # keys that cannot be ordered so: in the order they came
            keys = list(accs)
        finals = [accs[key] for key in keys]
        # Flink's batch reduce emits its results with the end-of-input timestamp.
        self.output.collect(finals, [MAX_WATERMARK] * len(finals))

    def _accumulate(self, values: Batch) -> None:
        """BATCH mode: reduce every record into its key's accumulator, emit nothing."""
        key_of = self.key_selector
        reduce = self.fn
        accs = self.accumulators
        get = accs.get
        canonical = self._canonical
        index = 0
        key: Any = _MISSING
        try:
            for index, value in enumerate(values):  # noqa: B007 (read on failure)
                key = key_of(value)
                if key.__class__ is not str and key.__class__ is not int:
                    key = canonical(key)  # exact type, every NaN one key
                acc = get(key, _MISSING)
                accs[key] = value if acc is _MISSING else reduce(acc, value)
        except Exception as exc:
            record = values[index]
            if key_selector_fails(key_of, record):
                raise self.fail(exc, KEY_SELECTOR, record=record) from exc
            if isinstance(exc, TypeError) and not is_hashable(key):
                error = unhashable_key_error(key)
                raise self.fail(error, record=record) from error
            raise self.fail(exc, record=record) from exc

    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        if self.batch:
            self._accumulate(values)
            return
        key_of = self.key_selector
        reduce = self.fn
        accs = self.accumulators
        get = accs.get
        canonical = self._canonical
        out: list[Any] = []
        append = out.append
        key: Any = _MISSING
        field = self._dict_sum_field
        # Keys other than str and int are looked up in the form state stores them
        # (state_key): 1, 1.0 and True are three keys, every NaN is one.
        try:
            if field is not None:
                # sum("field") over dict records, inlined: the hottest keyed aggregation.
                for value in values:
                    key = key_of(value)
                    if key.__class__ is not str and key.__class__ is not int:
                        key = canonical(key)  # exact type, every NaN one key
                    acc = get(key, _MISSING)
                    if acc is not _MISSING:
                        if type(acc) is dict and type(value) is dict:
                            new = acc.copy()
                            new[field] = acc[field] + value[field]
                            value = new
                        else:
                            value = reduce(acc, value)
                    accs[key] = value
                    append(value)
            elif _native_reduce is not None and values.__class__ is list:
                # The two loops below in C (flowkit/_speedups.c), when it is built.
                _native_reduce(values, key_of, accs, reduce, canonical, out, self._pair_sum_second)
            elif self._pair_sum_second:
                # sum(1) over (key, number) pairs, inlined: the tuple form of the above.
                for value in values:
                    key = key_of(value)
                    if key.__class__ is not str and key.__class__ is not int:
                        key = canonical(key)  # exact type, every NaN one key
                    acc = get(key, _MISSING)
                    if acc is not _MISSING:
                        if type(acc) is tuple and type(value) is tuple and len(acc) == 2:
                            value = (acc[0], acc[1] + value[1])
                        else:
                            value = reduce(acc, value)
                    accs[key] = value
                    append(value)
            else:
                for value in values:
                    key = key_of(value)
                    if key.__class__ is not str and key.__class__ is not int:
                        key = canonical(key)  # exact type, every NaN one key
                    acc = get(key, _MISSING)
                    if acc is not _MISSING:
                        value = reduce(acc, value)
                    accs[key] = value
                    append(value)
        except Exception as exc:
            record = values[len(out)]  # one output per record before the failing one
            if out:
                self.output.collect(out, None if timestamps is None else timestamps[: len(out)])
            if key_selector_fails(key_of, record):
                raise self.fail(exc, KEY_SELECTOR, record=record) from exc
            if key is _MISSING:  # the compiled loop failed: the record's key, once more
                key = key_of(record)
            if isinstance(exc, TypeError) and not is_hashable(key):
                error = unhashable_key_error(key)
                raise self.fail(error, record=record) from error
            raise self.fail(exc, record=record) from exc
        self.output.collect(out, timestamps)

    def keyed_entries(self, limit: int) -> int:
        """The accumulators: one keyed entry per key (see ``StreamOperator.keyed_entries``)."""
        return len(self.accumulators)

    def snapshot_state(self, checkpoint_id: int) -> Any:
        # A shallow copy (rolling results are new objects, never changed in place), split
        # by key group when serialized, not here.
        return self._held_accumulators(dict(self.accumulators))

    def snapshot_state_in_child(self, checkpoint_id: int) -> Any:
        """In the forked child, whose memory is the subtask's at the barrier, the
        accumulators are held as they are: nothing is copied at the barrier. (Taken in
        this process instead, if the fork failed, they are copied then, as always.)"""
        import os

        from flowkit.operators.keyed_snapshots import TakenInChild

        here = os.getpid()

        def take() -> Any:
            accumulators = self.accumulators
            return self._held_accumulators(
                dict(accumulators) if os.getpid() == here else accumulators
            )

        return TakenInChild(take)

    def _held_accumulators(self, accumulators: dict[Any, Any]) -> Any:
        from flowkit.operators.keyed_snapshots import snapshot_accumulators

        assert self.ctx is not None
        return snapshot_accumulators(
            accumulators,
            self.ctx.max_parallelism,
            self._key_group_range(),
            self._key_group_of(),
        )

    def _restore_keyed_after_open(self) -> None:
        states = getattr(self, "_restored_states", None)
        if states:
            from flowkit.operators.keyed_snapshots import restore_keyed

            restore_keyed(None, None, states, self._key_group_range(), extra=self.accumulators)
            self._restored_states = []


def is_hashable(key: Any) -> bool:
    """Whether ``key`` can be used as a key (state and accumulators live in dicts)."""
    try:
        hash(key)
    except TypeError:
        return False
    return True


def unhashable_key_error(key: Any) -> TypeError:
    """The error for a key selector that returned an unhashable key."""
    return TypeError(
        f"the key selector returned a key of type {type(key).__name__} ({key!r}), which is "
        f"not hashable; key_by needs an immutable key: return a tuple instead of a list, a "
        f"frozenset instead of a set, or a str/int field of the record"
    )


class KeyChecker:
    """Checks keys for hashability each time the key type changes (cheap per record).

    Also holds the operator's :class:`~flowkit.state.key_groups.CanonicalKeys`
    (``canonical_keys``), through which keys other than ``str``/``int`` pass.
    """

    __slots__ = ("_type", "canonical_keys")

    def __init__(self) -> None:
        self._type: type | None = None
        self.canonical_keys = CanonicalKeys()

    def check(self, key: Any) -> None:
        """Raise :func:`unhashable_key_error` for an unhashable ``key``.

        Raises:
            TypeError: ``key`` cannot be hashed.
        """
        cls = type(key)
        if cls is self._type and cls is not tuple:
            return
        if not is_hashable(key):
            raise unhashable_key_error(key)
        self._type = cls

    def normalize(self, key: Any) -> Any:
        """Check ``key`` and return the object state stores it under
        (:class:`~flowkit.state.key_groups.CanonicalKeys`): ``1``, ``1.0`` and ``True`` are
        three keys, every NaN key is one. ``str`` keys need neither: hot loops pass them
        by.

        Raises:
            TypeError: ``key`` cannot be hashed.
        """
        self.check(key)
        if key.__class__ is not int:
            key = self.canonical_keys.canonical(key)
        return key


def _getter(field: int | str | None) -> Callable[[Any], Any]:
    def get(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            if not isinstance(field, int):
                raise TypeError(
                    f"field {field!r} must be a position for {type(value).__name__} records"
                )
            return value[field]
        if isinstance(value, dict):
            return value[field]
        if dataclasses.is_dataclass(value) and isinstance(field, str):
            return getattr(value, field)
        if field in (0, None):
            return value
        raise TypeError(
            f"cannot read field {field!r} of a {type(value).__name__} record: use a tuple "
            f"position, a dict key or a dataclass attribute"
        )

    return get


def _setter(field: int | str | None) -> Callable[[Any, Any], Any]:
    def put(record: Any, new: Any) -> Any:
        if isinstance(record, tuple):
            items = list(record)
            items[field] = new  # type: ignore[index]
            return type(record)(*items) if hasattr(record, "_fields") else tuple(items)
        if isinstance(record, list):
            copy = list(record)
            copy[field] = new  # type: ignore[index]
            return copy
        if isinstance(record, dict):
            copy_d = dict(record)
            copy_d[field] = new
            return copy_d
        if dataclasses.is_dataclass(record) and isinstance(field, str):
            return dataclasses.replace(record, **{field: new})  # type: ignore[type-var]
        return new

    return put


def aggregation(kind: str, field: int | str | None) -> Callable[[Any, Any], Any]:
    """The reduce function behind ``sum/min/max/min_by/max_by(field)``.

    As in Flink: ``sum``, ``min`` and ``max`` keep the other fields of the first record of
    the key and replace the aggregated field; ``min_by`` / ``max_by`` return the whole
    record holding the extreme value (the earlier one on ties).

    Example:
        >>> aggregation("sum", 1)(("a", 1), ("a", 2))
        ('a', 3)
        >>> aggregation("max_by", "v")({"k": 1, "v": 5}, {"k": 2, "v": 5})
        {'k': 1, 'v': 5}
    """
    if kind not in ("sum", "min", "max", "min_by", "max_by"):
        raise ValueError(f"unknown aggregation {kind!r}")
    get = _getter(field)
    put = _setter(field)
    by_record = kind.endswith("_by")

    def combine(a: Any, b: Any) -> Any:
        if kind == "sum":
            return a + b
        if kind == "min":
            return b if b < a else a
        return b if b > a else a

    def generic(acc: Any, value: Any) -> Any:
        a, b = get(acc), get(value)
        if by_record:
            better = b < a if kind == "min_by" else b > a
            return value if better else acc
        new = combine(a, b)
        return acc if new is a and kind != "sum" else put(acc, new)

    if kind == "sum" and isinstance(field, int):
        position = field

        # Fast path for the common record shape; everything else goes through generic.
        def sum_position(acc: Any, value: Any) -> Any:
            if type(acc) is tuple and type(value) is tuple:
                if len(acc) == 2:
                    if position == 1:
                        return (acc[0], acc[1] + value[1])
                    if position == 0:
                        return (acc[0] + value[0], acc[1])
                items = list(acc)
                items[position] = acc[position] + value[position]
                return tuple(items)
            return generic(acc, value)

        sum_position.pair_sum_position = position  # type: ignore[attr-defined]  # inlined
        return sum_position
    if kind == "sum" and isinstance(field, str):
        key = field

        def sum_key(acc: Any, value: Any) -> Any:
            if type(acc) is dict and type(value) is dict:
                new = acc.copy()
                new[key] = acc[key] + value[key]
                return new
            return generic(acc, value)

        sum_key.dict_sum_field = key  # type: ignore[attr-defined]  # KeyedReduceOperator inlines it
        return sum_key
    return generic
