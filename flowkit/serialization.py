"""Serializers that turn batches of records into bytes for channels, and back.

Imports nothing else from flowkit but ``errors``.

The default serializer is exact: what arrives equals, and has the same type as, what was
sent. Chunks made only of scalars of Python's core types (str, int of any size, float,
complex, bool, None, bytes) are encoded with :mod:`marshal`, the fastest exact encoder
for them; every other chunk (containers, dataclasses, enums, subclasses, user classes)
is pickled. Channels only ever connect subtasks of one process or of one machine's
processes running the same interpreter, so both formats are read as they were written.

Why containers are pickled: :mod:`marshal` writes any object that exposes the buffer
protocol (``bytearray``, ``memoryview``, ``array.array``, numpy arrays, subclasses of
``bytes``) as plain ``bytes``, so a dict or tuple holding one would arrive changed.
Checking every nested value costs more than pickle costs beyond marshal (measured on
dicts of three fields: 130-210 ns a record to check, 50 ns more to pickle than to
marshal; on pairs pickle is as fast as marshal).

Streams whose records are known to be JSON documents can choose :class:`JsonSerializer`
(orjson) with ``output_type="json"``; it does not preserve tuples.
"""

from __future__ import annotations

import marshal
import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, cast

import orjson

from flowkit.errors import SerializationError

__all__ = [
    "DefaultSerializer",
    "JsonSerializer",
    "PickleSerializer",
    "TypeSerializer",
    "resolve_serializer",
]

FORMAT_MARSHAL = 0
FORMAT_PICKLE = 1
FORMAT_JSON = 2
FORMAT_CUSTOM = 3

#: Record types that marshal encodes exactly: scalars only (a container may hold an
#: object that marshal would turn into ``bytes``; see the module's docstring).
_MARSHAL_EXACT = frozenset({type(None), bool, int, float, complex, str, bytes})


class TypeSerializer(ABC):
    """Encodes a batch of records into one payload and decodes it again.

    Implementations must round-trip: ``decode(*encode(values)) == values``. A serializer
    is used by one subtask at a time and may keep per-instance state.

    Example:
        >>> s = DefaultSerializer()
        >>> s.decode(*s.encode([("a", 1), {"b": [2.5, None]}]))
        [('a', 1), {'b': [2.5, None]}]
    """

    #: Name shown in plans and error messages.
    name: str = "custom"

    @abstractmethod
    def encode(self, values: Sequence[Any]) -> tuple[int, bytes]:
        """Encode ``values`` and return ``(format_code, payload)``.

        Raises:
            SerializationError: when a value cannot be encoded; the message names its type.
        """

    @abstractmethod
    def decode(self, format_code: int, payload: bytes | memoryview) -> list[Any]:
        """Decode a payload produced by :meth:`encode` back into the list of values."""


def _unencodable(values: Sequence[Any], exc: BaseException) -> SerializationError:
    for value in values:
        try:
            pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as inner:
            return SerializationError(
                f"cannot serialize a record of type {type(value).__module__}."
                f"{type(value).__qualname__}: {inner}"
            )
    return SerializationError(f"cannot serialize records: {exc}")


class DefaultSerializer(TypeSerializer):
    """Exact, type-preserving serializer: marshal for core scalars, pickle for the rest."""

    name = "default"

    __slots__ = ()

    def encode(self, values: Sequence[Any]) -> tuple[int, bytes]:
        if set(map(type, values)) <= _MARSHAL_EXACT:
            try:
                return FORMAT_MARSHAL, marshal.dumps(cast("list[Any]", values))
            except (ValueError, RecursionError):
                pass
        try:
            return FORMAT_PICKLE, pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise _unencodable(values, exc) from exc

    def decode(self, format_code: int, payload: bytes | memoryview) -> list[Any]:
        if format_code == FORMAT_MARSHAL:
            return marshal.loads(payload)
        return pickle.loads(payload)


class PickleSerializer(TypeSerializer):
    """Always pickle (protocol 5): exact for every picklable value."""

    name = "pickle"

    __slots__ = ()

    def encode(self, values: Sequence[Any]) -> tuple[int, bytes]:
        try:
            return FORMAT_PICKLE, pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise _unencodable(values, exc) from exc

    def decode(self, format_code: int, payload: bytes | memoryview) -> list[Any]:
        return pickle.loads(payload)


class JsonSerializer(TypeSerializer):
    """orjson for streams of JSON documents (dict, list, str, int, float, bool, None).

    Tuples arrive as lists and non-finite floats as None: choose it only for records that
    are JSON already (``output_type="json"``). Values orjson cannot encode raise
    :class:`~flowkit.errors.SerializationError`.
    """

    name = "json"

    __slots__ = ()

    def encode(self, values: Sequence[Any]) -> tuple[int, bytes]:
        try:
            return FORMAT_JSON, orjson.dumps(values)
        except TypeError as exc:
            for value in values:
                try:
                    orjson.dumps(value)
                except TypeError as inner:
                    raise SerializationError(
                        f"cannot serialize a record of type {type(value).__qualname__} "
                        f"as JSON: {inner}"
                    ) from exc
            raise SerializationError(f"cannot serialize records as JSON: {exc}") from exc

    def decode(self, format_code: int, payload: bytes | memoryview) -> list[Any]:
        return orjson.loads(payload)


_BY_NAME: dict[str, type[TypeSerializer]] = {
    "default": DefaultSerializer,
    "auto": DefaultSerializer,
    "pickle": PickleSerializer,
    "json": JsonSerializer,
}


def resolve_serializer(output_type: Any) -> TypeSerializer:
    """Turn an ``output_type=`` argument into a serializer instance.

    Accepts ``None`` (the default serializer), a name (``"default"``, ``"pickle"``,
    ``"json"``), a :class:`TypeSerializer` instance, or type information
    (:mod:`flowkit.typeinfo`), which chooses its serializer.

    Raises:
        ValueError: for an unknown name or type.
    """
    if output_type is None:
        return DefaultSerializer()
    if isinstance(output_type, TypeSerializer):
        return output_type
    create = getattr(output_type, "create_serializer", None)
    if callable(create):  # type information (``Types.ROW(...)``) picks its serializer
        serializer = create()
        if isinstance(serializer, TypeSerializer):
            return serializer
    if isinstance(output_type, str) and output_type in _BY_NAME:
        return _BY_NAME[output_type]()
    raise ValueError(
        f"output_type must be a TypeSerializer or one of {sorted(_BY_NAME)}, got {output_type!r}"
    )
