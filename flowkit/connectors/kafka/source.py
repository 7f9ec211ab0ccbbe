"""KafkaSource: read Kafka topics with offsets in checkpoints (PyFlink's names).

The source is a :class:`~flowkit.sources.SplitSource` whose splits are the partitions of
its topics (split id ``f"{topic}-{partition}"``), each owned by one subtask as Flink's
``KafkaSourceEnumerator`` assigns them. Every reader finds its partitions in the
cluster's metadata (and, with ``partition.discovery.interval.ms``, new ones while it
runs), reads them with one aiokafka consumer (``assign()``, no group membership) in a
task it owns, and keeps the next offset of each partition in checkpoints: a restore
continues with exactly the next record, also at another parallelism. When a checkpoint
completes, its offsets are committed to the consumer group (when there is a group id),
for lag monitoring only, as in Flink.

Example:
    >>> from flowkit.connectors.base import SimpleStringSchema
    >>> source = (
    ...     KafkaSource.builder()
    ...     .set_bootstrap_servers("localhost:9092")
    ...     .set_topics("orders")
    ...     .set_group_id("order-stats")
    ...     .set_starting_offsets(KafkaOffsetsInitializer.earliest())
    ...     .set_value_only_deserializer(SimpleStringSchema())
    ...     .build()
    ... )
    >>> source.bounded
    False

    and then ``env.from_source(source, WatermarkStrategy.for_monotonous_timestamps(),
    "orders")``: Kafka's record timestamps are the event times.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import struct
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from flowkit.connectors.base import DeserializationSchema, emit_bad_record, require
from flowkit.elements import OutputTag
from flowkit.sources import (
    DeserializationError,
    InputStatus,
    ReaderOutput,
    SplitReader,
    SplitSource,
)

__all__ = [
    "KafkaOffsetResetStrategy",
    "KafkaOffsetsInitializer",
    "KafkaRecord",
    "KafkaRecordDeserializationSchema",
    "KafkaSource",
    "KafkaSourceBuilder",
    "KafkaTopicPartition",
]

_log = logging.getLogger("flowkit.connectors.kafka")

#: Flink's default partition discovery interval of an unbounded source (5 minutes).
DEFAULT_DISCOVERY_INTERVAL_MS = 300_000


# ---------------------------------------------------------------------- offsets
class KafkaTopicPartition(NamedTuple):
    """A partition of a topic (PyFlink's ``KafkaTopicPartition``)."""

    topic: str
    partition: int


class KafkaOffsetResetStrategy(enum.Enum):
    """Where to start when there is no committed (or given) offset for a partition."""

    EARLIEST = "earliest"
    LATEST = "latest"
    NONE = "none"


class KafkaOffsetsInitializer:
    """Where a partition starts (``set_starting_offsets``) or stops (``set_bounded``),
    with PyFlink's factory methods.

    Example:
        >>> KafkaOffsetsInitializer.earliest()
        KafkaOffsetsInitializer.earliest()
        >>> KafkaOffsetsInitializer.offsets({KafkaTopicPartition("t", 0): 42})
        KafkaOffsetsInitializer.offsets({KafkaTopicPartition(topic='t', partition=0): 42})
    """

    __slots__ = ("kind", "offset_map", "reset", "timestamp_ms")

    def __init__(
        self,
        kind: str,
        *,
        reset: KafkaOffsetResetStrategy = KafkaOffsetResetStrategy.NONE,
        timestamp_ms: int | None = None,
        offset_map: Mapping[KafkaTopicPartition, int] | None = None,
    ) -> None:
        self.kind = kind
        self.reset = reset
        self.timestamp_ms = timestamp_ms
        self.offset_map = dict(offset_map or {})

    @staticmethod
    def earliest() -> KafkaOffsetsInitializer:
        """The first offset of each partition."""
        return KafkaOffsetsInitializer("earliest")

    @staticmethod
    def latest() -> KafkaOffsetsInitializer:
        """The end of each partition when the reader starts (as a stopping offset: the
        records there when the reader starts)."""
        return KafkaOffsetsInitializer("latest")

    @staticmethod
    def committed_offsets(
        reset_strategy: KafkaOffsetResetStrategy = KafkaOffsetResetStrategy.NONE,
        *,
        offset_reset_strategy: KafkaOffsetResetStrategy | None = None,
    ) -> KafkaOffsetsInitializer:
        """The consumer group's committed offsets (needs ``set_group_id``); a partition
        without one starts by ``reset_strategy`` (``NONE``: the job fails)."""
        strategy = offset_reset_strategy or reset_strategy
        if not isinstance(strategy, KafkaOffsetResetStrategy):
            raise TypeError(f"reset_strategy must be a KafkaOffsetResetStrategy, got {strategy!r}")
        return KafkaOffsetsInitializer("committed", reset=strategy)

    @staticmethod
    def timestamp(timestamp_ms: int) -> KafkaOffsetsInitializer:
        """The first record whose timestamp is ``>= timestamp_ms`` (epoch milliseconds);
        a partition without one starts at its end."""
        if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int):
            raise TypeError(f"timestamp(...) needs epoch milliseconds as int, got {timestamp_ms!r}")
        return KafkaOffsetsInitializer("timestamp", timestamp_ms=timestamp_ms)

    @staticmethod
    def offsets(
        offsets: Mapping[KafkaTopicPartition | tuple[str, int], int],
        reset_strategy: KafkaOffsetResetStrategy = KafkaOffsetResetStrategy.EARLIEST,
        *,
        offset_reset_strategy: KafkaOffsetResetStrategy | None = None,
    ) -> KafkaOffsetsInitializer:
        """The given offset of each listed partition; others by ``reset_strategy``."""
        given: dict[KafkaTopicPartition, int] = {}
        for key, offset in dict(offsets).items():
            topic, partition = key
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise ValueError(f"offset of {key!r} must be an int >= 0, got {offset!r}")
            given[KafkaTopicPartition(str(topic), int(partition))] = offset
        return KafkaOffsetsInitializer(
            "offsets", reset=offset_reset_strategy or reset_strategy, offset_map=given
        )

    def __repr__(self) -> str:
        if self.kind == "committed":
            return f"KafkaOffsetsInitializer.committed_offsets({self.reset})"
        if self.kind == "timestamp":
            return f"KafkaOffsetsInitializer.timestamp({self.timestamp_ms})"
        if self.kind == "offsets":
            return f"KafkaOffsetsInitializer.offsets({self.offset_map!r})"
        return f"KafkaOffsetsInitializer.{self.kind}()"


# ---------------------------------------------------------------------- records
class KafkaRecord:
    """A record as read from Kafka, given to a ``KafkaRecordDeserializationSchema``.

    Attributes:
        topic, partition, offset: where it is.
        timestamp: its timestamp in epoch milliseconds (the event time);
            ``timestamp_type`` 0 is CreateTime, 1 LogAppendTime.
        key, value: bytes, or None (a tombstone has no value).
        headers: ``[(name, bytes), ...]``.
    """

    __slots__ = (
        "headers",
        "key",
        "offset",
        "partition",
        "timestamp",
        "timestamp_type",
        "topic",
        "value",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp: int,
        key: Any,
        value: Any,
        headers: Sequence[tuple[str, bytes]] = (),
        timestamp_type: int = 0,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = list(headers)
        self.timestamp_type = timestamp_type

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.topic,
            self.partition,
            self.offset,
            self.timestamp,
            self.key,
            self.value,
            self.headers,
            self.timestamp_type,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KafkaRecord) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((self.topic, self.partition, self.offset))

    def __reduce__(self) -> Any:
        return (KafkaRecord, self._fields())

    def __repr__(self) -> str:
        return (
            f"KafkaRecord(topic={self.topic!r}, partition={self.partition}, "
            f"offset={self.offset}, timestamp={self.timestamp}, key={self.key!r}, "
            f"value={self.value!r:.80}, headers={self.headers!r})"
        )


class KafkaRecordDeserializationSchema(ABC):
    """Turns a :class:`KafkaRecord` into the record the stream carries (Flink's
    ``KafkaRecordDeserializationSchema``). A result of None is skipped, as in Flink.

    Example:
        >>> schema = KafkaRecordDeserializationSchema.of(
        ...     lambda r: (r.key.decode(), r.value.decode(), r.partition, r.offset))
        >>> schema.deserialize(KafkaRecord("t", 2, 7, 1000, b"k", b"v"))
        ('k', 'v', 2, 7)
    """

    @abstractmethod
    def deserialize(self, record: KafkaRecord) -> Any:
        """The value of ``record`` (raise to mark it as bad data)."""

    @staticmethod
    def value_only(schema: DeserializationSchema) -> KafkaRecordDeserializationSchema:
        """Only the value, deserialized by ``schema`` (tombstones are skipped)."""
        return _ValueOnly(schema)

    @staticmethod
    def of(function: Callable[[KafkaRecord], Any]) -> KafkaRecordDeserializationSchema:
        """A function of the whole record (key, value, headers, timestamp, topic,
        partition, offset)."""
        if not callable(function):
            raise TypeError(
                f"KafkaRecordDeserializationSchema.of needs a callable, got {function!r}"
            )
        return _FromFunction(function)

    @staticmethod
    def records(
        key_schema: DeserializationSchema | None = None,
        value_schema: DeserializationSchema | None = None,
    ) -> KafkaRecordDeserializationSchema:
        """The :class:`KafkaRecord` itself, its key and value deserialized by the given
        schemas (bytes without one)."""
        return _Records(key_schema, value_schema)


class _ValueOnly(KafkaRecordDeserializationSchema):
    def __init__(self, schema: DeserializationSchema) -> None:
        if not callable(getattr(schema, "deserialize", None)):
            raise TypeError(f"a value-only deserializer needs a deserialize method, got {schema!r}")
        self.schema = schema

    def deserialize(self, record: KafkaRecord) -> Any:
        if record.value is None:
            return None
        return self.schema.deserialize(record.value)

    def __repr__(self) -> str:
        return f"value_only({self.schema!r})"


class _FromFunction(KafkaRecordDeserializationSchema):
    def __init__(self, function: Callable[[KafkaRecord], Any]) -> None:
        self.function = function

    def deserialize(self, record: KafkaRecord) -> Any:
        return self.function(record)


class _Records(KafkaRecordDeserializationSchema):
    def __init__(
        self, key_schema: DeserializationSchema | None, value_schema: DeserializationSchema | None
    ) -> None:
        self.key_schema = key_schema
        self.value_schema = value_schema

    def deserialize(self, record: KafkaRecord) -> Any:
        if self.key_schema is not None and record.key is not None:
            record.key = self.key_schema.deserialize(record.key)
        if self.value_schema is not None and record.value is not None:
            record.value = self.value_schema.deserialize(record.value)
        return record


# ---------------------------------------------------------------------- properties
_INT_PROPERTIES = {
    "fetch.max.wait.ms": "fetch_max_wait_ms",
    "fetch.min.bytes": "fetch_min_bytes",
    "fetch.max.bytes": "fetch_max_bytes",
    "max.partition.fetch.bytes": "max_partition_fetch_bytes",
    "request.timeout.ms": "request_timeout_ms",
    "retry.backoff.ms": "retry_backoff_ms",
    "metadata.max.age.ms": "metadata_max_age_ms",
    "connections.max.idle.ms": "connections_max_idle_ms",
}
_STR_PROPERTIES = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.plain.username": "sasl_plain_username",
    "sasl.plain.password": "sasl_plain_password",
    "client.rack": "client_rack",
}
_OWN_PROPERTIES = (
    "bootstrap.servers",
    "group.id",
    "client.id.prefix",
    "partition.discovery.interval.ms",
    "isolation.level",
    "auto.offset.reset",
    "max.poll.records",
    "commit.offsets.on.checkpoint",
    "check.crcs",
)
SUPPORTED_PROPERTIES = tuple(sorted((*_OWN_PROPERTIES, *_INT_PROPERTIES, *_STR_PROPERTIES)))


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"Kafka property {key!r} must be true or false, got {value!r}")


def _as_int(key: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"Kafka property {key!r} must be an integer, got {value!r}") from None


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode()`` (a signed 32-bit int over UTF-16 code units)."""
    data = text.encode("utf-16-be")
    h = 0
    for (unit,) in struct.iter_unpack(">H", data):
        h = (31 * h + unit) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def kafka_split_owner(topic: str, partition: int, parallelism: int) -> int:
    """The subtask Flink's ``KafkaSourceEnumerator`` gives a partition: the topic's
    start index ``(hashCode * 31 & 0x7FFFFFFF) % parallelism``, plus the partition."""
    start = ((java_string_hash(topic) * 31) & 0x7FFFFFFF) % parallelism
    return (start + partition) % parallelism


def _split_id(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def _parse_split_id(split_id: str) -> tuple[str, int]:
    topic, sep, partition = split_id.rpartition("-")
    if not sep or not topic or not partition.isdigit():
        raise ValueError(f"not a Kafka split id (topic-partition): {split_id!r}")
    return topic, int(partition)


# ---------------------------------------------------------------------- source
class KafkaSource(SplitSource):
    """A Kafka source (build it with :meth:`KafkaSource.builder`).

    Read with ``env.from_source(source, watermark_strategy, name)``; see the module
    docstring for an example and docs/connectors.md (Kafka source) for every option.
    """

    name = "Kafka Source"

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topics: tuple[str, ...],
        topic_pattern: str | None,
        group_id: str | None,
        starting: KafkaOffsetsInitializer,
        stopping: KafkaOffsetsInitializer | None,
        bounded: bool,
        deserializer: KafkaRecordDeserializationSchema,
        properties: dict[str, Any],
        dead_letter_tag: OutputTag | None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.topic_pattern = topic_pattern
        self.group_id = group_id
        self.starting = starting
        self.stopping = stopping
        self.deserializer = deserializer
        self.properties = dict(properties)
        self.dead_letter_tag = dead_letter_tag
        self.bounded = bounded and stopping is not None

    @staticmethod
    def builder() -> KafkaSourceBuilder:
        """A :class:`KafkaSourceBuilder`."""
        return KafkaSourceBuilder()

    def split_owner(self, split_id: str, parallelism: int) -> int:
        topic, partition = _parse_split_id(split_id)
        return kafka_split_owner(topic, partition, parallelism)

    def matches(self, topic: str) -> bool:
        """Whether ``topic`` is one this source reads."""
        if self.topic_pattern is not None:
            return re.fullmatch(self.topic_pattern, topic) is not None
        return topic in self.topics

    def create_reader(self, subtask_index: int, parallelism: int) -> KafkaSourceReader:
        return KafkaSourceReader(self, subtask_index, parallelism)

    def __repr__(self) -> str:
        what = f"pattern {self.topic_pattern!r}" if self.topic_pattern else f"topics {self.topics}"
        return f"KafkaSource({what} at {self.bootstrap_servers})"


class KafkaSourceBuilder:
    """Builds a :class:`KafkaSource` (PyFlink's ``KafkaSourceBuilder``).

    Example:
        >>> from flowkit.connectors.base import JsonSchema
        >>> source = (KafkaSource.builder()
        ...     .set_bootstrap_servers("localhost:9092")
        ...     .set_topic_pattern("clicks-.*")
        ...     .set_bounded(KafkaOffsetsInitializer.latest())
        ...     .set_value_only_deserializer(JsonSchema())
        ...     .set_property("partition.discovery.interval.ms", "10000")
        ...     .build())
        >>> source.bounded
        True
    """

    def __init__(self) -> None:
        self._bootstrap: str | None = None
        self._topics: tuple[str, ...] = ()
        self._pattern: str | None = None
        self._group_id: str | None = None
        self._starting = KafkaOffsetsInitializer.earliest()
        self._stopping: KafkaOffsetsInitializer | None = None
        self._bounded = False
        self._deserializer: KafkaRecordDeserializationSchema | None = None
        self._properties: dict[str, Any] = {}
        self._dead_letter_tag: OutputTag | None = None

    def set_bootstrap_servers(self, servers: str | Iterable[str]) -> KafkaSourceBuilder:
        """``"host:port[,host:port...]"`` (or a list of them)."""
        text = servers if isinstance(servers, str) else ",".join(servers)
        if not text.strip():
            raise ValueError("set_bootstrap_servers needs at least one host:port")
        self._bootstrap = text
        return self

    def set_topics(self, *topics: str | Iterable[str]) -> KafkaSourceBuilder:
        """Read these topics (``set_topics("a", "b")`` or ``set_topics(["a", "b"])``)."""
        names: list[str] = []
        for topic in topics:
            names.extend([topic] if isinstance(topic, str) else list(topic))
        if not names or not all(isinstance(t, str) and t for t in names):
            raise ValueError(f"set_topics needs non-empty topic names, got {topics!r}")
        self._topics = tuple(dict.fromkeys(names))
        self._pattern = None
        return self

    def set_topic_pattern(self, pattern: str | re.Pattern[str]) -> KafkaSourceBuilder:
        """Read every topic whose whole name matches ``pattern`` (a regular expression)."""
        text = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
        re.compile(text)
        self._pattern = text
        self._topics = ()
        return self

    def set_group_id(self, group_id: str) -> KafkaSourceBuilder:
        """The consumer group offsets are committed to when checkpoints complete (and
        ``committed_offsets()`` reads)."""
        self._group_id = group_id
        return self

    def set_starting_offsets(self, initializer: KafkaOffsetsInitializer) -> KafkaSourceBuilder:
        """Where partitions start (default: earliest). Partitions found later by
        partition discovery start at their earliest offset."""
        if not isinstance(initializer, KafkaOffsetsInitializer):
            raise TypeError(f"expected a KafkaOffsetsInitializer, got {initializer!r}")
        self._starting = initializer
        return self

    def set_bounded(self, stopping: KafkaOffsetsInitializer) -> KafkaSourceBuilder:
        """Make the source bounded: each partition ends at this offset (exclusive), and
        the source ends when every partition has."""
        if not isinstance(stopping, KafkaOffsetsInitializer):
            raise TypeError(f"expected a KafkaOffsetsInitializer, got {stopping!r}")
        self._stopping = stopping
        self._bounded = True
        return self

    def set_unbounded(self, stopping: KafkaOffsetsInitializer | None = None) -> KafkaSourceBuilder:
        """Unbounded (the default). As in Flink, with stopping offsets the partitions
        still end there, but the source is not bounded; without them it never ends."""
        if stopping is not None and not isinstance(stopping, KafkaOffsetsInitializer):
            raise TypeError(f"expected a KafkaOffsetsInitializer, got {stopping!r}")
        self._stopping = stopping
        self._bounded = False
        return self

    def set_value_only_deserializer(self, schema: DeserializationSchema) -> KafkaSourceBuilder:
        """Records are the values, deserialized by ``schema`` (``SimpleStringSchema()``,
        ``JsonSchema()``, ``RawBytesSchema()``...); tombstones are skipped."""
        self._deserializer = KafkaRecordDeserializationSchema.value_only(schema)
        return self

    def set_deserializer(
        self, deserializer: KafkaRecordDeserializationSchema | Callable[[KafkaRecord], Any]
    ) -> KafkaSourceBuilder:
        """Records are made from the whole :class:`KafkaRecord` (a
        ``KafkaRecordDeserializationSchema`` or a function of the record)."""
        if not isinstance(deserializer, KafkaRecordDeserializationSchema):
            deserializer = KafkaRecordDeserializationSchema.of(deserializer)
        self._deserializer = deserializer
        return self

    def set_property(self, key: str, value: Any) -> KafkaSourceBuilder:
        """A Kafka consumer or source property (see ``SUPPORTED_PROPERTIES``), e.g.
        ``isolation.level``, ``client.id.prefix``, ``partition.discovery.interval.ms``."""
        if key not in SUPPORTED_PROPERTIES:
            raise ValueError(
                f"unknown Kafka source property {key!r}; supported: {', '.join(SUPPORTED_PROPERTIES)}"
            )
        if key == "bootstrap.servers":
            return self.set_bootstrap_servers(str(value))
        if key == "group.id":
            return self.set_group_id(str(value))
        if key == "isolation.level" and value not in ("read_committed", "read_uncommitted"):
            raise ValueError(
                f"isolation.level must be 'read_committed' or 'read_uncommitted', got {value!r}"
            )
        if key == "auto.offset.reset" and value not in ("earliest", "latest", "none"):
            raise ValueError(f"auto.offset.reset must be earliest, latest or none, got {value!r}")
        if key in ("commit.offsets.on.checkpoint", "check.crcs"):
            value = _as_bool(key, value)
        elif key in _INT_PROPERTIES or key in (
            "partition.discovery.interval.ms",
            "max.poll.records",
        ):
            value = _as_int(key, value)
            if key == "max.poll.records" and value < 1:
                raise ValueError(f"max.poll.records must be >= 1, got {value}")
        self._properties[key] = value
        return self

    def set_properties(self, properties: Mapping[str, Any]) -> KafkaSourceBuilder:
        """Several properties at once."""
        for key, value in properties.items():
            self.set_property(key, value)
        return self

    def set_client_id_prefix(self, prefix: str) -> KafkaSourceBuilder:
        """Client ids are ``f"{prefix}-{subtask}"``."""
        return self.set_property("client.id.prefix", prefix)

    def set_dead_letter_tag(self, tag: OutputTag) -> KafkaSourceBuilder:
        """Records that cannot be deserialized go to this side output as
        :class:`~flowkit.sources.DeadLetter` instead of failing the job."""
        if not isinstance(tag, OutputTag):
            raise TypeError(f"set_dead_letter_tag needs an OutputTag, got {tag!r}")
        self._dead_letter_tag = tag
        return self

    def build(self) -> KafkaSource:
        """The source.

        Raises:
            ValueError: a required option is missing or options contradict each other.
        """
        if not self._bootstrap:
            raise ValueError("KafkaSource needs set_bootstrap_servers(...)")
        if not self._topics and self._pattern is None:
            raise ValueError("KafkaSource needs set_topics(...) or set_topic_pattern(...)")
        if self._deserializer is None:
            raise ValueError(
                "KafkaSource needs set_value_only_deserializer(...) or set_deserializer(...)"
            )
        uses_group = [
            i for i in (self._starting, self._stopping) if i is not None and i.kind == "committed"
        ]
        if uses_group and not self._group_id:
            raise ValueError("KafkaOffsetsInitializer.committed_offsets() needs set_group_id(...)")
        return KafkaSource(
            bootstrap_servers=self._bootstrap,
            topics=self._topics,
            topic_pattern=self._pattern,
            group_id=self._group_id,
            starting=self._starting,
            stopping=self._stopping,
            bounded=self._bounded,
            deserializer=self._deserializer,
            properties=self._properties,
            dead_letter_tag=self._dead_letter_tag,
        )


# ---------------------------------------------------------------------- reader
class _Split:
    """One partition a reader owns."""

    __slots__ = (
        "fetch_position",
        "finished",
        "high_watermark",
        "min_timestamp",
        "next_offset",
        "output",
        "partition",
        "split_id",
        "stop",
        "stop_timestamp",
        "topic",
        "tp",
    )

    def __init__(self, topic: str, partition: int, tp: Any, next_offset: int) -> None:
        self.topic = topic
        self.partition = partition
        self.split_id = _split_id(topic, partition)
        self.tp = tp
        #: The offset of the first record not emitted yet (the checkpointed state).
        self.next_offset = next_offset
        #: Where the consumer fetches next (the fetch task's side).
        self.fetch_position = next_offset
        #: Records before the first one with a timestamp >= this are skipped (the
        #: ``timestamp`` starting offsets, checked here: not every broker finds it).
        self.min_timestamp: int | None = None
        #: Bounded: the offset the split ends at (exclusive), or the first record with
        #: a timestamp >= ``stop_timestamp`` ends it.
        self.stop: int | None = None
        self.stop_timestamp: int | None = None
        self.finished = False
        self.high_watermark: int | None = None
        self.output: ReaderOutput | None = None

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"offset": self.next_offset}
        if self.min_timestamp is not None:
            state["min_timestamp"] = self.min_timestamp
        return state


class _Batch:
    """Records of one split fetched and not emitted yet (``records[index:]``);
    ``position`` is the fetch position after them, ``end`` says the split ends there."""

    __slots__ = ("end", "index", "position", "records", "split")

    def __init__(self, split: _Split, records: list[Any], position: int, end: bool) -> None:
        self.split = split
        self.records = records
        self.index = 0
        self.position = position
        self.end = end


class KafkaSourceReader(SplitReader):
    """Reads the partitions one subtask owns (see :class:`KafkaSource`)."""

    def __init__(self, source: KafkaSource, subtask_index: int, parallelism: int) -> None:
        self.source = source
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        props = source.properties
        self.max_poll_records: int = props.get("max.poll.records", 500)
        discovery = props.get("partition.discovery.interval.ms")
        if source.bounded:
            discovery = None  # as in Flink, a bounded source reads the partitions it found
        elif discovery is None:
            discovery = DEFAULT_DISCOVERY_INTERVAL_MS
        self.discovery_interval_s = None if not discovery or discovery <= 0 else discovery / 1000
        self.commit_on_checkpoint = bool(source.group_id) and props.get(
            "commit.offsets.on.checkpoint", True
        )
        #: Records fetched ahead at most (a few batches).
        self.max_buffered = 4 * self.max_poll_records
        self._splits: dict[str, _Split] = {}
        self._restored: dict[str, Any] | None = None
        self._known_ends: dict[Any, int] = {}
        self._opening = False
        self._consumer: Any = None
        self._group: Any = None
        self._tp_class: Any = None
        self._fetch_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._to_commit: dict[Any, int] | None = None
        self._pending_commits: dict[int, dict[Any, int]] = {}
        self._buffer: deque[_Batch] = deque()
        self._buffered = 0
        self._new_outputs: list[_Split] = []
        self._space: asyncio.Event | None = None
        self._available: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._fetch_done = False
        self._idle_marked = False
        deserializer = source.deserializer
        self._value_schema = deserializer.schema if type(deserializer) is _ValueOnly else None

    # ------------------------------------------------------------------ checkpoints
    def restore_splits(self, splits: dict[str, Any]) -> None:
        self._restored = dict(splits)

    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        splits = self._splits
        if self.commit_on_checkpoint and splits:
            self._pending_commits[checkpoint_id] = {s.tp: s.next_offset for s in splits.values()}
        return {split_id: split.state() for split_id, split in splits.items()}

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        pending = self._pending_commits
        offsets = pending.pop(checkpoint_id, None)
        for older in [cid for cid in pending if cid < checkpoint_id]:
            del pending[older]
        if offsets:
            self._commit(offsets)

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        self._pending_commits.pop(checkpoint_id, None)

    def _commit(self, offsets: dict[Any, int]) -> None:
        """Commit ``offsets`` to the group in the reader's commit task (the newest
        offsets win when commits come faster than the broker answers)."""
        if self._group is None:
            return
        self._to_commit = offsets
        task = self._commit_task
        if task is None or task.done():
            self._commit_task = asyncio.get_running_loop().create_task(
                self._run_commits(), name=f"flowkit kafka commit {self.subtask_index}"
            )

    async def _run_commits(self) -> None:
        consumer = self._group
        while self._to_commit:
            offsets, self._to_commit = self._to_commit, None
            assigned = consumer.assignment()
            offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
            if not offsets:
                continue
            try:
                await consumer.commit(offsets)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning(
                    "kafka source subtask %d: committing offsets %s to group %r failed "
                    "(only lag monitoring depends on it): %s",
                    self.subtask_index,
                    {f"{tp.topic}-{tp.partition}": o for tp, o in offsets.items()},
                    self.source.group_id,
                    exc,
                )

    def metrics(self) -> dict[str, Any]:
        lag: dict[str, int] = {}
        for split_id, split in self._splits.items():
            consumer = self._consumer
            high = None
            if consumer is not None:
                try:
                    high = consumer.highwater(split.tp)
                except Exception:
                    high = None
            if high is None:
                high = split.high_watermark
            if high is not None:
                lag[split_id] = max(0, high - split.next_offset)
        return {"lag": lag}

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        aiokafka = require("aiokafka", "kafka")
        self._tp_class = aiokafka.TopicPartition
        source = self.source
        props = source.properties
        options: dict[str, Any] = {}
        for key, name in (*_INT_PROPERTIES.items(), *_STR_PROPERTIES.items()):
            if key in props:
                options[name] = props[key]
        if "check.crcs" in props:
            options["check_crcs"] = props["check.crcs"]
        prefix = props.get("client.id.prefix") or source.group_id or "flowkit-kafka-source"
        common = {
            "bootstrap_servers": source.bootstrap_servers,
            "client_id": f"{prefix}-{self.subtask_index}",
            "enable_auto_commit": False,
            **options,
        }
        # The reading consumer is in no group: its assignment changes (partition
        # discovery) without any group coordination. A second consumer in the group
        # commits offsets and reads committed ones; it fetches nothing.
        consumer = aiokafka.AIOKafkaConsumer(
            auto_offset_reset=props.get("auto.offset.reset", "earliest"),
            isolation_level=props.get("isolation.level", "read_uncommitted"),
            max_poll_records=self.max_poll_records,
            **common,
        )
        group = None
        if source.group_id:
            group = aiokafka.AIOKafkaConsumer(group_id=source.group_id, **common)
        try:
            await consumer.start()
            self._consumer = consumer
            if group is not None:
                await group.start()
                self._group = group
            self._opening = True
            await self._initial_splits()
        except BaseException:
            self._consumer = self._group = None
            await consumer.stop()
            if group is not None:
                await group.stop()
            raise
        finally:
            self._opening = False
            self._known_ends.clear()
        loop = asyncio.get_running_loop()
        self._space = asyncio.Event()
        self._fetch_task = loop.create_task(
            self._fetch_loop(), name=f"flowkit kafka fetch {self.subtask_index}"
        )
        if self._restored is not None and self.commit_on_checkpoint and self._splits:
            # The notification of the checkpoint restored from may have been lost.
            self._commit({s.tp: s.next_offset for s in self._splits.values()})

    async def close(self) -> None:
        fetch, self._fetch_task = self._fetch_task, None
        if fetch is not None and not fetch.done():
            fetch.cancel()
        if fetch is not None:
            await asyncio.wait({fetch})
        commit, self._commit_task = self._commit_task, None
        if commit is not None:
            # Give a last commit (e.g. of the final checkpoint) a moment to finish.
            done, _ = await asyncio.wait({commit}, timeout=5)
            if not done:
                commit.cancel()
                await asyncio.wait({commit})
        consumer, self._consumer = self._consumer, None
        group, self._group = self._group, None
        try:
            if consumer is not None:
                await consumer.stop()
        finally:
            if group is not None:
                await group.stop()
        available = self._available
        if available is not None and not available.done():
            available.cancel()

    # ------------------------------------------------------------------ partitions
    async def _owned_partitions(self, *, fail_on_missing: bool) -> list[tuple[str, int]]:
        """The partitions this subtask owns, from the cluster's metadata."""
        consumer = self._consumer
        source = self.source
        # A metadata request for every topic (``consumer.topics()`` makes the same
        # request but keeps only the names; the partitions are in the answer).
        cluster = await consumer._client.fetch_all_metadata()
        topics = cluster.topics()
        if source.topic_pattern is not None:
            names = sorted(t for t in topics if source.matches(t))
        else:
            missing = [t for t in source.topics if t not in topics]
            if missing:
                if fail_on_missing:
                    raise ValueError(
                        f"kafka source: topics {missing} do not exist at "
                        f"{source.bootstrap_servers} (create them, or enable partition "
                        f"discovery with partition.discovery.interval.ms to wait for them)"
                    )
                _log.warning("kafka source: topics %s do not exist yet; waiting", missing)
            names = [t for t in source.topics if t in topics]
        owned = []
        for topic in names:
            for partition in sorted(cluster.partitions_for_topic(topic) or ()):
                if kafka_split_owner(topic, partition, self.parallelism) == self.subtask_index:
                    owned.append((topic, partition))
        return owned

    async def _initial_splits(self) -> None:
        tp_class = self._tp_class
        restored = self._restored
        found = await self._owned_partitions(fail_on_missing=self.discovery_interval_s is None)
        splits: dict[str, _Split] = {}
        if restored is not None:
            for split_id, state in restored.items():
                topic, partition = _parse_split_id(split_id)
                split = _Split(topic, partition, tp_class(topic, partition), int(state["offset"]))
                split.min_timestamp = state.get("min_timestamp")
                splits[split_id] = split
            # Partitions that were not part of the checkpoint are new: earliest (Flink).
            fresh = [tp for tp in found if _split_id(*tp) not in splits]
            for split in await self._new_splits(fresh, KafkaOffsetsInitializer.earliest()):
                splits[split.split_id] = split
        else:
            for split in await self._new_splits(found, self.source.starting):
                splits[split.split_id] = split
        await self._set_stops(list(splits.values()))
        self._splits = splits
        self._assign()
        self._new_outputs.extend(s for s in splits.values() if not s.finished)

    async def _new_splits(
        self, partitions: list[tuple[str, int]], initializer: KafkaOffsetsInitializer
    ) -> list[_Split]:
        """Splits for ``partitions`` starting where ``initializer`` says."""
        if not partitions:
            return []
        tps = [self._tp_class(t, p) for t, p in partitions]
        offsets = await self._resolve(initializer, tps, starting=True)
        splits = []
        for tp in tps:
            split = _Split(tp.topic, tp.partition, tp, offsets[tp])
            if initializer.kind == "timestamp":
                split.min_timestamp = initializer.timestamp_ms
            splits.append(split)
        return splits

    async def _resolve(
        self, initializer: KafkaOffsetsInitializer, tps: list[Any], *, starting: bool
    ) -> dict[Any, int]:
        consumer = self._consumer
        kind = initializer.kind
        if kind == "earliest":
            return dict(await consumer.beginning_offsets(tps))
        if kind == "latest":
            return await self._end_offsets(tps)
        if kind == "timestamp":
            assert initializer.timestamp_ms is not None
            if not starting:
                return await self._end_offsets(tps)  # and the timestamp check
            found = await consumer.offsets_for_times(dict.fromkeys(tps, initializer.timestamp_ms))
            ends = await self._end_offsets(tps)
            return {tp: ends[tp] if found.get(tp) is None else found[tp].offset for tp in tps}
        offsets: dict[Any, int] = {}
        if kind == "committed":
            for tp in tps:
                committed = await self._group.committed(tp)
                if committed is not None and committed >= 0:
                    offsets[tp] = committed
        else:
            for tp in tps:
                given = initializer.offset_map.get(KafkaTopicPartition(tp.topic, tp.partition))
                if given is not None:
                    offsets[tp] = given
        rest = [tp for tp in tps if tp not in offsets]
        if rest:
            reset = initializer.reset
            if reset is KafkaOffsetResetStrategy.NONE:
                names = [_split_id(tp.topic, tp.partition) for tp in rest]
                raise ValueError(
                    f"kafka source: no committed offset of group {self.source.group_id!r} for "
                    f"partitions {names}, and the reset strategy is NONE; pass "
                    f"committed_offsets(KafkaOffsetResetStrategy.EARLIEST) or LATEST"
                )
            if reset is KafkaOffsetResetStrategy.EARLIEST:
                offsets.update(await consumer.beginning_offsets(rest))
            else:
                offsets.update(await self._end_offsets(rest))
        return offsets

    async def _end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        """The end (high watermark, or last stable offset with read_committed) of each
        partition, as a fetch reports it.

        ListOffsets(latest) alone is not enough: Tansu 0.6 answers it with the base
        offset of the partition's last record batch plus one. So when the reader
        starts, the consumer fetches the last listed record of each partition, and the
        fetch response's high watermark is the end (one quick fetch per partition; a
        real Kafka broker answers both the same). Later (partition discovery) the
        listed offsets are used as they are.
        """
        consumer = self._consumer
        known = self._known_ends
        missing = [tp for tp in tps if tp not in known]
        if missing:
            listed = await consumer.end_offsets(missing)
            if self._opening:
                try:
                    listed.update(await self._fetched_ends({tp: listed[tp] for tp in missing}))
                except (asyncio.CancelledError, TimeoutError):
                    raise
                except Exception as exc:  # e.g. the last record is gone (retention)
                    _log.warning(
                        "kafka source subtask %d: fetching the end of %d partitions failed "
                        "(%s); using the offsets ListOffsets reported",
                        self.subtask_index,
                        len(missing),
                        exc,
                    )
            known.update(listed)
        return {tp: known[tp] for tp in tps}

    async def _fetched_ends(self, listed: dict[Any, int]) -> dict[Any, int]:
        """High watermarks of fetch responses for the partitions with records (the
        consumer is assigned again afterwards)."""
        consumer = self._consumer
        probe = {tp: offset for tp, offset in listed.items() if offset > 0}
        if not probe:
            return {}
        committed = self.source.properties.get("isolation.level") == "read_committed"
        consumer.assign(list(probe))
        for tp, offset in probe.items():
            consumer.seek(tp, offset - 1)
        ends: dict[Any, int] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(ends) < len(probe):
            if loop.time() > deadline:
                raise TimeoutError(
                    f"kafka source: no fetch response with the high watermark of "
                    f"{sorted(_split_id(tp.topic, tp.partition) for tp in probe if tp not in ends)} "
                    f"within 30 s"
                )
            await consumer.getmany(*[tp for tp in probe if tp not in ends], timeout_ms=100)
            for tp in probe:
                end = consumer.last_stable_offset(tp) if committed else consumer.highwater(tp)
                if end is not None and tp not in ends:
                    ends[tp] = max(end, probe[tp])
        return ends

    async def _set_stops(self, splits: list[_Split]) -> None:
        """Bounded sources: where each split ends (resolved when the reader starts)."""
        if not splits:
            return
        ends = await self._end_offsets([s.tp for s in splits])
        for split in splits:
            split.high_watermark = ends.get(split.tp)
        stopping = self.source.stopping
        if stopping is None:
            return
        stops = await self._resolve(stopping, [s.tp for s in splits], starting=False)
        for split in splits:
            split.stop = stops[split.tp]
            if stopping.kind == "timestamp":
                split.stop_timestamp = stopping.timestamp_ms
            if split.next_offset >= split.stop:
                split.finished = True

    def _assign(self) -> None:
        """Assign the consumer every split (finished ones paused) at its fetch position."""
        consumer = self._consumer
        splits = list(self._splits.values())
        consumer.assign([s.tp for s in splits])
        for split in splits:
            consumer.seek(split.tp, split.fetch_position)
        finished = [s.tp for s in splits if s.finished]
        if finished:
            consumer.pause(*finished)
        group = self._group
        if group is not None and self.commit_on_checkpoint:
            # Commits need the partitions assigned; paused, it fetches nothing.
            group.assign([s.tp for s in splits])
            group.pause(*[s.tp for s in splits])

    async def _discover(self) -> None:
        """Partition discovery: new partitions this subtask owns start at the earliest
        offset (Flink's behaviour for partitions found after the start)."""
        found = await self._owned_partitions(fail_on_missing=False)
        fresh = [tp for tp in found if _split_id(*tp) not in self._splits]
        if not fresh:
            return
        splits = await self._new_splits(fresh, KafkaOffsetsInitializer.earliest())
        await self._set_stops(splits)
        for split in splits:
            self._splits[split.split_id] = split
        _log.info(
            "kafka source subtask %d: new partitions %s",
            self.subtask_index,
            [s.split_id for s in splits],
        )
        self._assign()
        self._new_outputs.extend(s for s in splits if not s.finished)
        self._signal()

    # ------------------------------------------------------------------ fetching
    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        loop = asyncio.get_running_loop()
        interval = self.discovery_interval_s
        next_discovery = None if interval is None else loop.time() + interval
        space = self._space
        assert space is not None
        try:
            while True:
                if next_discovery is not None and loop.time() >= next_discovery:
                    await self._discover()
                    next_discovery = loop.time() + interval  # type: ignore[operator]
                active = [s for s in self._splits.values() if not s.finished]
                if not active:
                    if next_discovery is None:
                        return  # nothing more to read (bounded and done, or no partition)
                    await asyncio.sleep(max(0.0, next_discovery - loop.time()))
                    continue
                if self._buffered >= self.max_buffered:
                    space.clear()
                    try:
                        await asyncio.wait_for(space.wait(), timeout=1.0)
                    except TimeoutError:
                        pass
                    continue
                data = await consumer.getmany(timeout_ms=200, max_records=self.max_poll_records)
                for split in active:
                    records = data.get(split.tp)
                    position = await consumer.position(split.tp)
                    if not records and position <= split.fetch_position:
                        continue
                    self._take(split, records or [], position)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error = exc
        finally:
            self._fetch_done = True
            self._signal()

    def _take(self, split: _Split, records: list[Any], position: int) -> None:
        """Queue the fetched ``records`` of ``split`` (cut at its stopping offset)."""
        end = False
        stop = split.stop
        if stop is not None:
            if records and records[-1].offset >= stop:
                records = [r for r in records if r.offset < stop]
            if position >= stop:
                position = stop
                end = True
        stop_ts = split.stop_timestamp
        if stop_ts is not None:
            for index, record in enumerate(records):
                if record.timestamp >= stop_ts:
                    position = record.offset
                    records = records[:index]
                    end = True
                    break
        split.fetch_position = position
        if end:
            split.finished = True
            self._consumer.pause(split.tp)
        self._buffer.append(_Batch(split, records, position, end))
        self._buffered += len(records)
        self._signal()

    def _signal(self) -> None:
        available = self._available
        if available is not None and not available.done():
            available.set_result(None)

    def is_available(self) -> Awaitable[Any] | None:
        if self._buffer or self._new_outputs or self._fetch_done:
            return None
        available = self._available
        if available is None or available.done():
            available = self._available = asyncio.get_running_loop().create_future()
        return available

    # ------------------------------------------------------------------ emitting
    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        if self._new_outputs:
            for split in self._new_outputs:
                if split.output is None and not split.finished:
                    split.output = output.create_split_output(split.split_id)
            self._new_outputs.clear()
        buffer = self._buffer
        budget = max(1, max_records)
        while buffer and budget > 0:
            batch = buffer[0]
            records = batch.records
            start = batch.index
            stop = min(len(records), start + budget)
            if stop > start:
                self._emit(
                    batch.split,
                    output,
                    records[start:stop] if start or stop < len(records) else records,
                )
                batch.index = stop
                budget -= stop - start
                self._buffered -= stop - start
            if batch.index >= len(records):
                buffer.popleft()
                split = batch.split
                if batch.position > split.next_offset:
                    split.next_offset = batch.position
                if batch.end:
                    self._end_split(split, output)
        space = self._space
        if space is not None and self._buffered < self.max_buffered:
            space.set()
        if buffer:
            return InputStatus.MORE_AVAILABLE
        if self._fetch_done:
            error = self._error
            if error is not None:
                self._error = None
                raise error
            if self.source.bounded:
                return InputStatus.END_OF_INPUT
        if not self._idle_marked and not any(
            s.output is not None and not s.finished for s in self._splits.values()
        ):
            self._idle_marked = True
            output.mark_idle()
        return InputStatus.NOTHING_AVAILABLE

    def _end_split(self, split: _Split, output: ReaderOutput) -> None:
        if split.output is not None:
            output.release_split_output(split.split_id)
            split.output = None

    def _emit(self, split: _Split, output: ReaderOutput, records: list[Any]) -> None:
        next_offset = records[-1].offset + 1
        min_ts = split.min_timestamp
        if min_ts is not None:
            for index, record in enumerate(records):
                if record.timestamp >= min_ts:
                    split.min_timestamp = None
                    records = records[index:]
                    break
            else:
                split.next_offset = next_offset
                return
        target = split.output
        if target is None:
            target = split.output = output.create_split_output(split.split_id)
        self._idle_marked = False
        schema = self._value_schema
        try:
            if schema is not None:
                deserialize = schema.deserialize
                values = [deserialize(r.value) for r in records if r.value is not None]
                if len(values) < len(records):
                    records = [r for r in records if r.value is not None]
            else:
                values = [self.source.deserializer.deserialize(_to_record(r)) for r in records]
        except Exception:
            self._emit_one_by_one(split, output, target, records)
            return
        timestamps = [r.timestamp for r in records]
        if any(v is None for v in values):  # dropped, as in Flink (not `in`: no __eq__)
            keep = [i for i, v in enumerate(values) if v is not None]
            values = [values[i] for i in keep]
            timestamps = [timestamps[i] for i in keep]
        if values:
            target.collect_batch(values, timestamps)
        split.next_offset = next_offset

    def _emit_one_by_one(
        self, split: _Split, output: ReaderOutput, target: ReaderOutput, records: list[Any]
    ) -> None:
        """A batch with a bad record: the records before it, then the bad one to the
        dead letters (or the job fails), then the rest."""
        schema = self._value_schema
        deserializer = self.source.deserializer
        tag = self.source.dead_letter_tag
        values: list[Any] = []
        timestamps: list[Any] = []
        for record in records:
            try:
                if schema is not None:
                    value = None if record.value is None else schema.deserialize(record.value)
                else:
                    value = deserializer.deserialize(_to_record(record))
            except Exception as exc:
                if values:
                    target.collect_batch(values, timestamps)
                    values, timestamps = [], []
                split.next_offset = record.offset
                error = DeserializationError(
                    "kafka",
                    record.topic,
                    record.partition,
                    record.offset,
                    record.value,
                    f"{type(exc).__name__}: {exc}",
                )
                emit_bad_record(output, tag, error, exc, record.timestamp)
                split.next_offset = record.offset + 1
                continue
            if value is not None:
                values.append(value)
                timestamps.append(record.timestamp)
        if values:
            target.collect_batch(values, timestamps)
        split.next_offset = records[-1].offset + 1


def _to_record(record: Any) -> KafkaRecord:
    return KafkaRecord(
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        record.headers or (),
        record.timestamp_type,
    )
