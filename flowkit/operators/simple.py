"""One-input operators over whole batches: map, filter, flat_map.

Their functions keep no keyed state, but may keep operator state through
``initialize_state(context)`` / ``snapshot_state(context)`` hooks (Flink's
``CheckpointedFunction``), which :class:`FunctionStateOperator` drives.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from itertools import compress, repeat
from typing import Any

from flowkit.operators.base import (
    NO_RECORD,
    Batch,
    OneInputOperator,
    StreamOperator,
    Timestamps,
    call_close,
    call_open,
    copy_function,
    resolve_function,
)
from flowkit.operators.keyed_snapshots import TakenInChild
from flowkit.state.operator_state import (
    FunctionInitializationContext,
    FunctionSnapshotContext,
    OperatorStateStore,
    has_checkpointed_hooks,
    is_operator_state_snapshot,
)

__all__ = [
    "FilterOperator",
    "FlatMapOperator",
    "FunctionStateOperator",
    "MapOperator",
    "UdfOperator",
    "is_iterable",
    "not_iterable_message",
]


def is_iterable(value: Any) -> bool:
    """Whether ``value`` can be iterated (None counts as iterable: it means no output)."""
    if value is None:
        return True
    try:
        iter(value)
    except TypeError:
        return False
    return True


def not_iterable_message(method: str, result: Any) -> str:
    """The error for a function that returned a single value where outputs are iterated."""
    return (
        f"{method}() must yield its outputs or return an iterable (or None), but it returned "
        f"{type(result).__name__} {result!r}; use `yield value` or `return [value]`"
    )


class FunctionStateOperator(StreamOperator):
    """Base of operators around a user function: drives its operator state.

    A function with ``initialize_state(context)`` / ``snapshot_state(context)`` (Flink's
    ``CheckpointedFunction``) gets its ``initialize_state`` called once before its
    ``open``, with the state restored for this subtask (or none), and its
    ``snapshot_state`` at every checkpoint barrier; the operator then stores the
    function's :class:`OperatorStateStore` in its snapshot, next to any keyed state.
    Subclasses call :meth:`initialize_function_state` first thing in ``open()``.
    """

    function: Any = None
    #: The operator state of this subtask (None until used).
    operator_state: OperatorStateStore | None = None

    def _operator_state_store(self) -> OperatorStateStore:
        store = self.operator_state
        if store is None:
            ctx = self.ctx
            index, parallelism = (0, 1) if ctx is None else (ctx.subtask_index, ctx.parallelism)
            store = self.operator_state = OperatorStateStore(index, parallelism)
        return store

    def _restore_operator_state(self) -> None:
        """Load this subtask's share of the restored operator state (if there is some)."""
        states = getattr(self, "_restored_states", None) or []
        if not states:
            return
        if not has_checkpointed_hooks(self.function) and not any(
            is_operator_state_snapshot(s) for s in states
        ):
            return
        store = self._operator_state_store()
        if store.is_restored():
            return
        ctx = self.ctx
        assert ctx is not None
        try:
            store.restore(states, ctx.subtask_index, ctx.parallelism)
        except Exception as exc:
            raise self.fail(exc, "restoring operator state") from exc

    def initialize_function_state(self) -> None:
        """Restore operator state, then call the function's ``initialize_state``."""
        self._restore_operator_state()
        function = self.function
        if not has_checkpointed_hooks(function):
            return
        store = self._operator_state_store()
        initialize = getattr(function, "initialize_state", None)
        if not callable(initialize):
            return
        context = FunctionInitializationContext(store, self.state_store())
        try:
            initialize(context)
        except Exception as exc:
            raise self.fail(exc, "in initialize_state()") from exc

    def snapshot_state(self, checkpoint_id: int) -> Any:
        return self._snapshot(checkpoint_id, in_child=False)

    def snapshot_state_in_child(self, checkpoint_id: int) -> Any:
        if type(self).snapshot_state is not FunctionStateOperator.snapshot_state:
            return self.snapshot_state(checkpoint_id)
        return self._snapshot(checkpoint_id, in_child=True)

    def _snapshot(self, checkpoint_id: int, *, in_child: bool) -> Any:
        """Keyed state (taken in a forked child with ``in_child``), then the function's
        ``snapshot_state`` hook and its operator state, here at the barrier."""
        base = self._keyed_snapshot(in_child=in_child)
        function = self.function
        hook = (
            getattr(function, "snapshot_state", None) if has_checkpointed_hooks(function) else None
        )
        if callable(hook):
            self._operator_state_store()
            try:
                hook(FunctionSnapshotContext(checkpoint_id))
            except Exception as exc:
                raise self.fail(exc, "in snapshot_state()") from exc
        store = self.operator_state
        if store is None or (store.is_empty and not callable(hook)):
            return base
        snapshot = store.snapshot()
        if isinstance(base, TakenInChild):
            keyed = base.take
            return TakenInChild(lambda: {**keyed(), **snapshot})
        if isinstance(base, dict):
            return {**base, **snapshot}
        return snapshot


class UdfOperator(FunctionStateOperator, OneInputOperator):
    """An operator around one user function (copied per subtask, opened and closed)."""

    method = ""

    def __init__(self, name: str, function: Any) -> None:
        OneInputOperator.__init__(self, name)
        self.function = copy_function(function)
        self.fn = resolve_function(self.function, self.method, name)

    def open(self) -> None:
        self.initialize_function_state()
        try:
            call_open(self.function, self.runtime_context)
        except Exception as exc:
            raise self.fail(exc, "in open()") from exc

    def close(self) -> None:
        call_close(self.function)


def _failed_record(values: Batch, records: Iterator[Any]) -> Any:
    """The record a function failed on: the last one ``records`` (over ``values``) gave."""
    remaining = operator.length_hint(records)
    return values[len(values) - remaining - 1]


class MapOperator(UdfOperator):
    method = "map"

    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        records = iter(values)
        try:
            out = list(map(self.fn, records))
        except Exception as exc:
            raise self.fail(exc, record=_failed_record(values, records)) from exc
        self.output.collect(out, timestamps)


class FilterOperator(UdfOperator):
    method = "filter"

    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        records = iter(values)
        try:
            if timestamps is None:
                out = list(filter(self.fn, records))
                if out:
                    self.output.collect(out, None)
                return
            keep = list(map(self.fn, records))
        except Exception as exc:
            raise self.fail(exc, record=_failed_record(values, records)) from exc
        out = list(compress(values, keep))
        if out:
            self.output.collect(out, list(compress(timestamps, keep)))


class FlatMapOperator(UdfOperator):
    method = "flat_map"

    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        fn = self.fn
        out: list[Any] = []
        extend = out.extend
        result: Any = None
        value: Any = NO_RECORD
        try:
            if timestamps is None:
                for value in values:
                    result = fn(value)
                    if result is not None:
                        extend(result)
                out_ts: list[Any] | None = None
            else:
                out_ts = []
                for value, ts in zip(values, timestamps):
                    result = fn(value)
                    if result is not None:
                        before = len(out)
                        extend(result)
                        out_ts.extend(repeat(ts, len(out) - before))
        except Exception as exc:
            if isinstance(exc, TypeError) and not is_iterable(result):
                error = TypeError(not_iterable_message("flat_map", result))
                raise self.fail(error, record=value) from exc
            raise self.fail(exc, record=value) from exc
        if out:
            self.output.collect(out, out_ts)
