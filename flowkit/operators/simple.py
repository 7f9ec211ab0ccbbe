"""Stateless one-input operators over whole batches: map, filter, flat_map."""

from __future__ import annotations

from itertools import compress, repeat
from typing import Any

from flowkit.operators.base import (
    Batch,
    OneInputOperator,
    Timestamps,
    call_close,
    call_open,
    copy_function,
    resolve_function,
)

__all__ = [
    "FilterOperator",
    "FlatMapOperator",
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


class UdfOperator(OneInputOperator):
    """An operator around one user function (copied per subtask, opened and closed)."""

    method = ""

    def __init__(self, name: str, function: Any) -> None:
        super().__init__(name)
        self.function = copy_function(function)
        self.fn = resolve_function(self.function, self.method, name)

    def open(self) -> None:
        try:
            call_open(self.function, self.runtime_context)
        except Exception as exc:
            raise self.fail(exc, "in open()") from exc

    def close(self) -> None:
        call_close(self.function)


class MapOperator(UdfOperator):
    method = "map"

    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        try:
            out = list(map(self.fn, values))
        except Exception as exc:
            raise self.fail(exc) from exc
        self.output.collect(out, timestamps)


class FilterOperator(UdfOperator):
    method = "filter"

    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        try:
            keep = list(map(self.fn, values))
        except Exception as exc:
            raise self.fail(exc) from exc
        out = list(compress(values, keep))
        if out:
            self.output.collect(
                out, None if timestamps is None else list(compress(timestamps, keep))
            )


class FlatMapOperator(UdfOperator):
    method = "flat_map"

    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        fn = self.fn
        out: list[Any] = []
        extend = out.extend
        result: Any = None
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
                raise self.fail(error) from exc
            raise self.fail(exc) from exc
        if out:
            self.output.collect(out, out_ts)
