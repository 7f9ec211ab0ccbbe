"""Key groups: which subtask owns which key, exactly like Flink's ``KeyGroupRangeAssignment``.

A keyed stream is split into ``max_parallelism`` *key groups*. A key belongs to key group
``murmur_hash(java_hash_code(key)) % max_parallelism`` and key group ``g`` is owned by
operator (subtask) index ``g * parallelism // max_parallelism``. Key groups are the unit of
keyed state redistribution when a job is rescaled, so the mapping must be identical in every
process: :func:`java_hash_code` never uses Python's salted ``hash()`` (``PYTHONHASHSEED``).

Imports nothing from flowkit but its optional compiled helpers (:mod:`flowkit._native`):
when they are built, a ``str`` or 64-bit ``int`` key's group is computed in C; otherwise (or
with ``FLOWKIT_NO_EXTENSIONS=1`` in the environment) by the pure-Python functions here, which
give the same values. :data:`ACCELERATED` tells which.

Example:
    >>> assign_to_key_group("hello", 128)
    35
    >>> key_group_range_for_operator_index(128, 2, 1)
    KeyGroupRange(start=64, end=127)
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import struct
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from flowkit._native import speedups

__all__ = [
    "CANONICAL_NAN",
    "DEFAULT_LOWER_BOUND_MAX_PARALLELISM",
    "UPPER_BOUND_MAX_PARALLELISM",
    "CanonicalKeys",
    "ExactKey",
    "KeyGroupAssigner",
    "KeyGroupRange",
    "assign_key_to_parallel_operator",
    "assign_to_key_group",
    "canonical_key",
    "compute_operator_index_for_key_group",
    "default_max_parallelism",
    "java_hash_code",
    "key_group_range_for_operator_index",
    "murmur_hash",
    "restored_key",
    "state_key",
    "user_key",
    "validate_max_parallelism",
]

#: Smallest default max parallelism (Flink: ``DEFAULT_LOWER_BOUND_MAX_PARALLELISM``).
DEFAULT_LOWER_BOUND_MAX_PARALLELISM: Final = 1 << 7
#: Largest allowed max parallelism (Flink: ``UPPER_BOUND_MAX_PARALLELISM``).
UPPER_BOUND_MAX_PARALLELISM: Final = 1 << 15

_MASK32: Final = 0xFFFFFFFF
_MASK64: Final = 0xFFFFFFFFFFFFFFFF
_INT_MIN: Final = -(1 << 31)
_INT_MAX: Final = (1 << 31) - 1
_LONG_MIN: Final = -(1 << 63)
_LONG_MAX: Final = (1 << 63) - 1
_CANONICAL_NAN_BITS: Final = 0x7FF8000000000000
_TRUE_HASH: Final = 1231
_FALSE_HASH: Final = 1237
_UTF16_NATIVE: Final = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"
_DOUBLE_BITS: Final = struct.Struct("<d")
_LONG_BITS: Final = struct.Struct("<Q")

#: The one NaN object every NaN key is replaced with (see :func:`canonical_key`).
CANONICAL_NAN: Final = float("nan")

#: Per-class cache size bound of :class:`KeyGroupAssigner`; a full cache is cleared.
_CACHE_LIMIT: Final = 1 << 20


def _signed32(value: int) -> int:
    """Reinterpret the low 32 bits of ``value`` as a signed 32-bit int."""
    value &= _MASK32
    return value - 0x100000000 if value & 0x80000000 else value


# ---------------------------------------------------------------------------------------------
# Stable hash codes
# ---------------------------------------------------------------------------------------------


def _py_str_hash(s: str) -> int:
    """Java ``String.hashCode`` over the UTF-16 code units of ``s``."""
    if s.isascii():
        units: Any = s.encode("ascii")
    else:
        # Characters outside the BMP become surrogate pairs; lone surrogates pass through as
        # single units, like in a Java string.
        units = memoryview(s.encode(_UTF16_NATIVE, "surrogatepass")).cast("H")
    h = 0
    if len(units) <= 64:
        # Exact integers, wrapped once at the end: the same low 32 bits as wrapping after
        # every step, and about a third faster for short keys (the int stays small).
        for unit in units:
            h = 31 * h + unit
    else:
        for unit in units:
            h = (31 * h + unit) & _MASK32
    return _signed32(h)


def _bytes_hash(data: bytes | bytearray) -> int:
    """Java ``Arrays.hashCode(byte[])``: signed bytes, ``h = 31 * h + b`` starting at 1."""
    h = 1
    for b in memoryview(data).cast("b"):
        h = (31 * h + b) & _MASK32
    return _signed32(h)


def _int_hash(value: int) -> int:
    """``Integer``/``Long``/``BigInteger.hashCode`` depending on the magnitude of ``value``."""
    if _INT_MIN <= value <= _INT_MAX:
        return value
    if _LONG_MIN <= value <= _LONG_MAX:
        bits = value & _MASK64
        return _signed32(bits ^ (bits >> 32))
    # Beyond 64 bits: java.math.BigInteger.hashCode. The magnitude |value| is split into
    # 32-bit words, most significant first, folded as h = 31 * h + word (32-bit wrap), and
    # the result is multiplied by the sign (-1 or 1), again with 32-bit wrap.
    magnitude = -value if value < 0 else value
    h = 0
    for shift in range(((magnitude.bit_length() + 31) // 32 - 1) * 32, -1, -32):
        h = (31 * h + ((magnitude >> shift) & _MASK32)) & _MASK32
    return _signed32(-h if value < 0 else h)


def _float_hash(value: float) -> int:
    """Java ``Double.hashCode``; NaNs are canonical and ``-0.0`` hashes like ``0.0``."""
    if value != value:
        bits = _CANONICAL_NAN_BITS
    elif value == 0.0:
        # Python treats 0.0 and -0.0 as the same dict key, so they must share a key group
        # (Java's Double.hashCode would differ here; this is the one deliberate deviation).
        return 0
    else:
        bits = _LONG_BITS.unpack(_DOUBLE_BITS.pack(value))[0]
    return _signed32(bits ^ (bits >> 32))


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


_dataclass_fields_cache: dict[type, tuple[str, ...]] = {}


def _dataclass_field_names(cls: type) -> tuple[str, ...]:
    """Names of the fields that take part in ``__eq__`` (``compare=True``), cached per class."""
    names = _dataclass_fields_cache.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.compare)
        _dataclass_fields_cache[cls] = names
    return names


def _sequence_hash(items: Any) -> int:
    """Java ``List.hashCode``: ``h = 1; h = 31 * h + hash(e)``."""
    h = 1
    for item in items:
        h = (31 * h + java_hash_code(item)) & _MASK32
    return _signed32(h)


def java_hash_code(key: object) -> int:
    """Return a hash code of ``key`` that is stable across processes and Python runs.

    The result is a signed 32-bit int that never depends on ``PYTHONHASHSEED``. Where Java has
    an analogue the value equals Java's ``hashCode()``:

    * ``str``: ``String.hashCode`` over UTF-16 code units (``h = 31 * h + unit``); characters
      outside the BMP count as two surrogate units.
    * ``bool``: 1231 for ``True``, 1237 for ``False`` (``Boolean.hashCode``).
    * ``int``: the value if it fits 32 bits, ``Long.hashCode`` (``(int)(v ^ (v >>> 32))``) if
      it fits 64 bits, else ``BigInteger.hashCode``: the 32-bit words of ``abs(v)``, most
      significant first, folded as ``h = 31 * h + word``, then multiplied by the sign.
    * ``float``: ``Double.hashCode`` of the IEEE-754 bits (``bits ^ (bits >>> 32)``), all NaNs
      canonical like ``doubleToLongBits``. ``-0.0`` hashes like ``0.0`` (0), because Python
      treats them as the same key.
    * ``None``: 0.
    * ``bytes``/``bytearray``: ``Arrays.hashCode(byte[])`` over signed bytes.
    * ``tuple``/``list``: ``List.hashCode`` (``h = 1; h = 31 * h + hash(e)``).
    * ``frozenset``/``set``: ``Set.hashCode``, the sum of the element hashes.
    * ``dict``: ``Map.hashCode``, the sum of ``hash(k) ^ hash(v)``.
    * ``enum.Enum`` member: hash of the tuple ``("module.QualName", member.name)``.
    * dataclass instance: hash of ``("module.QualName", (field values...))`` over the fields
      that take part in ``__eq__``.
    * any other object defining ``__flowkit_hash__(self) -> int``: its result (wrapped to 32
      bits). ``__flowkit_hash__`` also takes precedence over the rules above for subclasses,
      enums and dataclasses.

    Like in Java, keys of different types that Python considers equal (``1``, ``1.0``,
    ``True``) get different hash codes; keyed state keeps them apart too
    (:func:`state_key`).

    Args:
        key: The key to hash.

    Returns:
        The hash code, in ``[-2**31, 2**31)``.

    Raises:
        TypeError: If ``key``'s type has no stable hash across processes.

    Example:
        >>> java_hash_code("hello")
        99162322
        >>> java_hash_code((1, "a"))
        1089
    """
    cls = key.__class__
    # Exact built-in types first: the common case, and no attribute lookups on them.
    if cls is str:
        return _str_hash(key)  # type: ignore[arg-type]
    if cls is int:
        return _int_hash(key)  # type: ignore[arg-type]
    if cls is tuple or cls is list:
        return _sequence_hash(key)
    if cls is bool:
        return _TRUE_HASH if key else _FALSE_HASH
    if cls is float:
        return _float_hash(key)  # type: ignore[arg-type]
    if key is None:
        return 0
    if cls is bytes or cls is bytearray:
        return _bytes_hash(key)  # type: ignore[arg-type]
    custom = getattr(cls, "__flowkit_hash__", None)
    if custom is not None:
        value = custom(key)
        if not isinstance(value, int):
            raise TypeError(
                f"{_qualified_name(cls)}.__flowkit_hash__ must return an int, "
                f"got {type(value).__name__}"
            )
        return _signed32(value)
    if isinstance(key, enum.Enum):
        return _sequence_hash((_qualified_name(cls), key.name))
    # Subclasses of the built-in types (bool cannot be subclassed).
    if isinstance(key, str):
        return _str_hash(key)
    if isinstance(key, int):
        return _int_hash(key)
    if isinstance(key, float):
        return _float_hash(key)
    if isinstance(key, tuple | list):
        return _sequence_hash(key)
    if isinstance(key, bytes | bytearray):
        return _bytes_hash(key)
    if isinstance(key, frozenset | set):
        total = 0
        for item in key:
            total += java_hash_code(item)
        return _signed32(total)
    if isinstance(key, dict):
        total = 0
        for k, v in key.items():
            total += java_hash_code(k) ^ java_hash_code(v)
        return _signed32(total)
    if dataclasses.is_dataclass(key):
        values = tuple(getattr(key, name) for name in _dataclass_field_names(cls))
        return _sequence_hash((_qualified_name(cls), values))
    raise TypeError(
        f"key of type {_qualified_name(cls)} has no stable hash across processes "
        "(Python's hash() of arbitrary objects is salted per process or identity based, so "
        "the same key would land in different key groups). Return a str, int, bytes or "
        "tuple key from the key selector, make the key a dataclass or an enum member, or "
        "define __flowkit_hash__(self) -> int on the key class."
    )


# ---------------------------------------------------------------------------------------------
# Canonical keys: every NaN is one key
# ---------------------------------------------------------------------------------------------


def canonical_key(key: Any) -> Any:
    """Return ``key`` with every NaN replaced by one NaN object (:data:`CANONICAL_NAN`).

    ``float("nan") != float("nan")``, so a dict of keyed state would give every NaN key
    (and every tuple holding one) an entry of its own. Flink compares keys with Java's
    ``Double.equals``, under which all NaNs are equal: one key. Replacing each NaN with the
    same object gives that in Python too (dicts compare by identity before ``==``), for
    floats (and float subclasses) and, recursively, inside tuples, named tuples and
    frozensets. Anything else is returned as is (the same object when nothing changed).

    ``-0.0`` is left alone: Python treats it as equal to ``0.0`` (one dict key) and
    :func:`java_hash_code` gives both the same hash, so they are one key, unlike under
    Java's ``Double.equals``. NaNs inside other objects (dataclasses, user classes) follow
    those classes' own ``__eq__``.

    Keyed operators call this once per record on keys that are not ``str`` or ``int``
    (the check is a type test), so state, timers and key groups all see one key.

    Example:
        >>> canonical_key(float("nan")) is canonical_key(float("nan"))
        True
        >>> k1, k2 = canonical_key(("a", float("nan"))), canonical_key(("a", float("nan")))
        >>> k1 == k2, len({k1: 1, k2: 2})
        (True, 1)
        >>> key = ("a", 1)
        >>> canonical_key(key) is key
        True
    """
    cls = key.__class__
    if cls is float:
        return key if key == key else CANONICAL_NAN
    if cls is str or cls is int:
        return key
    if cls is tuple:
        return _canonical_tuple(key)
    if isinstance(key, float):
        return key if key == key else CANONICAL_NAN
    if isinstance(key, tuple):
        return _canonical_tuple(key)
    if isinstance(key, frozenset):
        items = [canonical_key(item) for item in key]
        if all(new is old for new, old in zip(items, key)):
            return key
        return frozenset(items) if cls is frozenset else key
    return key


class ExactKey(tuple[Any, Any]):
    """A key as keyed state stores it when Python's ``==`` could match a key of another
    type: equal only to a key of the same type structure and an equal value.

    Flink compares keys with Java's ``equals``, under which ``Integer 1``, ``Double 1.0``
    and ``Boolean true`` are three keys; Python's ``1 == 1.0 == True`` would make them one
    dict entry wherever they share a dict (a key group's state, an accumulator table). So
    every key that is not plain (:func:`state_key`) is wrapped in this class before it
    touches state: ``(1, "a")`` stays as it is, ``(1.0, "a")`` becomes
    ``ExactKey((1.0, "a"))``, and the two never meet. Functions never see the wrapper:
    ``ctx.get_current_key()`` and a window function's ``key`` are the key itself
    (:func:`user_key`). The key group is the key's own (``__flowkit_hash__``), and the
    wrapper pickles as the key it holds, so snapshots carry it.

    It is the pair ``(key, shape)`` (``shape``: the key's type structure), so hashing and
    comparing it run in C: equal pairs are equal keys of equal types. No plain key equals
    it (a plain tuple never holds a class).

    Example:
        >>> {state_key(1): "int", state_key(1.0): "float", state_key(True): "bool"}[1]
        'int'
        >>> len({state_key(k) for k in (1, 1.0, True, (1, "a"), (1.0, "a"))})
        5
        >>> user_key(state_key(1.0))
        1.0
    """

    __slots__ = ()

    def __new__(cls, key: Any) -> ExactKey:
        key = canonical_key(key)  # every NaN is one key, also after a restore
        hash(key)  # an unhashable key fails here, as it would as a dict key
        return tuple.__new__(cls, (key, _exact_shape(key)))

    @property
    def key(self) -> Any:
        """The key itself."""
        return self[0]

    @property
    def shape(self) -> Any:
        """The key's type structure (its class, or a tuple of classes for containers)."""
        return self[1]

    def __flowkit_hash__(self) -> int:
        return java_hash_code(self[0])

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return ExactKey, (self[0],)

    def __repr__(self) -> str:
        return f"ExactKey({self[0]!r})"


#: Item classes of a plain key (:func:`state_key`): equal only to their own class.
_PLAIN_ITEMS: Final = frozenset({str, int, bytes, type(None)})

_native_state_key = speedups.state_key if speedups is not None else None


def state_key(key: Any) -> Any:
    """The object keyed state stores ``key`` under: ``key`` itself when it is plain, an
    :class:`ExactKey` otherwise.

    Plain keys are ``str``, ``int``, ``bytes``, ``None``, floats that are not whole
    numbers (nor NaN) and tuples of plain keys: a plain key equals no plain key of
    another type (``int`` here is the exact class, not ``bool``; ``1.0`` is not plain, as
    it equals ``1``), and no wrapped key, so as dict keys they cannot meet a key of
    another type. Every other key (whole-number floats, NaN, bools, named tuples,
    dataclasses, enums, frozensets, tuples holding any of those, ...) is wrapped, and its
    NaNs made one (:func:`canonical_key`).
    A key that is already an :class:`ExactKey` is returned as is.

    Example:
        >>> state_key(("a", 1)) == ("a", 1), state_key(("a", 1.0)) == ("a", 1.0)
        (True, False)
    """
    cls = key.__class__
    if cls is str or cls is int or cls is ExactKey:
        return key
    if cls is tuple:
        if _PLAIN_ITEMS.issuperset(map(type, key)) or _plain_tuple(key):
            return key
    elif cls is float:
        if key == key and not key.is_integer():
            return key
    elif cls is bytes or key is None:
        return key
    return ExactKey(key)


def _plain_tuple(key: tuple[Any, ...]) -> bool:
    for item in key:
        cls = item.__class__
        if cls is tuple:
            if not _plain_tuple(item):
                return False
        elif cls is float:
            if item != item or item.is_integer():
                return False
        elif cls not in _PLAIN_ITEMS:
            return False
    return True


def user_key(key: Any) -> Any:
    """The key functions see for a key keyed state stores (undoes :func:`state_key`).

    Example:
        >>> user_key(state_key(True)) is True
        True
    """
    return key[0] if key.__class__ is ExactKey else key


def restored_key(key: Any) -> Any:
    """The stored form of a key read back from a snapshot, decided anew from the key
    itself: a snapshot written under another rule (floats stored as floats before keys
    were stored by exact type) is read into this one, and restored NaNs become the one
    NaN again.

    Example:
        >>> restored_key(1.0) == state_key(1.0), restored_key(ExactKey(2.5)) == 2.5
        (True, True)
    """
    return state_key(user_key(key))


def _exact_shape(key: Any) -> Any:
    """The type structure of ``key``: two keys with equal shapes that Python finds equal
    are equal under Java's ``equals`` too (same classes all the way down)."""
    cls = key.__class__
    if isinstance(key, tuple):
        return (cls, *map(_exact_shape, key))
    if isinstance(key, frozenset):
        # Each item under its own exact form: {1, 2.0} and {1.0, 2} differ.
        return (cls, frozenset(map(state_key, key)))
    if dataclasses.is_dataclass(key) and not isinstance(key, type):
        return (cls, *(_exact_shape(getattr(key, name)) for name in _dataclass_field_names(cls)))
    return cls


class CanonicalKeys:
    """:func:`state_key` for one keyed operator, remembering the wrappers of scalar keys
    (whole-number floats, bools, enum members, ...), so that a stream keyed by them does
    not build one per record.

    ``str`` and ``int`` keys never need a change; callers skip them with a type test and
    call :attr:`canonical` for the other keys (tuples, floats, ...)::

        if key.__class__ is not str and key.__class__ is not int:
            key = canonical(key)  # canonical = keys.canonical

    With the compiled helpers, :attr:`canonical` passes plain keys and remembered
    wrappers without a Python call. The memory is bounded: it is cleared when it reaches
    ``limit`` keys.

    Example:
        >>> keys = CanonicalKeys()
        >>> key = ("a", 1)
        >>> keys.canonical(key) is key
        True
        >>> keys.canonical(float(3)) is keys.canonical(float(3)), keys.canonical(1.0) == 1
        (True, False)
    """

    __slots__ = ("_size", "_wrapped", "canonical", "limit")

    def __init__(self, limit: int = 1 << 16) -> None:
        #: Wrappers of scalar keys by class, then by key (exact within one class).
        self._wrapped: dict[type, dict[Any, ExactKey]] = {}
        self._size = 0
        self.limit = limit
        #: :func:`state_key` of a key, with the wrappers remembered.
        self.canonical: Callable[[Any], Any] = (
            self._canonical
            if _native_state_key is None
            else functools.partial(_native_state_key, self._wrapped, self._canonical)
        )

    def _canonical(self, key: Any) -> Any:
        cls = key.__class__
        if cls is tuple or cls is ExactKey:
            return state_key(key)
        by_class = self._wrapped.get(cls)
        if by_class is not None:
            try:
                wrapped = by_class.get(key)
            except TypeError:  # unhashable: state_key's hash() says so
                return state_key(key)
            if wrapped is not None:
                return wrapped
        new = state_key(key)
        # Only keys whose shape is their class: within it, == is as exact as the class's
        # own (not so for dataclasses, whose equal instances may hold 1 and 1.0).
        if new.__class__ is ExactKey and new.shape is cls:
            if self._size >= self.limit:
                self._wrapped.clear()
                self._size = 0
            self._wrapped.setdefault(cls, {})[new.key] = new  # a NaN under the one NaN
            self._size += 1
        return new


def _canonical_tuple(key: tuple[Any, ...]) -> Any:
    items: list[Any] | None = None
    for index, item in enumerate(key):
        kind = item.__class__
        if kind is str or kind is int:
            continue
        new = canonical_key(item)
        if new is not item:
            if items is None:
                items = list(key)
            items[index] = new
    if items is None:
        return key
    cls = key.__class__
    if cls is tuple:
        return tuple(items)
    make = getattr(cls, "_make", None)  # a named tuple
    if make is not None:
        return make(items)
    try:
        return cls(items)
    except Exception:  # a tuple subclass built differently: keep the key as it is
        return key


# ---------------------------------------------------------------------------------------------
# Flink's MathUtils / KeyGroupRangeAssignment
# ---------------------------------------------------------------------------------------------


def murmur_hash(code: int) -> int:
    """Return Flink's ``MathUtils.murmurHash(code)``: a well-mixed, non-negative 32-bit int.

    Args:
        code: A hash code; only its low 32 bits are used.

    Returns:
        The mixed hash, in ``[0, 2**31)``.

    Example:
        >>> murmur_hash(0) == murmur_hash(0) and 0 <= murmur_hash(99162322) < 2**31
        True
    """
    c = (code * 0xCC9E2D51) & _MASK32
    c = ((c << 15) | (c >> 17)) & _MASK32
    c = (c * 0x1B873593) & _MASK32
    c = ((c << 13) | (c >> 19)) & _MASK32
    c = (c * 5 + 0xE6546B64) & _MASK32
    c ^= 4
    c ^= c >> 16
    c = (c * 0x85EBCA6B) & _MASK32
    c ^= c >> 13
    c = (c * 0xC2B2AE35) & _MASK32
    c ^= c >> 16
    if c < 0x80000000:
        return c
    # Negative as a Java int: return -c, except for Integer.MIN_VALUE which maps to 0.
    return 0x100000000 - c if c != 0x80000000 else 0


def _py_str_key_group(key: str, max_parallelism: int) -> int:
    """The key group of a ``str`` key (what ``flowkit._speedups.str_key_group`` computes)."""
    return murmur_hash(_py_str_hash(key)) % max_parallelism


def _py_int_key_group(key: int, max_parallelism: int) -> int | None:
    """The key group of an ``int`` key that fits 64 bits, else None (as the compiled one)."""
    if _LONG_MIN <= key <= _LONG_MAX:
        return murmur_hash(_int_hash(key)) % max_parallelism
    return None


#: Whether key groups of ``str`` and ``int`` keys are computed by the compiled helpers
#: (``flowkit._speedups``); False when they are not built or ``FLOWKIT_NO_EXTENSIONS`` is set.
ACCELERATED: Final = speedups is not None

_str_hash: Callable[[str], int] = _py_str_hash
_str_key_group: Callable[[str, int], int] = _py_str_key_group
_int_key_group: Callable[[int, int], int | None] = _py_int_key_group
if speedups is not None:
    _str_hash = speedups.str_hash
    _str_key_group = speedups.str_key_group
    _int_key_group = speedups.int_key_group


def _key_group_function(max_parallelism: int) -> Callable[[object], int]:
    """``key -> key group`` for one max parallelism: ``str`` and 64-bit ``int`` keys through
    the compiled helpers when they are built, every key through :func:`java_hash_code`
    otherwise."""
    str_group = _str_key_group
    int_group = _int_key_group

    def key_group(key: object) -> int:
        cls = key.__class__
        if cls is str:
            return str_group(key, max_parallelism)  # type: ignore[arg-type]
        if cls is int:
            group = int_group(key, max_parallelism)  # type: ignore[arg-type]
            if group is not None:
                return group
        return murmur_hash(java_hash_code(key)) % max_parallelism

    return key_group


def validate_max_parallelism(max_parallelism: int) -> None:
    """Check that ``max_parallelism`` is an int in ``[1, 32768]``.

    Args:
        max_parallelism: The number of key groups.

    Raises:
        ValueError: If it is out of range (``TypeError`` if it is not an int).

    Example:
        >>> validate_max_parallelism(128)
        >>> validate_max_parallelism(0)
        Traceback (most recent call last):
        ValueError: max_parallelism must be between 1 and 32768 (inclusive), got 0
    """
    if not isinstance(max_parallelism, int) or isinstance(max_parallelism, bool):
        raise TypeError(f"max_parallelism must be an int, got {type(max_parallelism).__name__}")
    if not 1 <= max_parallelism <= UPPER_BOUND_MAX_PARALLELISM:
        raise ValueError(
            f"max_parallelism must be between 1 and {UPPER_BOUND_MAX_PARALLELISM} "
            f"(inclusive), got {max_parallelism}"
        )


def _validate_parallelism(max_parallelism: int, parallelism: int) -> None:
    validate_max_parallelism(max_parallelism)
    if not isinstance(parallelism, int) or isinstance(parallelism, bool):
        raise TypeError(f"parallelism must be an int, got {type(parallelism).__name__}")
    if not 1 <= parallelism <= max_parallelism:
        raise ValueError(
            f"parallelism must be between 1 and max_parallelism={max_parallelism} "
            f"(inclusive), got {parallelism}; raise max_parallelism or lower the parallelism"
        )


def assign_to_key_group(key: object, max_parallelism: int) -> int:
    """Return the key group of ``key``: ``murmur_hash(java_hash_code(key)) % max_parallelism``.

    Args:
        key: The key (see :func:`java_hash_code` for the supported types).
        max_parallelism: The number of key groups, in ``[1, 32768]``.

    Returns:
        The key group, in ``[0, max_parallelism)``.

    Example:
        >>> assign_to_key_group("hello", 128)
        35
    """
    validate_max_parallelism(max_parallelism)
    return murmur_hash(java_hash_code(key)) % max_parallelism


def compute_operator_index_for_key_group(
    max_parallelism: int, parallelism: int, key_group: int
) -> int:
    """Return the operator (subtask) index that owns ``key_group``.

    Args:
        max_parallelism: The number of key groups.
        parallelism: The number of parallel operator instances, ``<= max_parallelism``.
        key_group: A key group in ``[0, max_parallelism)``.

    Returns:
        ``key_group * parallelism // max_parallelism``.

    Example:
        >>> compute_operator_index_for_key_group(128, 3, 43)
        1
    """
    _validate_parallelism(max_parallelism, parallelism)
    if not 0 <= key_group < max_parallelism:
        raise ValueError(
            f"key_group must be in [0, {max_parallelism}) for max_parallelism="
            f"{max_parallelism}, got {key_group}"
        )
    return key_group * parallelism // max_parallelism


def assign_key_to_parallel_operator(key: object, max_parallelism: int, parallelism: int) -> int:
    """Return the operator (subtask) index that owns ``key``.

    Args:
        key: The key (see :func:`java_hash_code` for the supported types).
        max_parallelism: The number of key groups.
        parallelism: The number of parallel operator instances, ``<= max_parallelism``.

    Returns:
        The operator index, in ``[0, parallelism)``.

    Example:
        >>> assign_key_to_parallel_operator("hello", 128, 2)
        0
    """
    _validate_parallelism(max_parallelism, parallelism)
    key_group = murmur_hash(java_hash_code(key)) % max_parallelism
    return key_group * parallelism // max_parallelism


@dataclass(frozen=True, slots=True)
class KeyGroupRange:
    """An inclusive range of key groups ``[start, end]``; empty when ``start > end``.

    Attributes:
        start: First key group of the range.
        end: Last key group of the range (inclusive).

    Example:
        >>> r = KeyGroupRange(0, 3)
        >>> list(r), len(r), 3 in r, 4 in r
        ([0, 1, 2, 3], 4, True, False)
        >>> len(KeyGroupRange.EMPTY), bool(KeyGroupRange.of(5, 2))
        (0, False)
    """

    start: int
    end: int

    #: The canonical empty range ``[0, -1]``.
    EMPTY: ClassVar[KeyGroupRange]

    def __post_init__(self) -> None:
        if self.start < 0:
            raise ValueError(f"KeyGroupRange start must be >= 0, got {self.start}")

    @classmethod
    def of(cls, start: int, end: int) -> KeyGroupRange:
        """Return ``KeyGroupRange(start, end)``, or :attr:`EMPTY` when ``start > end``.

        Example:
            >>> KeyGroupRange.of(3, 2) is KeyGroupRange.EMPTY
            True
        """
        return cls.EMPTY if start > end else cls(start, end)

    @property
    def is_empty(self) -> bool:
        """Whether the range holds no key group."""
        return self.start > self.end

    def __contains__(self, key_group: object) -> bool:
        return isinstance(key_group, int) and self.start <= key_group <= self.end

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end + 1))

    def __len__(self) -> int:
        return self.end - self.start + 1 if self.start <= self.end else 0

    def intersection(self, other: KeyGroupRange) -> KeyGroupRange:
        """Return the key groups in both ranges (:attr:`EMPTY` if none).

        Example:
            >>> KeyGroupRange(0, 63).intersection(KeyGroupRange(32, 95))
            KeyGroupRange(start=32, end=63)
        """
        return KeyGroupRange.of(max(self.start, other.start), min(self.end, other.end))


KeyGroupRange.EMPTY = KeyGroupRange(0, -1)


def key_group_range_for_operator_index(
    max_parallelism: int, parallelism: int, index: int
) -> KeyGroupRange:
    """Return the key groups owned by operator (subtask) ``index``.

    Args:
        max_parallelism: The number of key groups.
        parallelism: The number of parallel operator instances, ``<= max_parallelism``.
        index: The operator index, in ``[0, parallelism)``.

    Returns:
        ``[(index * maxP + p - 1) // p, ((index + 1) * maxP - 1) // p]``.

    Example:
        >>> key_group_range_for_operator_index(128, 3, 1)
        KeyGroupRange(start=43, end=85)
    """
    _validate_parallelism(max_parallelism, parallelism)
    if not 0 <= index < parallelism:
        raise ValueError(f"operator index must be in [0, {parallelism}), got {index}")
    start = (index * max_parallelism + parallelism - 1) // parallelism
    end = ((index + 1) * max_parallelism - 1) // parallelism
    return KeyGroupRange(start, end)


def default_max_parallelism(parallelism: int) -> int:
    """Return Flink's default max parallelism for an operator of ``parallelism``.

    ``min(max(round_up_to_power_of_two(p + p // 2), 128), 32768)``.

    Args:
        parallelism: The operator's parallelism, ``>= 1``.

    Returns:
        The max parallelism (number of key groups).

    Example:
        >>> default_max_parallelism(1), default_max_parallelism(86)
        (128, 256)
    """
    if not isinstance(parallelism, int) or isinstance(parallelism, bool):
        raise TypeError(f"parallelism must be an int, got {type(parallelism).__name__}")
    if parallelism < 1:
        raise ValueError(f"parallelism must be >= 1, got {parallelism}")
    wanted = parallelism + parallelism // 2
    power_of_two = 1 << (wanted - 1).bit_length()
    return min(max(power_of_two, DEFAULT_LOWER_BOUND_MAX_PARALLELISM), UPPER_BOUND_MAX_PARALLELISM)


# ---------------------------------------------------------------------------------------------
# Cached assignment for the record hot path
# ---------------------------------------------------------------------------------------------

#: Classes whose instances are never cached by class: equal instances may hash differently
#: (``(1,) == (1.0,)``), or they are unhashable. Tuples and dataclasses use a shape cache.
_CONTAINER_TYPES: Final = (tuple, list, frozenset, set, dict, bytearray)

#: Built-in classes whose equal instances always have equal hash codes.
_PLAIN_TYPES: Final = frozenset({str, int, float, bool, bytes, type(None)})

#: Returned by :func:`_shape` for keys that must not be cached.
_UNCACHEABLE: Final = object()


def _shape(key: object) -> object:
    """The type structure of a tuple or dataclass key, used to validate cache hits.

    Two keys that are equal and have equal shapes have equal :func:`java_hash_code`: the shape
    tells ``(1, "a")``, ``(1.0, "a")`` and ``(True, "a")`` apart although they are equal.
    Returns :data:`_UNCACHEABLE` for keys holding sets or dicts (whose equality the shape
    cannot capture) or unhashable items.
    """
    if key.__class__ is tuple:
        shape = tuple(map(type, key))
        if _PLAIN_TYPES.issuperset(shape):
            return shape
    return _deep_shape(key)


def _deep_shape(key: object) -> object:
    cls = key.__class__
    if cls in _PLAIN_TYPES or getattr(cls, "__flowkit_hash__", None) is not None:
        return cls
    shapes: list[object]
    if isinstance(key, tuple):
        shapes = []
    elif isinstance(key, _CONTAINER_TYPES):
        return _UNCACHEABLE
    elif dataclasses.is_dataclass(key):
        shapes = [cls]
        key = tuple(getattr(key, name) for name in _dataclass_field_names(cls))
    else:
        return cls
    for item in key:
        item_shape = _deep_shape(item)
        if item_shape is _UNCACHEABLE:
            return _UNCACHEABLE
        shapes.append(item_shape)
    return tuple(shapes)


def _class_cacheable(cls: type) -> bool:
    """Whether equal instances of ``cls`` always have equal :func:`java_hash_code`."""
    if cls.__hash__ is None:
        return False
    if getattr(cls, "__flowkit_hash__", None) is not None:
        return True  # the user's contract, like Java's equals/hashCode
    return not issubclass(cls, _CONTAINER_TYPES) and not dataclasses.is_dataclass(cls)


class _ShapedCache(dict[object, int]):
    """Stands in ``by_class`` for tuple / dataclass classes; always empty.

    ``by_class[cls][key]`` on this empty dict calls :meth:`__missing__`, which validates the
    hit against the key's shape, so the hot path needs no extra branch or exception.
    """

    __slots__ = ("cache",)

    def __init__(self, cache: _KeyCache) -> None:
        super().__init__()
        self.cache = cache

    def __missing__(self, key: object) -> int:
        return self.cache.shaped_lookup(key)


class _KeyCache:
    """Caches ``key -> fn(key)``; see :class:`KeyGroupAssigner` for the correctness rules."""

    __slots__ = ("__weakref__", "by_class", "fn", "shaped", "shaped_view")

    def __init__(self, fn: Callable[[object], int]) -> None:
        self.fn = fn
        # class -> {key: value}. For classes where key equality implies equal hash codes this
        # is a plain dict; for tuples and dataclasses it is the (empty) shaped view. The hot
        # path reads it directly: by_class[key.__class__][key].
        self.by_class: dict[type, dict[object, int]] = {}
        # key -> (shape, value) for tuples and dataclasses; a hit is valid only if the shape
        # matches, so (1, "a"), (1.0, "a") and (True, "a") do not share an entry.
        self.shaped: dict[object, tuple[object, int]] = {}
        self.shaped_view = _ShapedCache(self)

    def miss(self, key: object) -> int:
        """Compute ``fn(key)`` for a key that is not cached, and cache it if that is safe.

        Keys holding NaN are looked up and cached as their :func:`canonical_key` (a new
        NaN object never equals a cached one), so they neither recompute the hash each
        time nor fill the cache with one entry per NaN object.
        """
        cls = key.__class__
        if cls is not str and cls is not int:  # the common key types are never NaN
            canonical = canonical_key(key)
            if canonical is not key:
                try:
                    return self.by_class[canonical.__class__][canonical]
                except (KeyError, TypeError):
                    key = canonical
                    cls = key.__class__
        cache = self.by_class.get(cls)
        if cache is None:
            if not _class_cacheable(cls):
                if cls.__hash__ is not None:
                    self.by_class[cls] = self.shaped_view
                return self.shaped_lookup(key)
            cache = self.by_class[cls] = {}
        elif cache is self.shaped_view:
            return self.shaped_lookup(key)
        # The class is cached but the key is not (or its __eq__/__hash__ raised).
        value = self.fn(key)
        try:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[key] = value
        except TypeError:  # a __hash__ that raises: compute every time
            pass
        return value

    def shaped_lookup(self, key: object) -> int:
        shape = _shape(key)
        if shape is _UNCACHEABLE:
            return self.fn(key)
        shaped = self.shaped
        try:
            entry = shaped.get(key)
        except TypeError:  # e.g. a tuple holding a list
            return self.fn(key)
        if entry is not None and entry[0] == shape:
            return entry[1]
        value = self.fn(key)
        if len(shaped) >= _CACHE_LIMIT:
            shaped.clear()
        shaped[key] = (shape, value)
        return value

    def clear(self) -> None:
        self.by_class.clear()
        self.shaped.clear()


#: The key-group caches of the assigners alive in this process, by max parallelism.
_GROUP_CACHES: weakref.WeakValueDictionary[int, _KeyCache] = weakref.WeakValueDictionary()
_GROUP_CACHES_LOCK = threading.Lock()


def _shared_group_cache(max_parallelism: int) -> _KeyCache:
    """The cache of ``key -> key group`` that every assigner of ``max_parallelism`` alive in
    this process shares, so that a key's hash is computed once per process rather than
    once per producer and once per consumer subtask (a key group depends on nothing else).
    It lives as long as an assigner uses it."""
    with _GROUP_CACHES_LOCK:
        cache = _GROUP_CACHES.get(max_parallelism)
        if cache is None:
            cache = _KeyCache(_key_group_function(max_parallelism))
            _GROUP_CACHES[max_parallelism] = cache
        return cache


class KeyGroupAssigner:
    """Maps keys to key groups and operator indices, caching per distinct key.

    Used once per record by the key-group partitioner, so :meth:`channel_for_key` is a dict
    lookup after the first occurrence of a key. Caches are bounded (each is cleared when it
    reaches 1,048,576 entries); the key-group cache is shared by the assigners of one max
    parallelism in a process. The cache never changes results: keys are cached per exact class
    (so ``1``, ``1.0`` and ``True`` do not share an entry) and tuple / dataclass keys are
    cached together with their type structure. Unhashable keys (lists, dicts) are computed
    every time.

    Args:
        max_parallelism: The number of key groups, in ``[1, 32768]``.
        parallelism: The number of channels / operator instances, in ``[1, max_parallelism]``.

    Example:
        >>> assigner = KeyGroupAssigner(128, 2)
        >>> assigner.key_group_for_key("hello"), assigner.channel_for_key("hello")
        (35, 0)
    """

    __slots__ = (
        "_channel_by_class",
        "_channel_cache",
        "_group_by_class",
        "_group_cache",
        "_group_to_channel",
        "max_parallelism",
        "parallelism",
    )

    def __init__(self, max_parallelism: int, parallelism: int) -> None:
        _validate_parallelism(max_parallelism, parallelism)
        self.max_parallelism = max_parallelism
        self.parallelism = parallelism
        self._group_to_channel = [
            group * parallelism // max_parallelism for group in range(max_parallelism)
        ]
        self._group_cache = _shared_group_cache(max_parallelism)
        self._channel_cache = _KeyCache(self._compute_channel)
        self._group_by_class = self._group_cache.by_class
        self._channel_by_class = self._channel_cache.by_class

    def _compute_channel(self, key: object) -> int:
        return self._group_to_channel[self.key_group_for_key(key)]

    def channel_for_key(self, key: object) -> int:
        """Return the operator index (output channel) that owns ``key``.

        Args:
            key: The key (see :func:`java_hash_code` for the supported types).

        Returns:
            The channel, in ``[0, parallelism)``.

        Raises:
            TypeError: If the key's type has no stable hash across processes.

        Example:
            >>> KeyGroupAssigner(128, 4).channel_for_key("hello")
            1
        """
        try:
            return self._channel_by_class[key.__class__][key]
        except (KeyError, TypeError):
            return self._channel_cache.miss(key)

    def str_channel_cache(self) -> dict[object, int]:
        """The cache of channels for ``str`` keys (filled by :meth:`channel_for_key`).

        Lets a caller look up a whole batch of str keys in one pass; a missing key must
        go through :meth:`channel_for_key`.
        """
        return self._channel_by_class.setdefault(str, {})

    def key_group_for_key(self, key: object) -> int:
        """Return the key group of ``key``, like :func:`assign_to_key_group`.

        Args:
            key: The key (see :func:`java_hash_code` for the supported types).

        Returns:
            The key group, in ``[0, max_parallelism)``.

        Example:
            >>> KeyGroupAssigner(128, 4).key_group_for_key("hello")
            35
        """
        try:
            return self._group_by_class[key.__class__][key]
        except (KeyError, TypeError):
            return self._group_cache.miss(key)

    def key_group_range(self, index: int) -> KeyGroupRange:
        """Return the key groups owned by operator ``index``.

        Example:
            >>> KeyGroupAssigner(128, 2).key_group_range(1)
            KeyGroupRange(start=64, end=127)
        """
        return key_group_range_for_operator_index(self.max_parallelism, self.parallelism, index)

    def clear_cache(self) -> None:
        """Forget every cached key."""
        self._group_cache.clear()
        self._channel_cache.clear()

    def __repr__(self) -> str:
        return (
            f"KeyGroupAssigner(max_parallelism={self.max_parallelism}, "
            f"parallelism={self.parallelism})"
        )
