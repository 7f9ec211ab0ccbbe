"""The compiled helpers (``flowkit._speedups``): their key groups against the pure-Python
functions, how flowkit loads them, and flowkit's tests run again without them.

``pip install`` builds the module from ``flowkit/_speedups.c``; flowkit falls back to the
pure-Python functions when it is missing, out of date, or when ``FLOWKIT_NO_EXTENSIONS`` is
set. Both must give the same key group for every key, or a job would route keys
differently depending on how it was installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# Imported whatever FLOWKIT_NO_EXTENSIONS says: that only decides what key_groups uses.
from flowkit import _speedups as speedups
from flowkit.state import key_groups, table

ROOT = Path(__file__).resolve().parents[2]
PURE = bool(os.environ.get("FLOWKIT_NO_EXTENSIONS"))


# Every code point, surrogates included (a lone surrogate is one UTF-16 unit).
_any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)
_max_parallelism = st.integers(1, 32768)


def test_a_module_built_from_other_sources_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from flowkit import _native

    assert speedups.API_VERSION == _native.API_VERSION
    monkeypatch.delenv("FLOWKIT_NO_EXTENSIONS", raising=False)
    monkeypatch.setattr(speedups, "API_VERSION", _native.API_VERSION - 1)
    assert _native._load() is None
    assert "was built from another version of flowkit/_speedups.c" in caplog.text
    monkeypatch.setattr(speedups, "API_VERSION", _native.API_VERSION)
    assert _native._load() is speedups


def test_the_compiled_helpers_are_used_unless_switched_off() -> None:
    # The install builds them (CI has a compiler): a silent fallback would go unnoticed.
    assert key_groups.ACCELERATED is not PURE
    assert (key_groups._str_hash is speedups.str_hash) is not PURE


@settings(max_examples=500, database=None, deadline=None)
@given(_any_text, _max_parallelism)
def test_str_hash_and_key_group_equal_the_pure_python_ones(text: str, max_p: int) -> None:
    assert speedups.str_hash(text) == key_groups._py_str_hash(text)
    assert speedups.str_key_group(text, max_p) == key_groups._py_str_key_group(text, max_p)


@settings(max_examples=500, database=None, deadline=None)
@given(st.integers(), _max_parallelism)
def test_int_key_group_and_murmur_equal_the_pure_python_ones(value: int, max_p: int) -> None:
    assert speedups.murmur_hash(value) == key_groups.murmur_hash(value)
    # Beyond 64 bits both return None and the caller takes BigInteger's hash.
    expected = key_groups._py_int_key_group(value, max_p)
    assert speedups.int_key_group(value, max_p) == expected
    assert (expected is None) is not (-(2**63) <= value < 2**63)


@given(
    st.dictionaries(
        st.one_of(_any_text, st.integers(), st.tuples(st.text(max_size=5), st.integers())),
        st.integers(),
        max_size=60,
    ),
    _max_parallelism,
)
@settings(max_examples=100, database=None, deadline=None)
def test_split_by_key_group_equals_the_pure_python_grouping(
    entries: dict[object, int], max_p: int
) -> None:
    """KeyedTable.put_namespace's split: each key in the group assign_to_key_group gives
    it (str and int computed in C, other keys through the function given), in order."""
    group_of = key_groups._key_group_function(max_p)
    split = speedups.split_by_key_group(entries, max_p, group_of)
    expected: dict[int, dict[object, int]] = {}
    for key, value in entries.items():
        expected.setdefault(key_groups.assign_to_key_group(key, max_p), {})[key] = value
    assert split == expected
    assert [list(part) for part in split.values()] == [list(p) for p in expected.values()]
    # by_first: timers keyed (key, namespace, timestamp), each in its key's group
    timers = {(key, None, value): None for key, value in entries.items()}
    by_first = speedups.split_by_key_group(timers, max_p, group_of, True)
    assert by_first == {
        kg: {(key, None, value): None for key, value in part.items()}
        for kg, part in expected.items()
    }


def test_split_by_first_item_takes_tuples_only(monkeypatch: pytest.MonkeyPatch) -> None:
    group_of = key_groups._key_group_function(128)
    timers = {("a", None, 1): None, (7, "ns", 2): None, (("t", 1), None, 3): None}
    compiled = table.split_by_key_group(timers, 128, group_of, by_first=True)
    monkeypatch.setattr(table, "_native_split", None)
    assert table.split_by_key_group(timers, 128, group_of, by_first=True) == compiled
    assert sorted(compiled) == sorted({group_of(key) for key, _ns, _ts in timers})
    with pytest.raises(TypeError, match="a non-empty tuple"):
        speedups.split_by_key_group({("a", 1): 1, "b": 2}, 128, group_of, True)
    with pytest.raises(TypeError, match="a non-empty tuple"):
        speedups.split_by_key_group({(): 1}, 128, group_of, True)


def test_edge_values_and_bad_arguments() -> None:
    s = speedups
    assert s.str_hash("polygenelubricants") == -(2**31)
    assert s.str_hash("a\U0001f600") == (97 * 31 + 0xD83D) * 31 + 0xDE00
    assert s.str_hash("\ud800") == 0xD800
    # murmur of a code whose mix is Integer.MIN_VALUE-free, and of the 32-bit extremes
    for code in (0, -1, 2**31 - 1, -(2**31), 2**32, 2**64 + 5, -(2**70)):
        assert s.murmur_hash(code) == key_groups.murmur_hash(code)
    assert s.int_key_group(2**63 - 1, 128) == key_groups._py_int_key_group(2**63 - 1, 128)
    assert s.int_key_group(2**63, 128) is None
    assert s.str_key_group("hello", 128) == 35
    with pytest.raises(ValueError, match="max_parallelism must be between 1 and 32768, got 0"):
        s.str_key_group("hello", 0)
    with pytest.raises(ValueError, match="got 32769"):
        s.int_key_group(7, 32769)
    with pytest.raises(TypeError, match="takes a str key, got bytes"):
        s.str_key_group(b"hello", 128)
    with pytest.raises(TypeError, match="takes an int, got float"):
        s.murmur_hash(1.5)
    # A str subclass hashes like its str value (java_hash_code passes subclasses on).
    assert s.str_hash(type("Name", (str,), {})("hello")) == 99162322


class _Holder:
    """Stands in for the backend and the context: the keyed loop sets attributes on both."""


@settings(max_examples=300, database=None, deadline=None)
@given(st.lists(_any_text | st.integers(), min_size=1, max_size=8), _max_parallelism)
def test_keyed_loop_gives_str_and_int_keys_the_key_group_of_the_backend(
    keys: list[str | int], max_p: int
) -> None:
    """The compiled keyed loop computes the group of a str key and of an int key (up to
    64 bits) itself, and asks the backend for a larger int's: the same group as
    assign_to_key_group (what the backend and the partitioner use)."""
    backend, ctx = _Holder(), _Holder()
    seen: list[tuple[str, int]] = []

    def fn(value: str, context: object) -> None:
        seen.append((backend.current_key, backend.current_key_group))  # type: ignore[attr-defined]

    asked: list[object] = []

    def group_of(key: object) -> int:
        asked.append(key)
        return key_groups.assign_to_key_group(key, max_p)

    def never(key: object) -> object:
        raise AssertionError(f"called for {key!r}")

    speedups.run_keyed(
        keys, None, lambda v: v, max_p, group_of, never, backend, ctx, fn,
        [], [], never, never, object, type(x for x in ()),
    )  # fmt: skip
    assert seen == [(k, key_groups.assign_to_key_group(k, max_p)) for k in keys]
    assert asked == [k for k in keys if isinstance(k, int) and not -(2**63) <= k < 2**63]
    with pytest.raises(ValueError, match="max_parallelism must be between 1 and 32768, got 0"):
        speedups.run_keyed(
            keys, None, str, 0, str, str, backend, ctx, fn, [], [], str, str, object, object
        )


class _SlottedBackend:
    __slots__ = ("current_key", "current_key_group")


class _SlottedContext:
    __slots__ = ("_key", "_record", "_ts")


class _LoggingBackend:
    """current_key as a property: the loop must go through its setter."""

    def __init__(self) -> None:
        self.log: list[object] = []
        self._key: object = None

    @property
    def current_key(self) -> object:
        return self._key

    @current_key.setter
    def current_key(self, key: object) -> None:
        self.log.append(key)
        self._key = key


class _GuardedContext:
    """Slots, and a __setattr__ of its own: the loop must call it for every write."""

    __slots__ = ("_key", "_record", "_ts", "writes")

    def __init__(self) -> None:
        object.__setattr__(self, "writes", [])

    def __setattr__(self, name: str, value: object) -> None:
        self.writes.append(name)
        object.__setattr__(self, name, value)


def _run_keyed(values: list[object], stamps: list[object], backend: object, ctx: object) -> list:
    seen: list[tuple[object, ...]] = []

    def fn(value: object, context: object) -> None:
        seen.append(
            (backend.current_key, backend.current_key_group, ctx._key, ctx._ts)  # type: ignore[attr-defined]
        )

    def never(key: object) -> object:
        raise AssertionError(f"called for {key!r}")

    speedups.run_keyed(
        values, stamps, lambda v: v, 128, never, never, backend, ctx, fn,
        [], [], never, never, object, type(x for x in ()),
    )  # fmt: skip
    return seen


def test_keyed_loop_writes_slots_and_goes_through_properties() -> None:
    """The loop writes the backend's and the context's __slots__ entries directly, and
    sets any other attribute (a property, a slot of a class with its own __setattr__)
    the ordinary way."""
    keys = ["a", "b", 7, "a"]
    expected = [
        (k, key_groups.assign_to_key_group(k, 128), k, t) for k, t in zip(keys, [1, 2, 3, 4])
    ]
    assert _run_keyed(keys, [1, 2, 3, 4], _SlottedBackend(), _SlottedContext()) == expected
    logging = _LoggingBackend()
    assert _run_keyed(keys, [1, 2, 3, 4], logging, _SlottedContext()) == expected
    assert logging.log == keys
    guarded = _GuardedContext()
    assert _run_keyed(keys, [1, 2, 3, 4], _SlottedBackend(), guarded) == expected
    assert guarded.writes == ["_key", "_ts"] * len(keys)


def test_keyed_loop_slot_writes_keep_reference_counts() -> None:
    key = "".join(["k", "e", "y"])  # an object of its own
    before = sys.getrefcount(key)
    backend, ctx = _SlottedBackend(), _SlottedContext()
    _run_keyed([key], [None], backend, ctx)
    assert sys.getrefcount(key) == before + 2  # held by backend.current_key and ctx._key
    _run_keyed(["other"], [None], backend, ctx)
    assert sys.getrefcount(key) == before
    assert backend.current_key == ctx._key == "other"


_plain_leaf = st.one_of(st.text(max_size=3), st.integers(), st.binary(max_size=2), st.none())
_other_leaf = st.one_of(
    st.floats(allow_nan=True), st.booleans(), st.frozensets(st.integers(0, 3), max_size=2)
)
_keys = st.recursive(
    st.one_of(_plain_leaf, _other_leaf),
    lambda inner: st.tuples(inner) | st.tuples(inner, inner),
    max_leaves=6,
)


@settings(max_examples=500, database=None, deadline=None)
@given(_keys)
def test_compiled_state_key_equals_the_pure_python_one(key: object) -> None:
    """The compiled state_key passes plain keys as they are and leaves every other key to
    the Python wrapper; both give the same stored form (also through CanonicalKeys'
    memory of scalar keys)."""
    expected = key_groups.state_key(key)
    compiled = speedups.state_key({}, key_groups.state_key, key)
    assert compiled == expected and type(compiled) is type(expected)
    if type(expected) is not key_groups.ExactKey:
        assert compiled is key
    keys = key_groups.CanonicalKeys()
    assert keys.canonical(key) == expected and keys.canonical(key) == expected


def test_compiled_state_key_bad_arguments() -> None:
    with pytest.raises(TypeError, match="by_class must be a dict"):
        speedups.state_key([], key_groups.state_key, 1.5)
    with pytest.raises(TypeError, match="takes 3 arguments"):
        speedups.state_key({}, 1.5)  # type: ignore[call-arg]
    # an unhashable key reaches the slow function, whose hash() raises
    with pytest.raises(TypeError, match="unhashable"):
        speedups.state_key({list: {}}, key_groups.state_key, [1])
    # a key nested deeper than the compiled check goes the slow way, with the same result
    deep: object = "x"
    for _ in range(20):
        deep = (deep,)
    assert speedups.state_key({}, key_groups.state_key, deep) is deep


def test_flowkit_works_the_same_without_the_compiled_helpers() -> None:
    """The key-group, state table and serialization tests again in a process that uses
    the pure-Python functions (and reads the binary format in pure Python)."""
    env = {**os.environ, "FLOWKIT_NO_EXTENSIONS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/state/test_key_groups.py",
            "tests/state/test_primitives.py",
            "tests/state/test_backend_snapshots.py",
            "tests/runtime/test_binary_format.py",
            "tests/runtime/test_serialization.py",
            "tests/api/test_keyed_process_paths.py",
            "tests/api/test_keyed_reduce_paths.py",
            "tests/api/test_exact_keys.py",
            "tests/runtime/test_gc_untracking.py",
            "tests/state/test_speedups.py::test_the_compiled_helpers_are_used_unless_switched_off",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
