"""Records cross non-chained channels unchanged in value and in type.

Two levels: directly (a RecordWriter writing into LocalChannels, read back with
``decode_segments``; fast, many examples, tiny buffers, records larger than a buffer) and
end to end through jobs whose records must cross channels. Also: the serializers on their
own, ``output_type=``, and what happens to a record that cannot be serialized.
"""

from __future__ import annotations

import array
import asyncio
import collections
import dataclasses
import enum
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowkit import CollectSink, StreamExecutionEnvironment
from flowkit.elements import EndOfPartition
from flowkit.errors import JobFailed, SerializationError
from flowkit.partitioners import ForwardPartitioner
from flowkit.runtime.buffers import decode_segments
from flowkit.runtime.channels import InputGate, LocalChannel, Notifier
from flowkit.runtime.record_writer import FAILURE_GRACE_SECONDS, RecordWriter
from flowkit.serialization import (
    DefaultSerializer,
    JsonSerializer,
    PickleSerializer,
    TypeSerializer,
    resolve_serializer,
)
from flowkit.sinks import AsyncCallbackSink

TIMEOUT = 10

# --------------------------------------------------------------------------- record types


class Color(enum.Enum):
    RED = "red"
    GREEN = 2


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


Point = collections.namedtuple("Point", ["x", "y"])


@dataclasses.dataclass
class Item:
    name: str
    payload: Any


@dataclasses.dataclass(frozen=True)
class Key:
    number: int
    label: str


class Text(str):
    """A str subclass: must not arrive as a plain str."""


class Blob(bytes):
    """A bytes subclass: must not arrive as plain bytes."""


# --------------------------------------------------------------------------- deep equality


def _canonical(value: Any) -> Any:
    """An order-independent, type-revealing form of a set element."""
    kind = type(value).__qualname__
    if isinstance(value, (set, frozenset)):
        return (kind, tuple(sorted(map(_canonical, value))))
    if isinstance(value, tuple):
        return (kind, tuple(map(_canonical, value)))
    return (kind, repr(value))


def assert_same(sent: Any, got: Any, path: str = "record") -> None:
    """Assert ``got`` equals ``sent`` and has the same type, all the way down.

    NaN equals NaN here, and -0.0 differs from 0.0.
    """
    assert type(got) is type(sent), f"{path}: sent {type(sent)!r}, got {type(got)!r}"
    if isinstance(sent, float):
        if math.isnan(sent):
            assert math.isnan(got), f"{path}: sent nan, got {got!r}"
        else:
            assert got == sent, f"{path}: sent {sent!r}, got {got!r}"
            assert math.copysign(1, got) == math.copysign(1, sent), f"{path}: sign of zero"
    elif isinstance(sent, complex):
        assert_same(sent.real, got.real, f"{path}.real")
        assert_same(sent.imag, got.imag, f"{path}.imag")
    elif isinstance(sent, enum.Enum):
        assert got is sent, f"{path}: sent {sent!r}, got {got!r}"
    elif isinstance(sent, (list, tuple)):
        assert len(got) == len(sent), f"{path}: length {len(sent)} became {len(got)}"
        for index, (a, b) in enumerate(zip(sent, got)):
            assert_same(a, b, f"{path}[{index}]")
    elif isinstance(sent, dict):
        assert len(got) == len(sent), f"{path}: {len(sent)} keys became {len(got)}"
        for index, (ka, kb) in enumerate(zip(sent, got)):
            assert_same(ka, kb, f"{path}.keys()[{index}]")
            assert_same(sent[ka], got[kb], f"{path}[{ka!r}]")
    elif isinstance(sent, (set, frozenset)):
        assert sorted(map(_canonical, got)) == sorted(map(_canonical, sent)), path
    elif dataclasses.is_dataclass(sent):
        for f in dataclasses.fields(sent):
            assert_same(getattr(sent, f.name), getattr(got, f.name), f"{path}.{f.name}")
    else:
        assert got == sent, f"{path}: sent {sent!r}, got {got!r}"


def test_assert_same_tells_types_apart() -> None:
    assert_same((1, [2.0, float("nan")], {"a": {1, 2}}), (1, [2.0, float("nan")], {"a": {2, 1}}))
    for sent, got in [
        ((1, 2), [1, 2]),
        (1, True),
        (0.0, -0.0),
        (1, 1.0),
        (Point(1, 2), (1, 2)),
        ({1: "a"}, {True: "a"}),
        (frozenset({(1, 2)}), frozenset({(1, 2.0)})),
        (b"x", bytearray(b"x")),
    ]:
        with pytest.raises(AssertionError):
            assert_same(sent, got)


# --------------------------------------------------------------------------- strategies

big_ints = st.integers(min_value=2**64, max_value=2**400) | st.integers(
    min_value=-(2**400), max_value=-(2**63) - 1
)
hashable_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | big_ints
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=12)
    | st.sampled_from(Color)
    | st.sampled_from(Level)
    | st.builds(Key, st.integers(), st.text(max_size=5))
)
hashables = st.recursive(
    hashable_leaves,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
leaves = (
    hashable_leaves
    | st.floats()
    | st.sampled_from([float("inf"), float("-inf"), -0.0, float("nan")])
    | st.complex_numbers()
    | st.text(alphabet=st.characters(min_codepoint=0x80), max_size=20)
    | st.builds(Text, st.text(max_size=8))
)
#: Objects with the buffer protocol other than bytes. The default serializer keeps their
#: type as records (top level); nested in core containers only the pickle serializer does
#: (documented in flowkit.serialization).
buffer_objects = (
    st.builds(Blob, st.binary(max_size=8))
    | st.binary(max_size=8).map(bytearray)
    | st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4).map(lambda xs: array.array("i", xs))
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(hashables, inner, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
        | st.builds(Point, inner, inner)
        | st.builds(Item, st.text(max_size=5), inner)
    )


records = st.recursive(leaves, _containers, max_leaves=12)
#: What the default serializer keeps exact.
default_records = records | buffer_objects
#: What the pickle serializer keeps exact.
any_records = st.recursive(leaves | buffer_objects, _containers, max_leaves=12)
#: Large values, so that records span several small buffers.
large_records = st.binary(min_size=300, max_size=3000) | st.text(min_size=200, max_size=1500)


# --------------------------------------------------------------------------- (a) channels


async def _through_channel(
    batches: list[list[Any]],
    buffer_size: int,
    num_buffers: int,
    serializer: TypeSerializer,
    stamps: bool = False,
) -> tuple[list[Any], list[Any]]:
    """Write ``batches`` through one LocalChannel and read them back as a consumer does."""
    channel = LocalChannel(buffer_size, num_buffers, name="test")
    producer, consumer = Notifier(), Notifier()
    writer = RecordWriter([channel], ForwardPartitioner(), serializer, "producer", producer)
    gate = InputGate([channel], consumer)
    values_out: list[Any] = []
    stamps_out: list[Any] = []

    async def consume() -> None:
        while True:
            polled = gate.poll()
            if polled is None:
                await consumer.wait()
                continue
            ch, buf, length = polled
            assert length <= buffer_size and len(buf) == buffer_size
            items: list[Any] = []
            decode_segments(buf, length, serializer, ch.span, items)
            ch.recycle(buf)
            for item in items:
                if type(item) is EndOfPartition:
                    return
                values, ts = item
                values_out.extend(values)
                stamps_out.extend(ts if ts is not None else [None] * len(values))

    async def produce() -> None:
        offset = 0
        for batch in batches:
            ts = list(range(offset, offset + len(batch))) if stamps else None
            offset += len(batch)
            writer.emit(batch, ts)
            if writer.blocked:
                await writer.drain()
        writer.emit_event(EndOfPartition())
        await writer.drain()

    reader = asyncio.create_task(consume())
    await asyncio.wait_for(produce(), TIMEOUT)
    await asyncio.wait_for(reader, TIMEOUT)
    return values_out, stamps_out


@settings(max_examples=100, deadline=None, database=None)
@given(
    batches=st.lists(
        st.lists(default_records | large_records, min_size=1, max_size=8), min_size=1, max_size=5
    ),
    buffer_size=st.integers(64, 512),
    num_buffers=st.integers(1, 3),
    stamps=st.booleans(),
)
async def test_records_cross_a_channel_unchanged(
    batches: list[list[Any]], buffer_size: int, num_buffers: int, stamps: bool
) -> None:
    sent = [v for batch in batches for v in batch]
    got, got_stamps = await _through_channel(
        batches, buffer_size, num_buffers, DefaultSerializer(), stamps
    )
    assert_same(sent, got)
    assert got_stamps == (list(range(len(sent))) if stamps else [None] * len(sent))


@settings(max_examples=40, deadline=None, database=None)
@given(batches=st.lists(st.lists(any_records, min_size=1, max_size=6), min_size=1, max_size=4))
async def test_records_cross_a_pickle_channel_unchanged(batches: list[list[Any]]) -> None:
    sent = [v for batch in batches for v in batch]
    got, _ = await _through_channel(batches, 128, 2, PickleSerializer())
    assert_same(sent, got)


@pytest.mark.parametrize("buffer_size", [64, 100, 256])
async def test_a_record_many_buffers_long_spans_them(buffer_size: int) -> None:
    big = bytes(range(256)) * 40  # 10 KiB
    sent = [1, big, (2, "x" * 5000), 3]
    got, stamps = await _through_channel([sent], buffer_size, 1, DefaultSerializer(), True)
    assert_same(sent, got)
    assert stamps == [0, 1, 2, 3]


async def test_buffer_objects_keep_their_type_as_records() -> None:
    """marshal would turn these into plain bytes (or fail): the default serializer must not."""
    sent = [bytearray(b"abc"), array.array("i", [1, 2, 3]), Blob(b"xyz"), b"plain"]
    got, _ = await _through_channel([sent], 256, 2, DefaultSerializer())
    assert_same(sent, got)
    nested = [
        (1, bytearray(b"n")),
        {"a": array.array("d", [0.5])},
        {"deep": [("x", Blob(b"sub")), {"b": bytearray(b"q")}]},
        ["plain", 1, 2.5],
    ]
    for serializer in (DefaultSerializer(), PickleSerializer()):
        got, _ = await _through_channel([nested], 256, 2, serializer)
        assert_same(nested, got)
        assert type(got[2]["deep"][0][1]) is Blob
        assert type(got[2]["deep"][1]["b"]) is bytearray


# --------------------------------------------------------------------------- serializers


@settings(max_examples=100, deadline=None, database=None)
@given(values=st.lists(default_records, max_size=10), nested=st.lists(any_records, max_size=6))
def test_default_and_pickle_serializers_round_trip(values: list[Any], nested: list[Any]) -> None:
    cases: list[tuple[TypeSerializer, list[Any]]] = [
        (DefaultSerializer(), values),
        (DefaultSerializer(), nested),
        (PickleSerializer(), values),
        (PickleSerializer(), nested),
    ]
    for serializer, sent in cases:
        fmt, payload = serializer.encode(sent)
        assert isinstance(payload, bytes)
        assert_same(sent, serializer.decode(fmt, payload))
        assert_same(sent, serializer.decode(fmt, memoryview(payload)))


json_docs = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=15,
)


@settings(max_examples=100, deadline=None, database=None)
@given(values=st.lists(json_docs, max_size=10))
def test_json_serializer_round_trips_json_documents(values: list[Any]) -> None:
    serializer = JsonSerializer()
    fmt, payload = serializer.encode(values)
    assert_same(values, serializer.decode(fmt, payload))


def test_json_serializer_documented_losses_and_errors() -> None:
    serializer = JsonSerializer()
    assert serializer.decode(*serializer.encode([(1, 2), {"a": (3,)}, float("nan")])) == [
        [1, 2],
        {"a": [3]},
        None,
    ]
    with pytest.raises(SerializationError, match="bytes"):
        serializer.encode(["fine", b"raw"])
    with pytest.raises(SerializationError, match="int"):
        serializer.encode([2**70])


def test_serializers_name_the_type_they_cannot_encode() -> None:
    for serializer in (DefaultSerializer(), PickleSerializer()):
        with pytest.raises(SerializationError, match=r"builtins\.tuple.*lock"):
            serializer.encode([1, (threading.Lock(),)])
        with pytest.raises(SerializationError, match=r"builtins\.function"):
            serializer.encode([lambda: None])


def test_resolve_serializer() -> None:
    assert type(resolve_serializer(None)) is DefaultSerializer
    assert type(resolve_serializer("default")) is DefaultSerializer
    assert type(resolve_serializer("pickle")) is PickleSerializer
    assert type(resolve_serializer("json")) is JsonSerializer
    mine = PickleSerializer()
    assert resolve_serializer(mine) is mine
    with pytest.raises(ValueError, match="output_type"):
        resolve_serializer("yaml")


# --------------------------------------------------------------------------- (b) jobs


def _identity(value: Any) -> Any:
    return value


def _indexed_second(pair: tuple[int, Any]) -> tuple[int, Any]:
    return pair


JOB_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@JOB_SETTINGS
@given(values=st.lists(default_records | large_records, min_size=1, max_size=12))
def test_records_cross_unchained_operators_unchanged(values: list[Any]) -> None:
    """source -> map -> sink, chaining disabled: two channels, one subtask each (order kept)."""
    env = StreamExecutionEnvironment(parallelism=1, buffer_size=128, buffers_per_channel=2)
    sink = CollectSink()
    env.from_collection(values).map(_identity).disable_chaining().sink_to(sink)
    env.execute("unchained")
    assert_same(values, sink.values)


@JOB_SETTINGS
@given(values=st.lists(records | large_records, min_size=1, max_size=12))
def test_records_cross_a_rebalance_at_parallelism_two_unchanged(values: list[Any]) -> None:
    env = StreamExecutionEnvironment(parallelism=2, buffer_size=256, buffers_per_channel=2)
    sink = CollectSink()
    env.from_collection(list(enumerate(values))).rebalance().map(_indexed_second).sink_to(sink)
    env.execute("rebalanced")
    got = sorted(sink.values, key=lambda pair: pair[0])
    assert [index for index, _ in got] == list(range(len(values)))
    for (_, sent), (index, arrived) in zip(enumerate(values), got):
        assert_same(sent, arrived, f"record {index}")


def test_a_json_stream_carries_documents_as_json() -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    docs = [{"user": "ü", "n": 2**62, "x": -0.0, "tags": ["a", None, True]}, [1.5, {"k": {}}]]
    env.from_collection(docs).map(_identity, output_type="json").disable_chaining().sink_to(sink)
    assert "serializer json" in env.explain()
    env.execute("json")
    assert_same(docs, sink.values)


def test_a_json_stream_turns_tuples_into_lists() -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    env.from_collection([("a", 1)]).map(_identity, output_type="json").disable_chaining().sink_to(
        sink
    )
    env.execute("json tuples")
    assert sink.values == [["a", 1]]


# --------------------------------------------------------------------------- failures


def _lock_at_four(i: int) -> Any:
    return (threading.Lock(),) if i == 4 else i


def _lambda_at_four(i: int) -> Any:
    return (lambda: i) if i == 4 else i


@pytest.mark.parametrize(
    ("make", "type_name"), [(_lock_at_four, "builtins.tuple"), (_lambda_at_four, "function")]
)
def test_an_unserializable_record_fails_the_job_after_delivering_what_came_before(
    make: Any, type_name: str
) -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    env.from_collection(list(range(1, 8))).map(make).name("producer").rebalance().sink_to(sink)
    with pytest.raises(JobFailed) as info:
        env.execute("unserializable")
    message = str(info.value)
    assert "'producer'" in message
    assert type_name in message
    cause = info.value.__cause__
    assert isinstance(cause, SerializationError)
    assert "'producer'" in str(cause) and type_name in str(cause)
    # Records 1..3 were in the same batch before the bad one: none of them is lost.
    assert sink.values == [1, 2, 3]


def test_an_unserializable_source_record_names_the_source() -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    env.from_collection(["a", "b", threading.Lock(), "c"]).rebalance().sink_to(sink)
    with pytest.raises(JobFailed, match=r"Collection Source.*_thread\.(lock|RLock)") as info:
        env.execute("bad source record")
    assert isinstance(info.value.__cause__, SerializationError)
    assert sink.values == ["a", "b"]


def test_an_unserializable_record_at_parallelism_two_loses_nothing_before_it() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    sink = CollectSink()
    (
        env.from_collection(list(range(1, 41)))
        .map(lambda i: (threading.Lock(),) if i == 30 else i)
        .name("producer")
        .set_parallelism(1)
        .rebalance()
        .sink_to(sink)
    )
    with pytest.raises(JobFailed, match="'producer'"):
        env.execute("unserializable p2")
    assert set(range(1, 30)) <= set(sink.values)
    assert all(type(v) is int for v in sink.values)


class _NoSevens(TypeSerializer):
    """A custom serializer that fails with its own exception type."""

    name = "no-sevens"

    def encode(self, values: Sequence[Any]) -> tuple[int, bytes]:
        if 7 in values:
            raise ValueError("sevens are not allowed")
        return DefaultSerializer().encode(values)

    def decode(self, format_code: int, payload: bytes | memoryview) -> list[Any]:
        return DefaultSerializer().decode(format_code, payload)


def test_a_custom_serializer_failure_names_operator_and_record_type() -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    (
        env.from_collection([5, 6, 7, 8])
        .map(_identity, output_type=_NoSevens())
        .name("custom")
        .disable_chaining()
        .sink_to(sink)
    )
    with pytest.raises(JobFailed) as info:
        env.execute("custom serializer")
    cause = info.value.__cause__
    assert isinstance(cause, SerializationError)
    assert "'custom'" in str(cause) and "builtins.int" in str(cause)
    assert isinstance(cause.__cause__, ValueError)
    assert sink.values == [5, 6]


async def test_a_stuck_consumer_delays_the_failure_only_by_the_grace_period() -> None:
    """The writer waits for its consumers to take what it accepted, but not forever."""
    first_seen = asyncio.Event()
    never = asyncio.Event()

    async def records() -> Any:
        yield "first"
        await first_seen.wait()
        yield "second"
        yield (threading.Lock(),)

    async def stuck(value: Any) -> None:
        first_seen.set()
        await never.wait()

    env = StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=0)
    env.from_async_iterable(records()).rebalance().sink_to(AsyncCallbackSink(stuck))
    client = await env.execute_async("stuck consumer")
    start = time.perf_counter()
    with pytest.raises(JobFailed, match=r"Async Iterable Source.*builtins\.tuple"):
        await asyncio.wait_for(client.wait(), TIMEOUT)
    elapsed = time.perf_counter() - start
    assert 0.8 * FAILURE_GRACE_SECONDS <= elapsed < FAILURE_GRACE_SECONDS + 3
    assert client.status.name == "FAILED"
