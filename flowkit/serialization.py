"""Serializers that turn batches of records into bytes for channels, and back.

Imports nothing else from flowkit but ``errors`` and the optional compiled helpers
(:mod:`flowkit._native`).

The default serializer is exact: what arrives equals, and has the same type as, what was
sent. It writes a batch in one of three formats:

- flowkit's binary format (``FORMAT_BINARY``, by the compiled helpers when they are built):
  batches made only of exact built-in types, that is str, int within 64 bits, float, bool,
  None, bytes, and tuples, lists and dicts of them. A dict's str keys are written once per
  batch and shared by the records that read them back;
- :mod:`marshal`, without the compiled helpers, for batches of scalars of Python's core
  types (str, int of any size, float, complex, bool, None, bytes);
- pickle for everything else (other containers, dataclasses, enums, subclasses, user
  classes, ints beyond 64 bits).

Channels only ever connect subtasks of one process or of one machine's processes running
the same interpreter and the same install; a process without the compiled helpers still
reads the binary format (:func:`decode_binary`, in pure Python).

Why, without the compiled helpers, containers are pickled and not marshalled:
:mod:`marshal` writes any object that exposes the buffer protocol (``bytearray``,
``memoryview``, ``array.array``, numpy arrays, subclasses of ``bytes``) as plain
``bytes``, so a dict or tuple holding one would arrive changed.
Checking every nested value costs more than pickle costs beyond marshal (measured on
dicts of three fields: 130-210 ns a record to check, 50 ns more to pickle than to
marshal; on pairs pickle is as fast as marshal).

Streams whose records are known to be JSON documents can choose :class:`JsonSerializer`
(orjson) with ``output_type="json"``; it does not preserve tuples.
"""

from __future__ import annotations

import marshal
import pickle
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, cast

import orjson

from flowkit._native import speedups
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
FORMAT_BINARY = 4

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
    """Exact, type-preserving serializer: flowkit's binary format (or marshal) for built-in
    types, pickle for the rest (see the module's docstring)."""

    name = "default"

    __slots__ = ()

    def encode(self, values: Sequence[Any]) -> tuple[int, bytes]:
        if encode_binary_batch is not None:
            payload = encode_binary_batch(values)
            if payload is not None:
                return FORMAT_BINARY, payload
        elif set(map(type, values)) <= _MARSHAL_EXACT:
            try:
                return FORMAT_MARSHAL, marshal.dumps(cast("list[Any]", values))
            except (ValueError, RecursionError):
                pass
        try:
            return FORMAT_PICKLE, pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise _unencodable(values, exc) from exc

    def decode(self, format_code: int, payload: bytes | memoryview) -> list[Any]:
        if format_code == FORMAT_BINARY:
            return decode_binary_batch(payload)
        if format_code == FORMAT_MARSHAL:
            return marshal.loads(payload)
        return pickle.loads(payload)


# --------------------------------------------------------------------- the binary format
# The layout is described in flowkit/_speedups.c, which writes it; decode_binary reads it
# without the compiled helpers.
(
    _T_NONE,
    _T_FALSE,
    _T_TRUE,
    _T_INT32,
    _T_INT64,
    _T_FLOAT,
    _T_ASCII,
    _T_UTF8,
    _T_KEY_NEW,
    _T_KEY_REF,
    _T_BYTES,
    _T_TUPLE,
    _T_LIST,
    _T_DICT,
) = range(14)
_MAX_DEPTH = 64
_MEMO_MAX = 64
_INT32 = struct.Struct("<i").unpack_from
_INT64 = struct.Struct("<q").unpack_from
_FLOAT = struct.Struct("<d").unpack_from


class _BinaryReader:
    __slots__ = ("data", "keys", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.keys: list[str] = []

    def corrupt(self, what: str) -> ValueError:
        return ValueError(f"corrupt record batch: {what}")

    def varint(self) -> int:
        data = self.data
        value = shift = 0
        while self.pos < len(data) and shift < 64:
            byte = data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise self.corrupt("truncated length")

    def length(self) -> int:
        n = self.varint()
        if n > len(self.data) - self.pos:
            raise self.corrupt("a length beyond the end of the payload")
        return n

    def take(self, n: int) -> bytes:
        if len(self.data) - self.pos < n:
            raise self.corrupt("truncated value")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def string(self, tag: int) -> str:
        raw = self.take(self.length())
        if tag == _T_UTF8:
            return raw.decode("utf-8", "surrogatepass")
        if not raw.isascii():
            raise self.corrupt("a non-ASCII byte in an ASCII string")
        return raw.decode("ascii")

    def value(self, depth: int) -> Any:
        tag = self.take(1)[0]
        if tag <= _T_TRUE:
            return (None, False, True)[tag]
        if tag == _T_INT32:
            return _INT32(self.take(4))[0]
        if tag == _T_INT64:
            return _INT64(self.take(8))[0]
        if tag == _T_FLOAT:
            return _FLOAT(self.take(8))[0]
        if tag in (_T_ASCII, _T_UTF8):
            return self.string(tag)
        if tag == _T_KEY_NEW:
            sub = self.take(1)[0]
            if sub not in (_T_ASCII, _T_UTF8):
                raise self.corrupt("a remembered key that is not a str")
            if len(self.keys) >= _MEMO_MAX:
                raise self.corrupt("too many remembered keys")
            key = self.string(sub)
            self.keys.append(key)
            return key
        if tag == _T_KEY_REF:
            index = self.varint()
            if index >= len(self.keys):
                raise self.corrupt("a reference to a key not seen")
            return self.keys[index]
        if tag == _T_BYTES:
            return self.take(self.length())
        if tag > _T_DICT:
            raise self.corrupt("an unknown tag")
        if depth >= _MAX_DEPTH:
            raise self.corrupt("nested too deeply")
        n = self.length()
        if tag == _T_DICT:
            out: dict[Any, Any] = {}
            for _ in range(n):
                key = self.value(depth + 1)
                out[key] = self.value(depth + 1)
            return out
        items = [self.value(depth + 1) for _ in range(n)]
        return tuple(items) if tag == _T_TUPLE else items


def decode_binary(payload: bytes | memoryview) -> list[Any]:
    """Read a batch in flowkit's binary format in pure Python (the compiled helpers write
    and read it faster; a process without them still reads what they wrote).

    Raises:
        ValueError: if the payload is not a whole batch in that format.
    """
    reader = _BinaryReader(bytes(payload))
    values = [reader.value(0) for _ in range(reader.length())]
    if reader.pos != len(reader.data):
        raise reader.corrupt("bytes after the last value")
    return values


#: Writes a list of records in the binary format, or returns None when one is not of the
#: built-in types it takes; None without the compiled helpers.
encode_binary_batch: Callable[[Sequence[Any]], bytes | None] | None = (
    speedups.encode_batch if speedups is not None else None
)
#: Reads a payload in the binary format: compiled, or :func:`decode_binary`.
decode_binary_batch: Callable[[bytes | memoryview], list[Any]] = (
    speedups.decode_batch if speedups is not None else decode_binary
)


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
