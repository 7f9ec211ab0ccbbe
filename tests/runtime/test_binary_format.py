"""flowkit's binary batch format: written by the compiled helpers, read by them and by
the pure-Python reader, exactly (same values, same types), and never a crash on bad bytes."""

from __future__ import annotations

import collections
import enum
import marshal
import os
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_serialization import assert_same

from flowkit import _speedups as speedups
from flowkit import serialization
from flowkit.runtime.network.codec import decode_segments, encode_timestamps, write_records
from flowkit.serialization import (
    FORMAT_BINARY,
    FORMAT_MARSHAL,
    FORMAT_PICKLE,
    DefaultSerializer,
    decode_binary,
)

PURE = bool(os.environ.get("FLOWKIT_NO_EXTENSIONS"))

_int64 = st.integers(-(2**63), 2**63 - 1)
_scalars = (
    st.none()
    | st.booleans()
    | _int64
    | st.sampled_from([0, -1, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 2**63 - 1, -(2**63)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
    | st.binary(max_size=12)
)
_keys = st.text(max_size=6) | _int64 | st.tuples(st.text(max_size=3), _int64)
_builtin = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(_keys, inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, database=None, deadline=None)
@given(st.lists(_builtin, max_size=8))
def test_built_in_values_round_trip_through_both_readers(values: list[Any]) -> None:
    payload = speedups.encode_batch(values)
    assert payload is not None
    assert_same(values, speedups.decode_batch(payload))
    assert_same(values, decode_binary(payload))
    assert_same(values, speedups.decode_batch(memoryview(payload)))
    # A tuple of records is written like a list of them.
    assert speedups.encode_batch(tuple(values)) == payload


class Level(enum.IntEnum):
    LOW = 1


class Text(str):
    pass


Point = collections.namedtuple("Point", "x y")


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "record",
    [
        2**64,
        -(2**63) - 1,
        {"a": 2**70},
        bytearray(b"x"),
        ("a", bytearray(b"x")),
        Text("a"),
        {Text("a"): 1},
        Level.LOW,
        collections.OrderedDict(a=1),
        Point(1, 2),
        {1, 2},
        1j,
        _nested(65),
    ],
    ids=repr,
)
def test_other_records_are_pickled_and_arrive_exactly(record: Any) -> None:
    assert speedups.encode_batch(["plain", record]) is None
    fmt, payload = DefaultSerializer().encode(["plain", record])
    if not PURE:
        assert fmt == FORMAT_PICKLE
    assert_same(["plain", record], DefaultSerializer().decode(fmt, payload))


def test_the_default_serializer_writes_built_in_batches_in_the_binary_format() -> None:
    fmt, payload = DefaultSerializer().encode([{"user": "u1", "value": 2}, (1.5, None)])
    if PURE:
        assert fmt in (FORMAT_MARSHAL, FORMAT_PICKLE)
    else:
        assert fmt == FORMAT_BINARY
    assert DefaultSerializer().decode(fmt, payload) == [{"user": "u1", "value": 2}, (1.5, None)]
    # Nesting up to the limit stays in the format; one more level is pickled.
    assert speedups.encode_batch([_nested(64)]) is not None
    assert speedups.encode_batch(iter([1])) is None  # not a list or tuple: the general path


def test_binary_payloads_are_read_with_or_without_the_compiled_helpers() -> None:
    """What the helpers wrote, the default serializer reads in this process, with or without
    them (FLOWKIT_NO_EXTENSIONS=1 runs this with the pure-Python reader)."""
    records = [{"user": f"u{i}", "ts": 1_700_000_000_000 + i, "value": i % 7} for i in range(50)]
    payload = speedups.encode_batch(records)
    assert payload is not None
    assert serialization.decode_binary_batch is (decode_binary if PURE else speedups.decode_batch)
    assert_same(records, DefaultSerializer().decode(FORMAT_BINARY, payload))


def test_dict_keys_are_written_once_per_batch_and_shared_when_read() -> None:
    records = [{"user": f"u{i}", "value": i} for i in range(100)]
    payload = speedups.encode_batch(records)
    assert payload is not None
    assert payload.count(b"user") == 1 and payload.count(b"value") == 1
    for decode in (speedups.decode_batch, decode_binary):
        got = decode(payload)
        assert got == records
        first, second = (list(record) for record in got[:2])
        assert first[0] is second[0] and first[1] is second[1]
    # More distinct keys than are remembered per batch (64) are written in full.
    wide = [{f"k{i}": i for i in range(100)}, {f"k{i}": -i for i in range(100)}]
    payload = speedups.encode_batch(wide)
    assert payload is not None
    assert speedups.decode_batch(payload) == wide == decode_binary(payload)


@settings(max_examples=200, database=None, deadline=None)
@given(st.lists(_builtin, min_size=1, max_size=5), st.data())
def test_cut_or_damaged_payloads_raise_value_error(values: list[Any], data: Any) -> None:
    payload = speedups.encode_batch(values)
    assert payload is not None
    cut = data.draw(st.integers(0, len(payload) - 1))
    for decode in (speedups.decode_batch, decode_binary):
        with pytest.raises(ValueError, match="corrupt record batch"):
            decode(payload[:cut])
        with pytest.raises(ValueError, match="corrupt record batch: bytes after the last value"):
            decode(payload + b"\x00")
    # Any byte changed: an error or some value, never a crash or a hang.
    index = data.draw(st.integers(0, len(payload) - 1))
    damaged = bytearray(payload)
    damaged[index] = data.draw(st.integers(0, 255))
    for decode in (speedups.decode_batch, decode_binary):
        try:
            decode(bytes(damaged))
        except (ValueError, TypeError):  # TypeError: a damaged dict key that is unhashable
            pass


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x01\x0e", "an unknown tag"),
        (b"\x01\x06\x05ab", "a length beyond the end"),
        (b"\x01\x06\x01\xff", "a non-ASCII byte in an ASCII string"),
        (b"\x01\x09\x00", "a reference to a key not seen"),
        (b"\x01\x08\x03", "a remembered key that is not a str"),
        (b"\x01" + b"\x0c\x01" * 70 + b"\x00", "nested too deeply"),
        (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "truncated length"),
    ],
)
def test_corrupt_payloads_are_named(payload: bytes, message: str) -> None:
    for decode in (speedups.decode_batch, decode_binary):
        with pytest.raises(ValueError, match=message):
            decode(payload)


def test_the_format_is_smaller_than_pickle_for_dict_records() -> None:
    records = [
        {"user": f"u{i}", "ts": 1_700_000_000_000 + i, "value": i % 100} for i in range(1000)
    ]
    payload = speedups.encode_batch(records)
    assert payload is not None
    # a buffer holds about as many of these records as with pickle (it memoizes keys too)
    assert len(payload) <= 1.1 * len(pickle.dumps(records, protocol=5))


class Stamp(int):
    pass


def test_timestamps_travel_in_the_binary_format_or_marshalled() -> None:
    stamps = [1_700_000_000_000, None, -5, 2**63 - 1, -(2**63)]
    fmt, payload = encode_timestamps(stamps)
    assert fmt == (FORMAT_MARSHAL if PURE else FORMAT_BINARY)
    # An int subclass is not written in the format, nor by marshal: its number is.
    tfmt, tpayload = encode_timestamps([Stamp(5), None])
    assert tfmt == FORMAT_MARSHAL and marshal.loads(tpayload) == [5, None]
    # Written by the compiled helpers, read by this process whichever reader it uses.
    binary = speedups.encode_batch(stamps)
    assert binary is not None
    serializer = DefaultSerializer()
    rfmt, records = serializer.encode(["a", "b", "c", "d", "e"])
    for tfmt, tpayload in ((fmt, payload), (FORMAT_BINARY, binary)):
        buf = bytearray(512)
        end = write_records(buf, 0, rfmt, records, tpayload, tfmt)
        items: list[Any] = []
        decode_segments(buf, end, serializer, bytearray(), items)
        assert items == [(["a", "b", "c", "d", "e"], stamps)]
