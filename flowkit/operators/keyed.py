"""Rolling aggregations on keyed streams: reduce, sum, min, max, min_by, max_by."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from flowkit.operators.base import Batch, Timestamps
from flowkit.operators.simple import UdfOperator

__all__ = ["KeyedReduceOperator", "aggregation"]

_MISSING = object()


class KeyedReduceOperator(UdfOperator):
    """Emits the running reduction of each key after every record (Flink's reduce).

    The first record of a key is emitted as is; each later one is ``reduce(acc, value)``.
    Output records keep the input record's timestamp.
    """

    method = "reduce"

    def __init__(self, name: str, function: Any, key_selector: Callable[[Any], Any]) -> None:
        super().__init__(name, function)
        self.key_selector = key_selector
        #: Current reduction per key.
        self.accumulators: dict[Any, Any] = {}

    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        key_of = self.key_selector
        reduce = self.fn
        accs = self.accumulators
        get = accs.get
        out: list[Any] = []
        append = out.append
        try:
            for value in values:
                key = key_of(value)
                acc = get(key, _MISSING)
                if acc is not _MISSING:
                    value = reduce(acc, value)
                accs[key] = value
                append(value)
        except Exception as exc:
            if out:
                self.output.collect(out, None if timestamps is None else timestamps[: len(out)])
            raise self.fail(exc) from exc
        self.output.collect(out, timestamps)


def _getter(field: int | str | None) -> Callable[[Any], Any]:
    def get(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            if not isinstance(field, int):
                raise TypeError(f"field {field!r} must be a position for {type(value).__name__} records")
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
    """
    get = _getter(field)
    put = _setter(field)
    if kind == "sum":
        return lambda acc, value: put(acc, get(acc) + get(value))
    if kind == "min":
        return lambda acc, value: put(acc, get(value)) if get(value) < get(acc) else acc
    if kind == "max":
        return lambda acc, value: put(acc, get(value)) if get(value) > get(acc) else acc
    if kind == "min_by":
        return lambda acc, value: value if get(value) < get(acc) else acc
    if kind == "max_by":
        return lambda acc, value: value if get(value) > get(acc) else acc
    raise ValueError(f"unknown aggregation {kind!r}")
