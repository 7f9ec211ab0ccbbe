"""What the connectors share: serialization schemas, delivery guarantees, dead letters.

The schemas carry PyFlink's names (``SimpleStringSchema``; ``serialize`` /
``deserialize``) and work with every connector:

    >>> SimpleStringSchema().deserialize(b"hi")
    'hi'
    >>> JsonSchema().serialize({"a": 1})
    b'{"a":1}'
    >>> RawBytesSchema().deserialize(b"\\x00")
    b'\\x00'
"""

from __future__ import annotations

import enum
import importlib
from abc import ABC, abstractmethod
from types import ModuleType
from typing import Any

import orjson

from flowkit.elements import OutputTag
from flowkit.sources import DeserializationError, ReaderOutput

__all__ = [
    "DeliveryGuarantee",
    "DeserializationSchema",
    "JsonSchema",
    "RawBytesSchema",
    "SerializationSchema",
    "SimpleStringSchema",
    "emit_bad_record",
    "require",
]


class DeliveryGuarantee(enum.Enum):
    """What a sink promises (PyFlink's ``DeliveryGuarantee``).

    * ``NONE``: records may be lost or duplicated on failure.
    * ``AT_LEAST_ONCE``: every record a checkpoint covers is written before the
      checkpoint completes; a restart may write some again.
    * ``EXACTLY_ONCE``: each record is visible once, committed when the checkpoint that
      covers it completes (readers see it after that, e.g. Kafka's ``read_committed``).
    """

    NONE = "none"
    AT_LEAST_ONCE = "at-least-once"
    EXACTLY_ONCE = "exactly-once"


class DeserializationSchema(ABC):
    """Turns the bytes of a message into a record."""

    @abstractmethod
    def deserialize(self, message: bytes) -> Any: ...


class SerializationSchema(ABC):
    """Turns a record into the bytes of a message."""

    @abstractmethod
    def serialize(self, element: Any) -> bytes: ...


class SimpleStringSchema(DeserializationSchema, SerializationSchema):
    """Text in ``charset`` (UTF-8 by default), both ways; a non-str record is written
    as ``str(record)``."""

    def __init__(self, charset: str = "utf-8") -> None:
        self.charset = charset

    def deserialize(self, message: bytes) -> str:
        return message.decode(self.charset)

    def serialize(self, element: Any) -> bytes:
        text = element if isinstance(element, str) else str(element)
        return text.encode(self.charset)

    def __repr__(self) -> str:
        return f"SimpleStringSchema({self.charset!r})"


class JsonSchema(DeserializationSchema, SerializationSchema):
    """JSON documents (orjson), both ways: dicts, lists, numbers, strings."""

    def deserialize(self, message: bytes) -> Any:
        return orjson.loads(message)

    def serialize(self, element: Any) -> bytes:
        return orjson.dumps(element)

    def __repr__(self) -> str:
        return "JsonSchema()"


class RawBytesSchema(DeserializationSchema, SerializationSchema):
    """The message's bytes as they are (``bytes``, ``bytearray`` or ``memoryview``
    records are written as they are)."""

    def deserialize(self, message: bytes) -> bytes:
        return bytes(message)

    def serialize(self, element: Any) -> bytes:
        if isinstance(element, (bytes, bytearray, memoryview)):
            return bytes(element)
        raise TypeError(
            f"RawBytesSchema writes bytes, got {type(element).__name__}; use "
            f"SimpleStringSchema() or JsonSchema() for other records"
        )

    def __repr__(self) -> str:
        return "RawBytesSchema()"


def emit_bad_record(
    output: ReaderOutput,
    dead_letters: OutputTag | None,
    error: DeserializationError,
    cause: BaseException,
    timestamp: int | None = None,
) -> None:
    """A record that cannot be deserialized: to the dead-letter side output when the user
    gave one (as a :class:`~flowkit.sources.DeadLetter`), else the job fails with
    ``error`` (which names the connector, topic, partition and offset)."""
    if dead_letters is None:
        raise error from cause
    output.emit_side_output(dead_letters, error.dead_letter(), timestamp)


def require(module: str, extra: str) -> ModuleType:
    """Import a connector's client library, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f'this connector needs the {module!r} package: pip install "flowkit[{extra}]"'
        ) from exc
