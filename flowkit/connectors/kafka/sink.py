"""KafkaSink: records into Kafka topics with PyFlink's builder names (aiokafka).

Build a sink with :meth:`KafkaSink.builder` and hand it to ``DataStream.sink_to``:

    >>> from flowkit.connectors.base import DeliveryGuarantee, SimpleStringSchema
    >>> sink = (
    ...     KafkaSink.builder()
    ...     .set_bootstrap_servers("localhost:9092")
    ...     .set_record_serializer(
    ...         KafkaRecordSerializationSchema.builder()
    ...         .set_topic("out")
    ...         .set_value_serialization_schema(SimpleStringSchema())
    ...         .build()
    ...     )
    ...     .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    ...     .build()
    ... )
    >>> sink.delivery_guarantee
    <DeliveryGuarantee.AT_LEAST_ONCE: 'at-least-once'>
    >>> # ds.sink_to(sink)

Delivery guarantees (Flink's ``KafkaSink``):

* ``NONE``: records are sent and not waited for; a failed send fails the job at the
  sink's next batch or checkpoint. Records may be lost or duplicated on failure.
* ``AT_LEAST_ONCE``: each batch the sink takes is acknowledged by the broker before the
  sink takes the next one, so at a checkpoint barrier every record before it is
  acknowledged (Flink flushes at the barrier). A restart may write records again.
* ``EXACTLY_ONCE``: Flink's two-phase commit. The records between two checkpoint barriers
  go into one Kafka transaction, with transactional id ``<prefix>-<subtask>-<n>`` (``n``
  counts the subtask's transactions; it is checkpointed). At the barrier the transaction is
  pre-committed (its records are acknowledged) and parked under the checkpoint's id; it
  is committed when that checkpoint completes. After a restore the transactions parked in
  the restored checkpoint are committed by their producer id and epoch (Kafka's
  ``EndTxn``), and the transactions of the failed attempt that came after it are aborted
  (``InitProducerId`` on their transactional ids fences and aborts them). Readers must use
  ``isolation.level=read_committed``.

All broker I/O of a sink subtask runs on an event loop in a thread of its own (one per
writer), so the job's loop never waits for the network: ``write_batch_async`` awaits the
batch's result from there (backpressure), and at the end of the job ``finish_async`` and
``close_async`` await the last flush and commits and the closing of the connections, and
stop the thread, without blocking the job's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flowkit.connectors.base import DeliveryGuarantee, SerializationSchema, require
from flowkit.sinks import Sink, SinkWriter

__all__ = [
    "FlinkFixedPartitioner",
    "KafkaPartitioner",
    "KafkaRecordSerializationSchema",
    "KafkaRecordSerializationSchemaBuilder",
    "KafkaSink",
    "KafkaSinkBuilder",
    "KafkaSinkError",
    "KafkaSinkState",
    "KafkaSinkWriter",
    "KafkaTransaction",
]

_log = logging.getLogger("flowkit.connectors.kafka")

T = TypeVar("T")

#: Kafka's default upper bound of ``transaction.timeout.ms`` (``transaction.max.timeout.ms``).
DEFAULT_TRANSACTION_TIMEOUT_MS = 900_000

#: How long each step of ``finish_async()``/``close_async()`` waits for the broker (flush,
#: last commits, shutdown).
CLOSE_TIMEOUT_S = 60.0


class KafkaSinkError(RuntimeError):
    """A Kafka sink could not write, commit or start a transaction (the message names the
    sink, its subtask and the topic or transactional id)."""


# ======================================================================= serialization
class KafkaPartitioner(ABC):
    """Chooses the partition of a record (PyFlink's ``FlinkKafkaPartitioner``).

    ``open`` is called once per sink subtask; ``partition`` for each record, with the
    serialized key and value and the topic's partitions (sorted ids).

    Example:
        >>> class ByLength(KafkaPartitioner):
        ...     def partition(self, record, key, value, target_topic, partitions):
        ...         return partitions[len(value) % len(partitions)]
        >>> ByLength().partition("abc", None, b"abc", "t", [0, 1])
        1
    """

    def open(self, parallel_instance_id: int, parallel_instances: int) -> None:  # noqa: B027
        """Called once per sink subtask before its first record."""

    @abstractmethod
    def partition(
        self,
        record: Any,
        key: bytes | None,
        value: bytes,
        target_topic: str,
        partitions: list[int],
    ) -> int: ...


class FlinkFixedPartitioner(KafkaPartitioner):
    """Each sink subtask writes to one partition: ``partitions[subtask % len(partitions)]``
    (Flink's ``FlinkFixedPartitioner``).

    Example:
        >>> p = FlinkFixedPartitioner()
        >>> p.open(3, 4)
        >>> p.partition("x", None, b"x", "t", [0, 1])
        1
    """

    def __init__(self) -> None:
        self.subtask = 0

    def open(self, parallel_instance_id: int, parallel_instances: int) -> None:
        self.subtask = parallel_instance_id

    def partition(
        self,
        record: Any,
        key: bytes | None,
        value: bytes,
        target_topic: str,
        partitions: list[int],
    ) -> int:
        return partitions[self.subtask % len(partitions)]


@dataclass(frozen=True)
class KafkaRecordSerializationSchema:
    """How a record becomes a Kafka message: topic, key, value, partition.

    Build it with :meth:`builder` (PyFlink's names). Without a partitioner, Kafka's default
    partitioning applies (by the key's hash; records without a key are spread).

    Example:
        >>> from flowkit.connectors.base import JsonSchema, SimpleStringSchema
        >>> schema = (
        ...     KafkaRecordSerializationSchema.builder()
        ...     .set_topic_selector(lambda r: f"events-{r['kind']}")
        ...     .set_key_serialization_schema(lambda r: r["id"].encode())
        ...     .set_value_serialization_schema(JsonSchema())
        ...     .build()
        ... )
        >>> schema.serialize({"kind": "a", "id": "7"})
        ('events-a', b'7', b'{"kind":"a","id":"7"}')
    """

    topic: str | None = None
    topic_selector: Callable[[Any], str] | None = None
    key_serialization_schema: Callable[[Any], bytes | None] | SerializationSchema | None = None
    value_serialization_schema: Callable[[Any], bytes] | SerializationSchema | None = None
    partitioner: KafkaPartitioner | None = None

    @staticmethod
    def builder() -> KafkaRecordSerializationSchemaBuilder:
        """Start building a record serializer."""
        return KafkaRecordSerializationSchemaBuilder()

    def serialize(self, element: Any) -> tuple[str, bytes | None, bytes]:
        """``(topic, key, value)`` of one record."""
        topics, keys, values = self.serialize_batch([element])
        return topics[0] if isinstance(topics, list) else topics, keys[0], values[0]

    def serialize_batch(
        self, elements: list[Any]
    ) -> tuple[str | list[str], list[bytes | None], list[bytes]]:
        """Topics (one string when fixed), keys and values of a batch of records."""
        value_fn = _as_function(self.value_serialization_schema)
        assert value_fn is not None
        values = [value_fn(element) for element in elements]
        key_fn = _as_function(self.key_serialization_schema)
        keys: list[bytes | None] = (
            [None] * len(elements) if key_fn is None else [key_fn(e) for e in elements]
        )
        topics: str | list[str]
        if self.topic_selector is not None:
            selector = self.topic_selector
            topics = [selector(element) for element in elements]
        else:
            assert self.topic is not None
            topics = self.topic
        return topics, keys, values


def _as_function(schema: Any) -> Callable[[Any], Any] | None:
    if schema is None:
        return None
    serialize = getattr(schema, "serialize", None)
    if callable(serialize):
        return serialize
    if callable(schema):
        return schema
    raise TypeError(
        f"a Kafka serialization schema must be a SerializationSchema (with serialize()) or "
        f"a function of the record, got {schema!r}"
    )


class KafkaRecordSerializationSchemaBuilder:
    """Builder of :class:`KafkaRecordSerializationSchema` (PyFlink's names)."""

    def __init__(self) -> None:
        self._topic: str | None = None
        self._selector: Callable[[Any], str] | None = None
        self._key: Any = None
        self._value: Any = None
        self._partitioner: KafkaPartitioner | None = None

    def set_topic(self, topic: str) -> KafkaRecordSerializationSchemaBuilder:
        """Every record goes to ``topic``."""
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"set_topic needs a topic name, got {topic!r}")
        self._topic = topic
        return self

    def set_topic_selector(
        self, selector: Callable[[Any], str]
    ) -> KafkaRecordSerializationSchemaBuilder:
        """Each record goes to the topic ``selector(record)`` returns."""
        if not callable(selector):
            raise TypeError(f"set_topic_selector needs a function, got {selector!r}")
        self._selector = selector
        return self

    def set_key_serialization_schema(
        self, schema: SerializationSchema | Callable[[Any], bytes | None]
    ) -> KafkaRecordSerializationSchemaBuilder:
        """The message key: a schema (``serialize(record)``) or a function of the record."""
        _as_function(schema)
        self._key = schema
        return self

    def set_value_serialization_schema(
        self, schema: SerializationSchema | Callable[[Any], bytes]
    ) -> KafkaRecordSerializationSchemaBuilder:
        """The message value: a schema (``serialize(record)``) or a function of the record."""
        _as_function(schema)
        self._value = schema
        return self

    def set_partitioner(
        self, partitioner: KafkaPartitioner
    ) -> KafkaRecordSerializationSchemaBuilder:
        """Choose partitions with ``partitioner`` instead of Kafka's default partitioning."""
        if not callable(getattr(partitioner, "partition", None)):
            raise TypeError(
                f"set_partitioner needs a KafkaPartitioner (with partition()), got {partitioner!r}"
            )
        self._partitioner = partitioner
        return self

    def build(self) -> KafkaRecordSerializationSchema:
        """The schema.

        Raises:
            ValueError: no topic (or both a topic and a topic selector), or no value
                serialization schema.
        """
        if (self._topic is None) == (self._selector is None):
            raise ValueError(
                "KafkaRecordSerializationSchema needs exactly one of set_topic(...) and "
                "set_topic_selector(...)"
            )
        if self._value is None:
            raise ValueError(
                "KafkaRecordSerializationSchema needs set_value_serialization_schema(...), "
                "e.g. SimpleStringSchema() or JsonSchema()"
            )
        return KafkaRecordSerializationSchema(
            self._topic, self._selector, self._key, self._value, self._partitioner
        )


# ======================================================================= the sink
#: Kafka client property names (Java) -> aiokafka's AIOKafkaProducer arguments.
_PROPERTY_NAMES = {
    "batch.size": "max_batch_size",
    "buffer.memory": None,  # aiokafka has no separate buffer bound
}


def producer_arguments(properties: dict[str, str]) -> dict[str, Any]:
    """aiokafka ``AIOKafkaProducer`` keyword arguments for Kafka's property names
    (``linger.ms`` -> ``linger_ms``; numbers are converted).

    Example:
        >>> producer_arguments({"linger.ms": "5", "acks": "all", "batch.size": "65536"})
        {'linger_ms': 5, 'acks': 'all', 'max_batch_size': 65536}
    """
    arguments: dict[str, Any] = {}
    for name, value in properties.items():
        if name in _PROPERTY_NAMES:
            target = _PROPERTY_NAMES[name]
            if target is None:
                continue
        else:
            target = name.replace(".", "_")
        converted: Any = value
        if isinstance(value, str):
            text = value.strip()
            if text.lstrip("-").isdigit():
                converted = int(text)
            elif text.lower() in ("true", "false"):
                converted = text.lower() == "true"
        if target == "acks" and converted == -1:
            converted = "all"
        arguments[target] = converted
    return arguments


class KafkaSink(Sink):
    """Writes records to Kafka (Flink's ``KafkaSink``); build it with :meth:`builder`.

    Attributes:
        bootstrap_servers: ``host:port[,host:port...]`` of the brokers.
        record_serializer: topic, key and value of each record.
        delivery_guarantee: ``NONE`` (default, as in Flink), ``AT_LEAST_ONCE`` or
            ``EXACTLY_ONCE``.
        transactional_id_prefix: prefix of the transactional ids (``EXACTLY_ONCE``).
        properties: Kafka producer properties (``set_property``), passed to aiokafka.
        commit_on_finish: ``EXACTLY_ONCE`` without checkpointing: commit at the end of
            input (set by the runtime when the job has no checkpointing).
    """

    name = "Kafka Sink"
    commit_on_finish: bool = False

    def __init__(
        self,
        bootstrap_servers: str,
        record_serializer: KafkaRecordSerializationSchema,
        delivery_guarantee: DeliveryGuarantee = DeliveryGuarantee.NONE,
        transactional_id_prefix: str | None = None,
        properties: dict[str, str] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.record_serializer = record_serializer
        self.delivery_guarantee = delivery_guarantee
        self.transactional_id_prefix = transactional_id_prefix
        self.properties = dict(properties or {})

    @staticmethod
    def builder() -> KafkaSinkBuilder:
        """Start building a Kafka sink."""
        return KafkaSinkBuilder()

    def create_writer(self, subtask_index: int, parallelism: int) -> KafkaSinkWriter:
        require("aiokafka", "kafka")
        return KafkaSinkWriter(self, subtask_index, parallelism)

    def __repr__(self) -> str:
        return (
            f"KafkaSink({self.bootstrap_servers!r}, {self.delivery_guarantee.name}"
            + (f", prefix={self.transactional_id_prefix!r}" if self.transactional_id_prefix else "")
            + ")"
        )


class KafkaSinkBuilder:
    """Builder of :class:`KafkaSink` (PyFlink's names)."""

    def __init__(self) -> None:
        self._servers: str | None = None
        self._serializer: KafkaRecordSerializationSchema | None = None
        self._guarantee = DeliveryGuarantee.NONE
        self._prefix: str | None = None
        self._properties: dict[str, str] = {}
        self._guarantee_set = False

    def set_bootstrap_servers(self, servers: str) -> KafkaSinkBuilder:
        """``host:port[,host:port...]`` of the brokers."""
        if not isinstance(servers, str) or not servers.strip():
            raise ValueError(f"set_bootstrap_servers needs 'host:port', got {servers!r}")
        self._servers = servers.strip()
        return self

    def set_record_serializer(self, serializer: KafkaRecordSerializationSchema) -> KafkaSinkBuilder:
        """Topic, key, value (and partition) of each record."""
        if not isinstance(serializer, KafkaRecordSerializationSchema):
            raise TypeError(
                "set_record_serializer needs a KafkaRecordSerializationSchema "
                "(KafkaRecordSerializationSchema.builder()...build()), got "
                f"{type(serializer).__name__}"
            )
        self._serializer = serializer
        return self

    def set_delivery_guarantee(self, guarantee: DeliveryGuarantee) -> KafkaSinkBuilder:
        """``DeliveryGuarantee.NONE`` (Flink's default), ``AT_LEAST_ONCE`` or ``EXACTLY_ONCE``."""
        if not isinstance(guarantee, DeliveryGuarantee):
            raise TypeError(f"set_delivery_guarantee needs a DeliveryGuarantee, got {guarantee!r}")
        self._guarantee = guarantee
        self._guarantee_set = True
        return self

    def set_transactional_id_prefix(self, prefix: str) -> KafkaSinkBuilder:
        """Prefix of the transactional ids (required for ``EXACTLY_ONCE``); unique per job
        and sink among everything writing to the same Kafka cluster."""
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(
                f"set_transactional_id_prefix needs a non-empty string, got {prefix!r}"
            )
        self._prefix = prefix
        return self

    def set_property(self, key: str, value: str) -> KafkaSinkBuilder:
        """A Kafka producer property (``linger.ms``, ``acks``, ``compression.type``,
        ``transaction.timeout.ms``, ...), passed to aiokafka's producer."""
        self._properties[str(key)] = value
        return self

    def build(self) -> KafkaSink:
        """The sink.

        Raises:
            ValueError: no bootstrap servers or record serializer, or ``EXACTLY_ONCE``
                without a transactional id prefix.
        """
        if self._servers is None:
            raise ValueError("KafkaSink needs set_bootstrap_servers('host:port')")
        if self._serializer is None:
            raise ValueError(
                "KafkaSink needs set_record_serializer(KafkaRecordSerializationSchema.builder()"
                "...build())"
            )
        if self._guarantee is DeliveryGuarantee.EXACTLY_ONCE and not self._prefix:
            raise ValueError(
                "KafkaSink with DeliveryGuarantee.EXACTLY_ONCE needs "
                "set_transactional_id_prefix(...): transactional ids must be unique per job "
                "and sink"
            )
        reserved = ["bootstrap.servers", "transactional.id"]
        if self._guarantee is DeliveryGuarantee.EXACTLY_ONCE:
            reserved.append("enable.idempotence")
        for name in reserved:
            if name in self._properties:
                raise ValueError(
                    f"KafkaSink sets {name!r} itself; use the builder "
                    f"(set_bootstrap_servers / set_transactional_id_prefix / "
                    f"set_delivery_guarantee)"
                )
        return KafkaSink(
            self._servers, self._serializer, self._guarantee, self._prefix, self._properties
        )


# ======================================================================= state
@dataclass(frozen=True)
class KafkaTransaction:
    """A pre-committed Kafka transaction, as checkpointed: committing it needs only its
    transactional id, producer id and epoch (Kafka's ``EndTxn``)."""

    transactional_id: str
    producer_id: int
    epoch: int
    checkpoint_id: int


@dataclass(frozen=True)
class KafkaSinkState:
    """What an ``EXACTLY_ONCE`` Kafka sink subtask checkpoints.

    Attributes:
        subtask: the subtask's index.
        prefix: the transactional id prefix.
        next_transaction: the number of its next transaction (transactions of a failed
            attempt with this number or higher are aborted on restore).
        pending: transactions pre-committed and not yet known to be committed.
    """

    subtask: int
    prefix: str
    next_transaction: int
    pending: tuple[KafkaTransaction, ...] = ()


# ======================================================================= I/O thread
class _IoLoop:
    """An event loop in a thread of its own, owned by one writer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
            thread.start()
            self.loop, self._thread = loop, thread
        return self.loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.start())

    def stop(self) -> None:
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        self.loop = self._thread = None

        async def cancel_rest() -> None:
            current = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not current]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_rest(), loop).result(10)
        except Exception:  # pragma: no cover - best effort
            _log.debug("cancelling the tasks of %s failed", self.name, exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()


# ======================================================================= protocol
_PROTOCOL: dict[str, Any] = {}


def _protocol() -> dict[str, Any]:
    """Request classes aiokafka lacks: ``InitProducerId`` v3 (flexible), which carries
    the producer id and epoch (-1, -1 for a new producer). aiokafka sends only v0; some
    brokers (Tansu) accept only v3 and later, every Kafka broker since 2.5 accepts v3."""
    if _PROTOCOL:
        return _PROTOCOL
    api = require("aiokafka.protocol.api", "kafka")
    types = require("aiokafka.protocol.types", "kafka")
    transaction = require("aiokafka.protocol.transaction", "kafka")

    class InitProducerIdResponseV3(api.Response):  # type: ignore[misc,name-defined]
        API_KEY = 22
        API_VERSION = 3
        SCHEMA = types.Schema(
            ("throttle_time_ms", types.Int32),
            ("error_code", types.Int16),
            ("producer_id", types.Int64),
            ("producer_epoch", types.Int16),
            ("tags", types.TaggedFields),
        )

    class InitProducerIdRequestV3(api.RequestStruct):  # type: ignore[misc,name-defined]
        FLEXIBLE_VERSION = True
        API_KEY = 22
        API_VERSION = 3
        RESPONSE_TYPE = InitProducerIdResponseV3
        SCHEMA = types.Schema(
            ("transactional_id", types.CompactString("utf-8")),
            ("transaction_timeout_ms", types.Int32),
            ("producer_id", types.Int64),
            ("producer_epoch", types.Int16),
            ("tags", types.TaggedFields),
        )

    v0 = transaction.InitProducerIdRequest_v0

    class InitProducerIdRequest(api.Request[v0 | InitProducerIdRequestV3]):  # type: ignore[misc,name-defined]
        API_KEY = 22

        def __init__(self, transactional_id: str, timeout_ms: int) -> None:
            self.transactional_id = transactional_id
            self.timeout_ms = timeout_ms

        def build(self, request_struct_class: Any) -> Any:
            if request_struct_class is InitProducerIdRequestV3:
                return request_struct_class(self.transactional_id, self.timeout_ms, -1, -1, {})
            return request_struct_class(self.transactional_id, self.timeout_ms)

    _PROTOCOL["InitProducerIdRequest"] = InitProducerIdRequest
    _PROTOCOL["EndTxnRequest"] = transaction.EndTxnRequest
    return _PROTOCOL


#: Kafka error codes after which a transaction coordinator request is sent again: the
#: coordinator is loading, not available or moved (14, 15, 16), or an earlier transaction
#: of the id is still completing (51, CONCURRENT_TRANSACTIONS).
_RETRIABLE_CODES = frozenset({14, 15, 16, 51})
#: Client errors after which it is sent again.
_RETRIABLE_ERRORS = ("NodeNotReadyError", "RequestTimedOutError", "KafkaConnectionError")
#: Answers to committing a restored transaction that mean it was completed before, or its
#: id was taken over: INVALID_PRODUCER_EPOCH (47), INVALID_TXN_STATE (48),
#: PRODUCER_FENCED (90).
_COMPLETED_CODES = frozenset({47, 48, 90})


def _error_code(error: Any) -> int | None:
    code = getattr(error, "errno", None)
    return code if isinstance(code, int) else None


# ======================================================================= the writer
@dataclass
class _Txn:
    """An open or pre-committed transaction with its producer (lives in the I/O thread)."""

    transactional_id: str
    number: int
    producer: Any
    producer_id: int
    epoch: int
    records: int = 0
    topics: set[str] = field(default_factory=set)


class KafkaSinkWriter(SinkWriter):
    """The writer of one :class:`KafkaSink` subtask (see the module docstring)."""

    is_async = True

    def __init__(self, sink: KafkaSink, subtask_index: int, parallelism: int) -> None:
        self.sink = sink
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self.guarantee = sink.delivery_guarantee
        self.commit_on_finish = sink.commit_on_finish
        self.label = (
            f"Kafka sink (subtask {subtask_index + 1}/{parallelism}, "
            f"{self.guarantee.name}, brokers {sink.bootstrap_servers})"
        )
        self._io = _IoLoop(f"flowkit-kafka-sink-{subtask_index}")
        self._serializer = sink.record_serializer
        self._partitioner = sink.record_serializer.partitioner
        if self._partitioner is not None:
            self._partitioner.open(subtask_index, parallelism)
        self._arguments = producer_arguments(sink.properties)
        timeout = self._arguments.pop("transaction_timeout_ms", DEFAULT_TRANSACTION_TIMEOUT_MS)
        self._txn_timeout_ms = int(timeout)
        self._error: BaseException | None = None
        self._initialized = False
        self._closed = False
        # NONE / AT_LEAST_ONCE: one producer.
        self._producer: Any = None
        # EXACTLY_ONCE
        self._prefix = sink.transactional_id_prefix or ""
        self._client: Any = None
        self._next_transaction = 1
        self._recovery: concurrent.futures.Future[None] | None = None
        #: Restored transactions not known to be committed yet: every checkpoint lists
        #: them until the recovery has committed them (a crash before that must not
        #: lose them).
        self._restored_pending: tuple[KafkaTransaction, ...] = ()
        self._current: _Txn | None = None
        self._pending: list[tuple[int, _Txn]] = []
        self._commits: set[concurrent.futures.Future[None]] = set()
        self._last_commit: concurrent.futures.Future[None] | None = None
        self._max_request_size = int(self._arguments.get("max_request_size", 1_048_576))
        self._round_robin = subtask_index
        partitioner_module = require("aiokafka.partitioner", "kafka")
        self._default_partitioner = partitioner_module.DefaultPartitioner()
        #: Every producer and client not closed yet (I/O thread): ``close_async()`` closes
        #: them all, also one whose creation was interrupted by a failure of the job.
        self._open: set[Any] = set()
        #: Starts and stops of producers and clients running to their end although their
        #: caller was cancelled (I/O thread; see ``_uninterrupted``).
        self._lifecycle: set[asyncio.Task[Any]] = set()
        #: Transactions committed by this writer (for metrics and tests).
        self.committed_transactions = 0

    # ------------------------------------------------------------ protocol (job's loop)
    def initialize_state(self, states: list[Any]) -> None:
        """Restore (``EXACTLY_ONCE``): commit the transactions parked in ``states`` and
        abort those the failed attempt began after them; on a fresh start abort what an
        earlier run with the same prefix left open. Runs in the background; the first
        transaction begins after it."""
        if self._initialized:
            raise RuntimeError(f"{self.label}: initialize_state() must be called once")
        self._initialized = True
        if self.guarantee is not DeliveryGuarantee.EXACTLY_ONCE:
            return
        restored: list[KafkaSinkState] = []
        for state in states:
            if state is None:
                continue
            if not isinstance(state, KafkaSinkState):
                raise TypeError(
                    f"{self.label} cannot restore from {type(state).__name__}; expected a "
                    f"KafkaSinkState (was the sink's delivery guarantee changed?)"
                )
            restored.append(state)
        for state in restored:
            if state.subtask == self.subtask_index and state.prefix == self._prefix:
                self._next_transaction = max(self._next_transaction, state.next_transaction)
        self._restored_pending = tuple(t for state in restored for t in state.pending)
        recovery = self._recovery = self._io.submit(self._recover(restored))
        recovery.add_done_callback(self._recovered)

    async def write_batch_async(self, values: list[Any], timestamps: list[Any] | None) -> None:
        self._check()
        if not self._initialized:
            self.initialize_state([])
        records = self._serialize(values, timestamps)
        if self.guarantee is DeliveryGuarantee.EXACTLY_ONCE:
            if self._recovery is not None:
                recovery, self._recovery = self._recovery, None
                await asyncio.wrap_future(recovery)
            if self._current is None:
                number = self._next_transaction
                self._next_transaction += 1
                self._current = await asyncio.wrap_future(self._io.submit(self._begin(number)))
            await asyncio.wrap_future(self._io.submit(self._send(self._current, records, True)))
        else:
            wait = self.guarantee is DeliveryGuarantee.AT_LEAST_ONCE
            await asyncio.wrap_future(self._io.submit(self._send(None, records, wait)))

    def snapshot_state(self, checkpoint_id: int) -> KafkaSinkState | None:
        """At the barrier every record before it is acknowledged (each batch is, before
        the sink takes the next; ``NONE`` excepted). ``EXACTLY_ONCE``: park the open
        transaction (pre-committed) under ``checkpoint_id``; the next records begin a
        new one."""
        self._check()
        if self.guarantee is not DeliveryGuarantee.EXACTLY_ONCE:
            return None
        if self._current is not None:
            self._pending.append((checkpoint_id, self._current))
            self._current = None
        pending = self._restored_pending + tuple(
            KafkaTransaction(t.transactional_id, t.producer_id, t.epoch, cid)
            for cid, t in self._pending
        )
        return KafkaSinkState(self.subtask_index, self._prefix, self._next_transaction, pending)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Commit (in the background, one after the other, oldest first) every transaction
        parked at a checkpoint up to ``checkpoint_id``; a failed commit fails the job at
        the sink's next step."""
        due = [t for cid, t in self._pending if cid <= checkpoint_id]
        if not due:
            return
        self._pending = [(cid, t) for cid, t in self._pending if cid > checkpoint_id]
        future = self._io.submit(self._commit_in_order(due, self._last_commit))
        self._last_commit = future
        self._commits.add(future)
        future.add_done_callback(self._commit_done)

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """Nothing: a parked transaction stays parked; the next completed checkpoint (whose
        state lists it too) commits it."""

    async def finish_async(self) -> None:
        """End of input: ``NONE`` waits until everything sent is acknowledged;
        ``EXACTLY_ONCE`` with ``commit_on_finish`` (no checkpointing) commits everything.

        The broker I/O runs on the writer's I/O thread; this awaits it (at most
        :data:`CLOSE_TIMEOUT_S` per step) without blocking the job's event loop."""
        self._check()
        if self.guarantee is DeliveryGuarantee.NONE and self._producer is not None:
            await self._on_io(self._flush(), "flushing the records sent")
        elif self.guarantee is DeliveryGuarantee.EXACTLY_ONCE and self.commit_on_finish:
            if self._recovery is not None:
                recovery, self._recovery = self._recovery, None
                await self._await_io(recovery, "recovering the restored transactions")
            due = [t for _cid, t in self._pending]
            if self._current is not None:
                due.append(self._current)
            self._pending, self._current = [], None
            for transaction in due:
                await self._on_io(
                    self._commit(transaction),
                    f"committing transaction {transaction.transactional_id!r}",
                )
        self._check()

    async def close_async(self) -> None:
        """Wait for commits in flight, abort the open transaction, close the producers
        (parked transactions stay open on the broker for a restore to commit), then stop
        the I/O thread. Awaited by the subtask, also after a failure or cancel; nothing
        here blocks the job's event loop."""
        if self._closed:
            return
        self._closed = True
        if self._recovery is not None:  # restored transactions stay listed for a restore
            self._recovery.cancel()
        try:
            if self._io.loop is not None:
                await self._on_io(self._shutdown(), "closing the producers")
        finally:
            # Cancelling what is left on the I/O loop and joining its thread (bounded,
            # see _IoLoop.stop) happen in a worker thread, not on the job's loop.
            await asyncio.to_thread(self._io.stop)
        self._check()

    def finish(self) -> None:
        """:meth:`finish_async` for callers outside an event loop (blocks the calling
        thread); the runtime awaits :meth:`finish_async`."""
        _run_blocking(self.finish_async(), f"{self.label}: finish()")

    def close(self) -> None:
        """:meth:`close_async` for callers outside an event loop (blocks the calling
        thread, e.g. ``await asyncio.to_thread(writer.close)``); the runtime awaits
        :meth:`close_async`."""
        _run_blocking(self.close_async(), f"{self.label}: close()")

    # ------------------------------------------------------------ helpers (job's loop)
    async def _on_io(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        """Run ``coro`` on the I/O thread and await it from the job's loop."""
        return await self._await_io(self._io.submit(coro), what)

    async def _await_io(self, future: concurrent.futures.Future[T], what: str) -> T:
        """Await a future of the I/O thread, at most :data:`CLOSE_TIMEOUT_S` (then it is
        cancelled)."""
        timeout = asyncio.timeout(CLOSE_TIMEOUT_S)
        try:
            async with timeout:
                return await asyncio.wrap_future(future)
        except TimeoutError:
            if not timeout.expired():
                raise
            raise KafkaSinkError(
                f"{self.label}: {what} did not finish within {CLOSE_TIMEOUT_S} s"
            ) from None

    def _check(self) -> None:
        error = self._error
        if error is not None:
            self._error = None
            raise error

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error

    def _recovered(self, future: concurrent.futures.Future[None]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._restored_pending = ()

    def _commit_done(self, future: concurrent.futures.Future[None]) -> None:
        self._commits.discard(future)
        if not future.cancelled() and future.exception() is not None:
            self._fail(future.exception())  # type: ignore[arg-type]

    def _serialize(
        self, values: list[Any], timestamps: list[Any] | None
    ) -> tuple[str | list[str], list[bytes | None], list[bytes], list[Any], list[Any] | None]:
        try:
            topics, keys, payloads = self._serializer.serialize_batch(values)
        except Exception as exc:
            bad = _first_failing(self._serializer, values)
            raise KafkaSinkError(
                f"{self.label} cannot serialize record {bad!r} ({type(bad).__name__}): {exc}"
            ) from exc
        return topics, keys, payloads, values, timestamps

    # ------------------------------------------------------------ I/O thread
    async def _new_producer(self, **extra: Any) -> Any:
        aiokafka = require("aiokafka", "kafka")
        try:
            producer = aiokafka.AIOKafkaProducer(
                bootstrap_servers=self.sink.bootstrap_servers, **self._arguments, **extra
            )
            self._open.add(producer)
            return producer
        except TypeError as exc:
            allowed = sorted(inspect.signature(aiokafka.AIOKafkaProducer).parameters)
            raise KafkaSinkError(
                f"{self.label}: a property given with set_property is not a Kafka producer "
                f"setting aiokafka knows ({exc}); known: {', '.join(allowed)}"
            ) from exc

    async def _plain_producer(self) -> Any:
        if self._producer is None:
            arguments = (
                {} if "enable_idempotence" in self._arguments else {"enable_idempotence": False}
            )
            producer = await self._new_producer(**arguments)
            try:
                await self._uninterrupted(producer.start())
            except Exception as exc:
                await self._stop(producer)
                idempotent = bool(self._arguments.get("enable_idempotence"))
                raise KafkaSinkError(
                    f"{self.label} cannot start its producer: {exc!r}"
                    + (
                        " (with enable.idempotence=true the broker must grant a producer id: "
                        "InitProducerId v0, as aiokafka sends it)"
                        if idempotent
                        else ""
                    )
                ) from exc
            self._producer = producer
        return self._producer

    async def _send(
        self,
        transaction: _Txn | None,
        records: tuple[Any, list[bytes | None], list[bytes], list[Any], list[Any] | None],
        wait: bool,
    ) -> None:
        producer = transaction.producer if transaction is not None else await self._plain_producer()
        topics, keys, payloads, values, timestamps = records
        n = len(payloads)
        fixed = topics if isinstance(topics, str) else None
        try:
            # Records are grouped by partition and appended to aiokafka batches directly
            # (create_batch / send_batch): no coroutine per record.
            groups = await self._partition(producer, topics, keys, payloads, values)
            futures = []
            limit = self._max_request_size
            for (topic, partition), indices in groups.items():
                batch = producer.create_batch()
                append = batch.append
                for i in indices:
                    key, value = keys[i], payloads[i]
                    size = len(value) if key is None else len(value) + len(key)
                    if size > limit:  # aiokafka checks this in send(), not in batches
                        raise _too_large(size, limit)
                    timestamp = None if timestamps is None else timestamps[i]
                    if append(key=key, value=value, timestamp=timestamp) is None:
                        futures.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()
                        append = batch.append
                        append(key=key, value=value, timestamp=timestamp)
                futures.append(await producer.send_batch(batch, topic, partition=partition))
            if transaction is not None:
                transaction.records += n
                if fixed is not None:
                    transaction.topics.add(fixed)
                else:
                    transaction.topics.update(topics)
        except Exception as exc:
            raise KafkaSinkError(f"{self.label} cannot send to {_topics(topics)}: {exc!r}") from exc
        if not wait:
            for future in futures:
                future.add_done_callback(self._delivered)
            return
        if futures:
            await producer.flush()
            for future in futures:
                if not future.done():
                    await asyncio.wait([future])
                error = future.exception()
                if error is not None:
                    raise KafkaSinkError(
                        f"{self.label}: the broker did not acknowledge records sent to "
                        f"{_topics(topics)}: {error!r}"
                    ) from error

    async def _partition(
        self,
        producer: Any,
        topics: str | list[str],
        keys: list[bytes | None],
        payloads: list[bytes],
        values: list[Any],
    ) -> Mapping[tuple[str, int], Sequence[int]]:
        """Record indices by ``(topic, partition)``: the user's partitioner; else Kafka's
        default: the murmur2 hash of the key, and for records without a key one partition
        per batch, the next one for the next batch (Kafka's sticky partitioning)."""
        partitioner = self._partitioner
        if partitioner is None and isinstance(topics, str) and not any(keys):
            # One topic, no keys: the whole batch goes to the next partition.
            ordered = sorted(await producer.partitions_for(topics))
            self._round_robin += 1
            return {(topics, ordered[self._round_robin % len(ordered)]): range(len(payloads))}
        default = self._default_partitioner
        ids: dict[str, list[int]] = {}
        sticky: dict[str, int] = {}
        groups: dict[tuple[str, int], list[int]] = {}
        fixed = topics if isinstance(topics, str) else None
        for i in range(len(payloads)):
            topic = fixed if fixed is not None else topics[i]
            partitions = ids.get(topic)
            if partitions is None:
                partitions = ids[topic] = sorted(await producer.partitions_for(topic))
            key = keys[i]
            if partitioner is not None:
                partition = partitioner.partition(values[i], key, payloads[i], topic, partitions)
            elif key is not None:
                partition = default(key, partitions, partitions)
            else:
                partition = sticky.get(topic, -1)
                if partition < 0:
                    self._round_robin += 1
                    partition = sticky[topic] = partitions[self._round_robin % len(partitions)]
            group = groups.get((topic, partition))
            if group is None:
                groups[(topic, partition)] = [i]
            else:
                group.append(i)
        return groups

    def _delivered(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None and self._error is None:
            error = future.exception()
            self._error = KafkaSinkError(f"{self.label}: a record was not delivered: {error!r}")
            self._error.__cause__ = error

    async def _flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()

    async def _control_client(self) -> Any:
        if self._client is None:
            aiokafka_client = require("aiokafka.client", "kafka")
            client = aiokafka_client.AIOKafkaClient(
                bootstrap_servers=self.sink.bootstrap_servers,
                client_id=f"flowkit-kafka-sink-{self._prefix}-{self.subtask_index}",
            )
            self._open.add(client)
            try:
                await self._uninterrupted(client.bootstrap())
            except Exception as exc:
                self._open.discard(client)
                await client.close()
                raise KafkaSinkError(f"{self.label} cannot connect: {exc!r}") from exc
            self._client = client
        return self._client

    async def _coordinator_request(self, transactional_id: str, request: Any, what: str) -> Any:
        """Send ``request`` to the transaction coordinator of ``transactional_id``; retry
        while the coordinator is moving, loading or finishing an earlier transaction."""
        client = await self._control_client()
        errors = require("aiokafka.errors", "kafka")
        client_module = require("aiokafka.client", "kafka")
        delay = 0.05
        last: Any = None
        failures = 0  # client-side failures (connection lost, timeout): a few tries only
        for _attempt in range(40):
            try:
                node = await client.coordinator_lookup(
                    client_module.CoordinationType.TRANSACTION, transactional_id
                )
                response = await client.send(
                    node, request, group=client_module.ConnectionGroup.COORDINATION
                )
            except errors.KafkaError as exc:
                retriable = (
                    _error_code(exc) in _RETRIABLE_CODES or type(exc).__name__ in _RETRIABLE_ERRORS
                )
                failures += 0 if _error_code(exc) in _RETRIABLE_CODES else 1
                if not retriable or failures >= 5:
                    raise self._refused(transactional_id, what, exc) from exc
                last = exc
            else:
                if response.error_code == 0:
                    return response
                error = errors.for_code(response.error_code)()
                if response.error_code not in _RETRIABLE_CODES:
                    raise self._refused(transactional_id, what, error) from error
                last = error
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise self._refused(transactional_id, what, last) from last

    def _refused(self, transactional_id: str, what: str, error: Any) -> KafkaSinkError:
        return KafkaSinkError(
            f"{self.label}: the broker refused {what} for transactional id "
            f"{transactional_id!r}: {error!r}. EXACTLY_ONCE needs a broker with Kafka "
            f"transactions (Apache Kafka >= 2.5, Redpanda, or another broker that implements "
            f"InitProducerId v3, AddPartitionsToTxn and EndTxn)"
        )

    async def _init_producer_id(self, transactional_id: str) -> tuple[int, int]:
        """``InitProducerId`` for ``transactional_id``: fences earlier producers with the
        id and aborts their open transaction."""
        request = _protocol()["InitProducerIdRequest"](transactional_id, self._txn_timeout_ms)
        response = await self._coordinator_request(
            transactional_id, request, "to start a transaction (InitProducerId)"
        )
        return int(response.producer_id), int(response.producer_epoch)

    async def _end_txn(self, transaction: KafkaTransaction | _Txn, commit: bool) -> None:
        request = _protocol()["EndTxnRequest"](
            transaction.transactional_id,
            transaction.producer_id,
            transaction.epoch,
            commit,
        )
        await self._coordinator_request(
            transaction.transactional_id,
            request,
            "to commit a transaction (EndTxn)" if commit else "to abort a transaction (EndTxn)",
        )

    async def _recover(self, states: list[KafkaSinkState]) -> None:
        for state in states:
            for transaction in state.pending:
                try:
                    await self._end_txn(transaction, commit=True)
                except KafkaSinkError as exc:
                    cause = exc.__cause__
                    if _error_code(cause) in _COMPLETED_CODES:
                        _log.warning(
                            "%s: restored transaction %r of checkpoint %d was committed or "
                            "aborted before (%r); if its records are missing, it timed out "
                            "(transaction.timeout.ms)",
                            self.label,
                            transaction.transactional_id,
                            transaction.checkpoint_id,
                            cause,
                        )
                        continue
                    raise
                _log.info(
                    "%s: committed restored transaction %r of checkpoint %d",
                    self.label,
                    transaction.transactional_id,
                    transaction.checkpoint_id,
                )
        # Abort what attempts after the restored checkpoint (or an earlier run with this
        # prefix) left open: transaction numbers are consecutive from the restored
        # ``next_transaction``; the first id that was never used (epoch 0) ends the scan.
        starts = {self.subtask_index: self._next_transaction}
        for state in states:
            if state.prefix == self._prefix:
                starts[state.subtask] = max(starts.get(state.subtask, 0), state.next_transaction)
        for subtask, start in sorted(starts.items()):
            number = start
            while True:
                transactional_id = f"{self._prefix}-{subtask}-{number}"
                _pid, epoch = await self._init_producer_id(transactional_id)
                if epoch == 0:
                    break
                _log.info("%s: aborted lingering transaction %r", self.label, transactional_id)
                number += 1
            if subtask == self.subtask_index:
                # Numbers below were used (by an earlier run with this subtask index too,
                # e.g. before a change of parallelism): go on after them.
                self._next_transaction = max(self._next_transaction, number)

    async def _begin(self, number: int) -> _Txn:
        transactional_id = f"{self._prefix}-{self.subtask_index}-{number}"
        producer_id, epoch = await self._init_producer_id(transactional_id)
        producer = await self._new_producer(
            transactional_id=transactional_id, transaction_timeout_ms=self._txn_timeout_ms
        )
        # The producer id comes from InitProducerId v3 above (aiokafka would send v0).
        producer._txn_manager.set_pid_and_epoch(producer_id, epoch)
        try:
            await self._uninterrupted(producer.start())
            await producer.begin_transaction()
        except Exception as exc:
            await self._stop(producer)
            raise KafkaSinkError(
                f"{self.label} cannot begin transaction {transactional_id!r}: {exc!r}"
            ) from exc
        return _Txn(transactional_id, number, producer, producer_id, epoch)

    async def _commit_in_order(
        self, transactions: list[_Txn], previous: concurrent.futures.Future[None] | None
    ) -> None:
        """Commit ``transactions`` after the commits started before (``previous``); all
        are attempted, the first error is raised."""
        if previous is not None:
            await asyncio.wait([asyncio.wrap_future(previous)])
        first: BaseException | None = None
        for transaction in transactions:
            try:
                await self._commit(transaction)
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first

    async def _commit(self, transaction: _Txn) -> None:
        producer = transaction.producer
        try:
            await producer.commit_transaction()
        except Exception as exc:
            raise KafkaSinkError(
                f"{self.label} cannot commit transaction {transaction.transactional_id!r} "
                f"({transaction.records} records to {_topics(sorted(transaction.topics))}): "
                f"{exc!r}"
            ) from exc
        finally:
            await self._stop(producer)
        self.committed_transactions += 1

    async def _stop(self, producer: Any) -> None:
        self._open.discard(producer)
        await self._uninterrupted(producer.stop())

    async def _uninterrupted(self, step: Coroutine[Any, Any, Any]) -> None:
        """Run ``step`` (a producer's start or stop, a client's bootstrap) to its end in a
        task of its own that a cancellation of the caller does not interrupt (the caller
        is cancelled all the same). aiokafka closes the connection a bootstrap opens when
        the bootstrap fails, not when it is cancelled: a start cancelled by a failing or
        cancelled job would leave that connection open. ``_shutdown`` waits for these
        steps before it closes what is open."""
        task = asyncio.ensure_future(step)
        self._lifecycle.add(task)
        task.add_done_callback(self._lifecycle.discard)
        await asyncio.shield(task)

    async def _shutdown(self) -> None:
        commits = [asyncio.wrap_future(f) for f in list(self._commits)]
        if commits:
            await asyncio.gather(*commits, return_exceptions=True)
        current, self._current = self._current, None
        if current is not None:
            try:
                await current.producer.abort_transaction()
            except Exception as exc:
                _log.warning(
                    "%s: aborting transaction %r failed (the next attempt aborts it): %r",
                    self.label,
                    current.transactional_id,
                    exc,
                )
        # Starts and stops whose callers were cancelled end first (bounded by the client's
        # request timeout), so that what they opened is closed below.
        if self._lifecycle:
            await asyncio.gather(*self._lifecycle, return_exceptions=True)
        # Parked transactions stay open on the broker (a restore commits them): their
        # producers are stopped without aborting. Every producer and client (the control
        # client, one whose bootstrap was interrupted) is closed, whatever fails.
        self._producer = self._client = None
        closing = list(self._open)
        self._open.clear()
        for resource in closing:
            try:
                await resource.stop() if hasattr(resource, "stop") else await resource.close()
            except Exception as exc:
                _log.warning("%s: closing %r failed: %r", self.label, resource, exc)


def _run_blocking(coro: Coroutine[Any, Any, None], what: str) -> None:
    """Run ``coro`` to its end on an event loop of its own (the calling thread must not
    be running one: it would be blocked)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    coro.close()
    raise RuntimeError(
        f"{what} blocks and cannot be called on a running event loop; await the "
        f"asynchronous method instead (finish_async() / close_async())"
    )


def _too_large(size: int, limit: int) -> Exception:
    errors = require("aiokafka.errors", "kafka")
    return errors.MessageSizeTooLargeError(
        f"a message of {size} bytes is larger than max.request.size ({limit} bytes)"
    )


def _topics(topics: str | list[str]) -> str:
    if isinstance(topics, str):
        return f"topic {topics!r}"
    names = sorted(set(topics))
    return f"topic {names[0]!r}" if len(names) == 1 else f"topics {names!r}"


def _first_failing(serializer: KafkaRecordSerializationSchema, values: list[Any]) -> Any:
    for value in values:
        try:
            serializer.serialize_batch([value])
        except Exception:
            return value
    return values[0] if values else None
