"""Tests of flowkit.state.key_groups against Flink's / Java's known values."""

from __future__ import annotations

import enum
import itertools
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowkit.state.key_groups as key_groups_module
from flowkit.state.key_groups import (
    KeyGroupAssigner,
    KeyGroupRange,
    assign_key_to_parallel_operator,
    assign_to_key_group,
    compute_operator_index_for_key_group,
    default_max_parallelism,
    java_hash_code,
    key_group_range_for_operator_index,
    murmur_hash,
    validate_max_parallelism,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_FILE = REPO_ROOT / "flowkit" / "state" / "key_groups.py"
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def _ranges(max_parallelism: int, parallelism: int) -> list[tuple[int, int]]:
    return [
        (r.start, r.end)
        for r in (
            key_group_range_for_operator_index(max_parallelism, parallelism, i)
            for i in range(parallelism)
        )
    ]


# --- key group ranges and default max parallelism (Flink's values) ---------------------------


@pytest.mark.parametrize(
    ("max_parallelism", "parallelism", "expected"),
    [
        (128, 1, [(0, 127)]),
        (128, 2, [(0, 63), (64, 127)]),
        (128, 3, [(0, 42), (43, 85), (86, 127)]),
        (128, 4, [(0, 31), (32, 63), (64, 95), (96, 127)]),
        (128, 5, [(0, 25), (26, 51), (52, 76), (77, 102), (103, 127)]),
        (10, 3, [(0, 3), (4, 6), (7, 9)]),
        (4, 4, [(0, 0), (1, 1), (2, 2), (3, 3)]),
    ],
)
def test_key_group_ranges_match_flink(
    max_parallelism: int, parallelism: int, expected: list[tuple[int, int]]
) -> None:
    assert _ranges(max_parallelism, parallelism) == expected


@pytest.mark.parametrize(
    ("parallelism", "expected"),
    [(1, 128), (2, 128), (85, 128), (86, 256), (100, 256), (1000, 2048), (20000, 32768)],
)
def test_default_max_parallelism_matches_flink(parallelism: int, expected: int) -> None:
    assert default_max_parallelism(parallelism) == expected


def test_default_max_parallelism_is_capped_and_validated() -> None:
    assert default_max_parallelism(10**6) == 32768
    with pytest.raises(ValueError, match="parallelism must be >= 1"):
        default_max_parallelism(0)


def test_validate_max_parallelism_bounds() -> None:
    validate_max_parallelism(1)
    validate_max_parallelism(32768)
    for bad in (0, -1, 32769):
        with pytest.raises(ValueError, match=r"between 1 and 32768"):
            validate_max_parallelism(bad)
    with pytest.raises(TypeError, match="must be an int"):
        validate_max_parallelism(12.0)  # type: ignore[arg-type]


def test_parallelism_larger_than_max_parallelism_is_rejected() -> None:
    with pytest.raises(ValueError, match="parallelism must be between 1 and max_parallelism=4"):
        key_group_range_for_operator_index(4, 5, 0)
    with pytest.raises(ValueError, match="operator index"):
        key_group_range_for_operator_index(128, 2, 2)
    with pytest.raises(ValueError, match="key_group must be in"):
        compute_operator_index_for_key_group(128, 2, 128)
    with pytest.raises(ValueError, match="between 1 and 32768"):
        assign_to_key_group("a", 0)


def test_key_group_range_container_protocol() -> None:
    r = KeyGroupRange(3, 6)
    assert list(r) == [3, 4, 5, 6]
    assert len(r) == 4
    assert 3 in r and 6 in r
    assert 2 not in r and 7 not in r and "3" not in r
    assert not r.is_empty and bool(r)


def test_key_group_range_empty() -> None:
    empty = KeyGroupRange.EMPTY
    assert (empty.start, empty.end) == (0, -1)
    assert len(empty) == 0 and list(empty) == [] and 0 not in empty
    assert empty.is_empty and not empty
    assert KeyGroupRange.of(5, 2) is empty
    assert len(KeyGroupRange(5, 2)) == 0
    assert KeyGroupRange.of(2, 2) == KeyGroupRange(2, 2)
    with pytest.raises(ValueError, match="start must be >= 0"):
        KeyGroupRange(-1, 3)


def test_key_group_range_intersection() -> None:
    assert KeyGroupRange(0, 63).intersection(KeyGroupRange(32, 95)) == KeyGroupRange(32, 63)
    assert KeyGroupRange(0, 31).intersection(KeyGroupRange(32, 63)) is KeyGroupRange.EMPTY


@settings(max_examples=300, database=None, deadline=None)
@given(st.data())
def test_every_key_group_is_owned_by_the_operator_whose_range_contains_it(
    data: st.DataObject,
) -> None:
    max_parallelism = data.draw(st.integers(1, 32768), label="max_parallelism")
    parallelism = data.draw(st.integers(1, max_parallelism), label="parallelism")
    key_group = data.draw(st.integers(0, max_parallelism - 1), label="key_group")
    index = compute_operator_index_for_key_group(max_parallelism, parallelism, key_group)
    assert 0 <= index < parallelism
    assert key_group in key_group_range_for_operator_index(max_parallelism, parallelism, index)


@settings(max_examples=200, database=None, deadline=None)
@given(st.data())
def test_operator_ranges_partition_all_key_groups(data: st.DataObject) -> None:
    max_parallelism = data.draw(st.integers(1, 2048), label="max_parallelism")
    parallelism = data.draw(st.integers(1, min(max_parallelism, 64)), label="parallelism")
    ranges = [
        key_group_range_for_operator_index(max_parallelism, parallelism, i)
        for i in range(parallelism)
    ]
    assert ranges[0].start == 0
    assert ranges[-1].end == max_parallelism - 1
    for left, right in itertools.pairwise(ranges):
        assert right.start == left.end + 1
    assert sum(len(r) for r in ranges) == max_parallelism


# --- java_hash_code ----------------------------------------------------------------------------


def test_string_hash_matches_java() -> None:
    assert java_hash_code("hello") == 99162322
    assert java_hash_code("") == 0
    assert java_hash_code("a") == 97
    # "polygenelubricants".hashCode() == Integer.MIN_VALUE in Java.
    assert java_hash_code("polygenelubricants") == INT32_MIN
    # BMP, non-ASCII: h = 0x65E5 * 31 + 0x672C.
    assert java_hash_code("日本") == 0x65E5 * 31 + 0x672C


def test_string_hash_counts_surrogate_pairs() -> None:
    # U+1F600 is the UTF-16 pair D83D DE00: h = (97 * 31 + 0xD83D) * 31 + 0xDE00.
    expected = (97 * 31 + 0xD83D) * 31 + 0xDE00
    assert expected == 1866116
    assert java_hash_code("a\U0001f600") == expected
    # A lone surrogate is a single code unit, as in a Java string.
    assert java_hash_code("\ud800") == 0xD800


def test_long_string_hash_wraps_to_signed_32_bits() -> None:
    h = 0
    text = "the quick brown fox jumps over the lazy dog" * 10
    for ch in text:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    expected = h - 2**32 if h >= 2**31 else h
    assert java_hash_code(text) == expected


def test_int_hash_matches_integer_and_long() -> None:
    assert java_hash_code(0) == 0
    assert java_hash_code(-1) == -1
    assert java_hash_code(INT32_MAX) == INT32_MAX
    assert java_hash_code(INT32_MIN) == INT32_MIN
    # Long.hashCode: (int)(v ^ (v >>> 32)).
    assert java_hash_code(2**40) == 256
    assert java_hash_code(2**31) == INT32_MIN
    assert java_hash_code(-(2**31) - 1) == INT32_MIN
    assert java_hash_code(2**63 - 1) == INT32_MIN
    assert java_hash_code(-(2**63)) == INT32_MIN
    assert java_hash_code(-(2**40)) == -256


def test_big_int_hash_matches_biginteger() -> None:
    # BigInteger.hashCode: fold 32-bit magnitude words (most significant first), times signum.
    assert java_hash_code(2**64) == 961  # mag = [1, 0, 0]
    assert java_hash_code(-(2**64)) == -961
    assert java_hash_code(2**64 + 5) == 966
    assert java_hash_code(2**63) == INT32_MIN  # mag = [0x80000000, 0]
    for value in (3**100, -(7**80), 2**200 + 1):
        assert INT32_MIN <= java_hash_code(value) <= INT32_MAX


def test_bool_none_float_hashes() -> None:
    assert java_hash_code(True) == 1231
    assert java_hash_code(False) == 1237
    assert java_hash_code(None) == 0
    assert java_hash_code(1.0) == 1072693248  # Double.hashCode(1.0)
    assert java_hash_code(-2.5) == -1073479680  # Double.hashCode(-2.5): bits 0xC004000000000000
    assert java_hash_code(0.0) == 0
    assert java_hash_code(-0.0) == 0  # same Python key as 0.0
    assert java_hash_code(math.nan) == 2146959360  # canonical 0x7ff8000000000000
    assert java_hash_code(-math.nan) == 2146959360
    assert java_hash_code(math.inf) == 2146435072


def test_bytes_hash_matches_arrays_hashcode() -> None:
    assert java_hash_code(b"") == 1
    assert java_hash_code(b"\x80\x01") == (31 + -128) * 31 + 1  # signed bytes
    assert java_hash_code(bytearray(b"abc")) == java_hash_code(b"abc") == 126145


def test_sequence_set_and_dict_hashes() -> None:
    assert java_hash_code(()) == 1
    assert java_hash_code((1, "a")) == (31 + 1) * 31 + 97
    assert java_hash_code([1, "a"]) == java_hash_code((1, "a"))
    assert java_hash_code(frozenset({1, 2, 3})) == 6
    assert java_hash_code(frozenset()) == 0
    assert java_hash_code({1: 2, 3: 4}) == (1 ^ 2) + (3 ^ 4)
    nested = (("x", 2**40), None, (True,))
    expected = 1
    for part in (java_hash_code(("x", 2**40)), 0, java_hash_code((True,))):
        expected = (31 * expected + part) & 0xFFFFFFFF
    assert java_hash_code(nested) == (expected - 2**32 if expected >= 2**31 else expected)


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Level(enum.IntEnum):
    LOW = 1


@dataclass(frozen=True)
class UserKey:
    user: str
    shard: int
    note: str = field(default="", compare=False)


class CustomKey:
    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CustomKey) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __flowkit_hash__(self) -> int:
        return self.value * 3


def test_enum_dataclass_and_custom_hashes() -> None:
    qual = f"{__name__}.Color"
    assert java_hash_code(Color.RED) == java_hash_code((qual, "RED"))
    assert java_hash_code(Color.RED) != java_hash_code(Color.GREEN)
    # IntEnum members hash by name, not like the int they equal.
    assert java_hash_code(Level.LOW) == java_hash_code((f"{__name__}.Level", "LOW"))
    key = UserKey("alice", 3, note="ignored")
    assert java_hash_code(key) == java_hash_code((f"{__name__}.UserKey", ("alice", 3)))
    assert java_hash_code(key) == java_hash_code(UserKey("alice", 3))
    assert java_hash_code(CustomKey(7)) == 21
    assert java_hash_code(CustomKey(2**40)) == 0  # wrapped to 32 bits


def test_unsupported_key_type_raises_clear_type_error() -> None:
    class Opaque:
        pass

    with pytest.raises(TypeError, match="no stable hash across processes") as info:
        java_hash_code(Opaque())
    message = str(info.value)
    assert "Opaque" in message
    assert "__flowkit_hash__" in message
    assert "tuple" in message
    with pytest.raises(TypeError):
        assign_to_key_group((1, object()), 128)


@settings(max_examples=200, database=None, deadline=None)
@given(
    st.one_of(
        st.integers(),
        st.text(),
        st.binary(),
        st.floats(allow_nan=True),
        st.tuples(st.text(), st.integers()),
    )
)
def test_java_hash_code_is_signed_32_bit(key: object) -> None:
    assert INT32_MIN <= java_hash_code(key) <= INT32_MAX


# --- murmur hash -------------------------------------------------------------------------------


def test_murmur_hash_matches_murmur3_reference_vectors() -> None:
    # Flink's murmurHash(int) is MurmurHash3_x86_32 of the int's 4 little-endian bytes with
    # seed 0, made non-negative. Reference vectors: {0,0,0,0} -> 0x2362F9DE and
    # {0x21,0x43,0x65,0x87} -> 0xF55B516B (negative as an int, so it is negated).
    assert murmur_hash(0) == 0x2362F9DE
    assert murmur_hash(0x87654321 - 2**32) == 2**32 - 0xF55B516B
    # Only the low 32 bits matter.
    assert murmur_hash(0x87654321) == murmur_hash(0x87654321 - 2**32)


@settings(max_examples=500, database=None, deadline=None)
@given(st.integers(INT32_MIN, INT32_MAX))
def test_murmur_hash_is_non_negative_and_deterministic(code: int) -> None:
    result = murmur_hash(code)
    assert 0 <= result < 2**31
    assert murmur_hash(code) == result


def test_assign_to_key_group_known_values() -> None:
    assert assign_to_key_group("hello", 128) == murmur_hash(99162322) % 128 == 35
    assert assign_key_to_parallel_operator("hello", 128, 2) == 35 * 2 // 128
    for key in ("a", 1, (1, "x"), b"z", 2.5):
        group = assign_to_key_group(key, 4096)
        assert 0 <= group < 4096
        operator = assign_key_to_parallel_operator(key, 4096, 7)
        assert group in key_group_range_for_operator_index(4096, 7, operator)


def test_key_groups_are_spread_over_all_operators() -> None:
    counts = [0] * 4
    for i in range(4000):
        counts[assign_key_to_parallel_operator(f"key-{i}", 128, 4)] += 1
    assert min(counts) > 700, counts


# --- KeyGroupAssigner ----------------------------------------------------------------------------

_keys = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=8),
        st.binary(max_size=8),
    ),
    lambda children: st.tuples(children, children) | st.lists(children, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200, database=None, deadline=None)
@given(st.lists(_keys, max_size=20), st.integers(1, 1024), st.data())
def test_assigner_matches_uncached_functions(
    keys: list[object], max_parallelism: int, data: st.DataObject
) -> None:
    parallelism = data.draw(st.integers(1, max_parallelism), label="parallelism")
    assigner = KeyGroupAssigner(max_parallelism, parallelism)
    for _ in range(2):  # the second round is served from the caches
        for key in keys:
            assert assigner.key_group_for_key(key) == assign_to_key_group(key, max_parallelism)
            assert assigner.channel_for_key(key) == assign_key_to_parallel_operator(
                key, max_parallelism, parallelism
            )


def test_assigner_keeps_equal_keys_of_different_types_apart() -> None:
    # 1 == 1.0 == True in Python, but their hash codes differ (as in Java); the cache must not
    # hand out the result of whichever came first.
    groups = [(1,), (1.0,), (True,), (Level.LOW,)]
    keys: list[object] = [1, 1.0, True, Level.LOW, 0.0, -0.0, "a", *groups, ("a", 1), ("a", True)]
    for order in (keys, keys[::-1]):
        assigner = KeyGroupAssigner(32768, 7)
        for key in order * 2:
            assert assigner.key_group_for_key(key) == assign_to_key_group(key, 32768), key
            assert assigner.channel_for_key(key) == assign_key_to_parallel_operator(
                key, 32768, 7
            ), key
    assert len({assign_to_key_group(k, 32768) for k in (1, 1.0, True)}) == 3


def test_assigner_handles_unhashable_dataclass_and_custom_keys() -> None:
    assigner = KeyGroupAssigner(128, 3)
    keys: list[object] = [
        [1, 2],
        {"a": 1},
        {1, 2},
        (1, [2]),
        UserKey("bob", 1),
        UserKey("bob", True),
        Color.GREEN,
        CustomKey(5),
        frozenset({"x"}),
        math.nan,
    ]
    for key in keys * 2:
        assert assigner.channel_for_key(key) == assign_key_to_parallel_operator(key, 128, 3)
        assert assigner.key_group_for_key(key) == assign_to_key_group(key, 128)


def test_assigner_unsupported_key_raises_type_error() -> None:
    assigner = KeyGroupAssigner(128, 2)
    with pytest.raises(TypeError, match="no stable hash across processes"):
        assigner.channel_for_key(object())


def test_assigner_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(key_groups_module, "_CACHE_LIMIT", 8)
    assigner = KeyGroupAssigner(128, 4)
    keys = [f"k{i}" for i in range(50)] + [(i, "t") for i in range(50)]
    for key in keys * 2:
        assert assigner.channel_for_key(key) == assign_key_to_parallel_operator(key, 128, 4)
    caches = assigner._channel_cache
    assert all(len(cache) <= 8 for cache in caches.by_class.values())
    assert len(caches.shaped) <= 8


def test_assigner_validates_and_reports_ranges() -> None:
    with pytest.raises(ValueError, match="parallelism"):
        KeyGroupAssigner(4, 8)
    assigner = KeyGroupAssigner(128, 3)
    assert assigner.key_group_range(1) == KeyGroupRange(43, 85)
    assert "max_parallelism=128" in repr(assigner)
    assigner.channel_for_key("x")
    assigner.clear_cache()
    assert assigner.channel_for_key("x") == assign_key_to_parallel_operator("x", 128, 3)


# --- stability across processes ----------------------------------------------------------------

_SUBPROCESS_SCRIPT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("_kg_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
keys = [
    "hello", "", "日本", "a\\U0001f600", 0, -1, 2**40, -(2**70), 3.25, -0.0, float("nan"),
    b"bytes", None, True, ("user", 42), ("nested", (1, 2.5, b"x")), frozenset({"a", "b", "c"}),
    {"k": "v", "x": 1},
] + [f"key-{i}" for i in range(200)]
out = [module.assign_to_key_group(k, 32768) for k in keys]
out += [module.KeyGroupAssigner(128, 5).channel_for_key(k) for k in keys]
print(json.dumps(out))
"""


def _run_with_hash_seed(seed: str) -> list[int]:
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = seed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_SCRIPT, str(MODULE_FILE)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: list[int] = json.loads(proc.stdout)
    return result


def test_key_groups_do_not_depend_on_pythonhashseed() -> None:
    first = _run_with_hash_seed("1")
    second = _run_with_hash_seed("2")
    assert first == second
    assert len(first) == 2 * 218
    assert first[0] == assign_to_key_group("hello", 32768)
    # Sanity: Python's own hash() of the same string does differ between the two seeds.
    probe = "import sys; print(hash('hello'))"
    hashes = {
        subprocess.run(
            [sys.executable, "-c", probe],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(hashes) == 2


def test_assigners_of_one_max_parallelism_share_the_key_group_cache() -> None:
    import gc

    from flowkit.state import key_groups

    producer = KeyGroupAssigner(96, 2)
    consumer = KeyGroupAssigner(96, 1)
    other = KeyGroupAssigner(64, 1)
    computed: list[object] = []
    cache = key_groups._GROUP_CACHES[96]

    def counting(key: object, compute: Callable[[object], int] = cache.fn) -> int:
        computed.append(key)
        return int(compute(key))

    cache.fn = counting
    assert (
        producer.channel_for_key("shared-key") == producer.key_group_for_key("shared-key") * 2 // 96
    )
    # The consumer's lookup is a hit: the hash was computed once in this process.
    assert consumer.key_group_for_key("shared-key") == assign_to_key_group("shared-key", 96)
    assert computed == ["shared-key"]
    # Another max parallelism has a cache of its own, with its own results.
    assert other.key_group_for_key("shared-key") == assign_to_key_group("shared-key", 64)
    assert computed == ["shared-key"]
    # The cache lives only as long as an assigner uses it.
    del producer, consumer, cache, counting
    gc.collect()
    assert 96 not in key_groups._GROUP_CACHES


def test_string_hash_matches_the_wrapping_definition_at_every_length() -> None:
    text = "Zürich \U0001f600 quick brown fox " * 8
    for length in range(len(text) + 1):
        s = text[:length]
        h = 0
        for unit in memoryview(s.encode("utf-16-le", "surrogatepass")).cast("H"):
            h = (31 * h + unit) & 0xFFFFFFFF
        assert java_hash_code(s) == (h - 2**32 if h >= 2**31 else h), length
        ascii_only = s.encode("ascii", "ignore").decode()
        h = 0
        for ch in ascii_only:
            h = (31 * h + ord(ch)) & 0xFFFFFFFF
        assert java_hash_code(ascii_only) == (h - 2**32 if h >= 2**31 else h), length
