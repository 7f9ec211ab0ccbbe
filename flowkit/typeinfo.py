"""Type information (PyFlink's ``Types``) and ``Row``: what a stream's records are.

Imports nothing from flowkit but ``serialization``.

flowkit never needs type information: records are Python objects and the default
serializer preserves them exactly. Where PyFlink takes type information (``output_type=``,
``type_info=``, ``key_type=``, state descriptors) flowkit accepts it and uses it where it
helps:

* printing: a stream that carries type information prints its records as Java prints
  them, as PyFlink does (``Types.TUPLE`` as ``(hi,0,5,4)``, ``Types.ROW`` as
  ``+I[hi, 0]``, ``Types.BOOLEAN`` as ``true``, ``Types.DOUBLE`` as ``1.0E7``); a stream
  without it (or ``Types.PICKLED_BYTE_ARRAY()``) prints Python's ``str``. ``print()`` and
  the file sinks' text encoders follow the same rule.
* records: ``from_collection(items, type_info=Types.ROW_NAMED(...))`` turns each item into
  a :class:`Row` whose fields are read by name (``row.id``), as in PyFlink.
* serializers: ``Types.ROW`` streams cross channels as plain tuples (marshal) instead of
  pickled ``Row`` objects.

Example:
    >>> t = Types.TUPLE([Types.STRING(), Types.INT(), Types.DOUBLE()])
    >>> t.to_java_string(("hi", 3, 1e7))
    '(hi,3,1.0E7)'
    >>> Types.ROW_NAMED(["id", "ok"], [Types.INT(), Types.BOOLEAN()]).to_java_string(Row(1, True))
    '+I[1, true]'
    >>> Row(id=1, name="a").name
    'a'
"""

from __future__ import annotations

import datetime
import decimal
import enum
import math
import pickle
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from flowkit.serialization import DefaultSerializer, TypeSerializer

__all__ = [
    "BasicArrayTypeInfo",
    "BasicTypeInfo",
    "ListTypeInfo",
    "LocalTimeTypeInfo",
    "MapTypeInfo",
    "ObjectArrayTypeInfo",
    "PickledBytesTypeInfo",
    "PrimitiveArrayTypeInfo",
    "Row",
    "RowKind",
    "RowTypeInfo",
    "SqlTimeTypeInfo",
    "TupleTypeInfo",
    "TypeInformation",
    "Types",
    "java_double_string",
    "java_float_string",
    "pickled_sort_key",
]


# ----------------------------------------------------------------------------- Row
class RowKind(enum.Enum):
    """The change a :class:`Row` describes; ``str()`` is Java's short form (``+I``)."""

    INSERT = 0
    UPDATE_BEFORE = 1
    UPDATE_AFTER = 2
    DELETE = 3

    def __str__(self) -> str:
        return _ROW_KIND_SHORT[self]

    def short_string(self) -> str:
        """``+I``, ``-U``, ``+U`` or ``-D``."""
        return _ROW_KIND_SHORT[self]


_ROW_KIND_SHORT = {
    RowKind.INSERT: "+I",
    RowKind.UPDATE_BEFORE: "-U",
    RowKind.UPDATE_AFTER: "+U",
    RowKind.DELETE: "-D",
}


class Row:
    """A record of fields read by position or, when it has field names, by name.

    ``Row(1, "a")`` has positions only; ``Row(id=1, name="a")`` has names too (in the
    order given). A row is read-only; ``set_row_kind`` and ``set_field_names`` are the
    exceptions, as in PyFlink.

    Example:
        >>> r = Row(id=1, name="a")
        >>> r[0], r["name"], r.id, list(r), r.as_dict()
        (1, 'a', 1, [1, 'a'], {'id': 1, 'name': 'a'})
        >>> Row("id", "name")(2, "b")
        Row(id=2, name='b')
        >>> Row(1, "a")
        <Row(1, 'a')>
    """

    __slots__ = ("_fields", "_row_kind", "_values")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args and kwargs:
            raise ValueError("a Row takes field values or named fields, not both")
        names: list[str] | None
        if kwargs:
            names = list(kwargs)
            values = [kwargs[n] for n in names]
        else:
            names = None
            values = list(args)
        object.__setattr__(self, "_fields", names)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_row_kind", RowKind.INSERT)

    @classmethod
    def of(cls, values: Iterable[Any], names: Sequence[str] | None = None) -> Row:
        """A row of ``values``, with ``names`` if given."""
        row = cls(*values)
        if names is not None:
            row.set_field_names(names)
        return row

    def as_dict(self, recursive: bool = False) -> dict[str, Any]:
        """``{name: value}`` (rows inside become dicts too with ``recursive``).

        Raises:
            TypeError: the row has no field names.
        """
        if self._fields is None:
            raise TypeError("cannot convert a Row without field names to a dict")

        def convert(value: Any) -> Any:
            if not recursive:
                return value
            if isinstance(value, Row):
                return value.as_dict(True)
            if isinstance(value, list):
                return [convert(v) for v in value]
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            return value

        return {name: convert(value) for name, value in zip(self._fields, self._values)}

    def get_row_kind(self) -> RowKind:
        return self._row_kind

    def set_row_kind(self, row_kind: RowKind) -> None:
        object.__setattr__(self, "_row_kind", row_kind)

    def get_field_names(self) -> list[str] | None:
        return None if self._fields is None else list(self._fields)

    def set_field_names(self, field_names: Sequence[str]) -> None:
        names = list(field_names)
        if len(names) != len(self._values):
            raise ValueError(
                f"a Row of {len(self._values)} fields cannot take {len(names)} names {names}"
            )
        object.__setattr__(self, "_fields", names)

    def get_fields_by_names(self, names: Sequence[str]) -> list[Any]:
        return [self[name] for name in names]

    def __call__(self, *values: Any) -> Row:
        """``Row("id", "name")(1, "a")``: a row whose names are this row's values."""
        names = [str(v) for v in self._values]
        if len(values) > len(names):
            raise ValueError(f"too many values for the fields {names}: {values!r}")
        return Row.of(values, names[: len(values)])

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, str):
            if self._fields is None or item not in self._fields:
                raise KeyError(item)
            return self._values[self._fields.index(item)]
        return self._values[item]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        fields = object.__getattribute__(self, "_fields")
        if fields is not None and name in fields:
            return object.__getattribute__(self, "_values")[fields.index(name)]
        raise AttributeError(f"this Row has no field {name!r} (its fields: {fields})")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Row is read-only")

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, item: Any) -> bool:
        if self._fields is not None and isinstance(item, str) and item in self._fields:
            return True
        return item in self._values

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Row):
            return NotImplemented
        return (
            self._values == other._values
            and self._fields == other._fields
            and self._row_kind is other._row_kind
        )

    def __hash__(self) -> int:
        return hash((tuple(self._values), self._row_kind))

    def __reduce__(self) -> Any:
        return (_rebuild_row, (self._values, self._fields, self._row_kind.value))

    def __repr__(self) -> str:
        if self._fields is not None:
            fields = ", ".join(f"{n}={v!r}" for n, v in zip(self._fields, self._values))
            return f"Row({fields})"
        return f"<Row({', '.join(repr(v) for v in self._values)})>"


def _rebuild_row(values: list[Any], names: list[str] | None, kind: int) -> Row:
    row = Row.of(values, names)
    row.set_row_kind(RowKind(kind))
    return row


# ----------------------------------------------------------------------------- Java strings
def _java_decimal(digits: str, exponent: int) -> str:
    """Java's ``Double.toString`` layout of the value ``0.<digits> x 10**exponent``."""
    if -3 < exponent <= 7:  # 1e-3 <= |x| < 1e7: plain notation
        if exponent <= 0:
            return "0." + "0" * -exponent + digits
        whole, fraction = digits[:exponent], digits[exponent:]
        whole = whole.ljust(exponent, "0")
        return f"{whole}.{fraction or '0'}"
    mantissa = digits[0] + "." + (digits[1:] or "0")
    return f"{mantissa}E{exponent - 1}"


def _shortest_digits(text: str) -> tuple[str, int]:
    """``repr``-style text of a positive finite float -> (digits, exponent) such that
    the value is ``0.<digits> x 10**exponent`` with no leading or trailing zeros."""
    _sign, digit_tuple, exp = decimal.Decimal(text).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    assert isinstance(exp, int)
    return digits, len(digits) + exp


def _java_special(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    return None


def java_double_string(value: float) -> str:
    """``value`` as Java's ``Double.toString`` writes it (shortest round-trip digits).

    Example:
        >>> [java_double_string(v) for v in (1.0, 0.1 + 0.2, 1e7, 1.5e-4, -2.5)]
        ['1.0', '0.30000000000000004', '1.0E7', '1.5E-4', '-2.5']
    """
    value = float(value)
    special = _java_special(value)
    if special is not None:
        return special
    digits, exponent = _shortest_digits(repr(abs(value)))
    return ("-" if value < 0 else "") + _java_decimal(digits, exponent)


def java_float_string(value: float) -> str:
    """``value`` as Java's ``Float.toString`` writes it (as a 32-bit float).

    Example:
        >>> java_float_string(1.1), java_float_string(3.4e38)
        ('1.1', '3.4E38')
    """
    value = struct.unpack("f", struct.pack("f", float(value)))[0]
    special = _java_special(value)
    if special is not None:
        return special
    magnitude = abs(value)
    for precision in range(1, 10):
        text = f"{magnitude:.{precision}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == magnitude:
            break
    digits, exponent = _shortest_digits(text)
    return ("-" if value < 0 else "") + _java_decimal(digits, exponent)


def _java_time(value: datetime.time) -> str:
    """Java's ``LocalTime.toString``: ``HH:mm``, with seconds and fractions when set."""
    text = f"{value.hour:02d}:{value.minute:02d}"
    if value.second or value.microsecond:
        text += f":{value.second:02d}"
        if value.microsecond:
            micros = f"{value.microsecond:06d}"
            text += "." + (micros[:3] if micros.endswith("000") else micros)
    return text


def _untyped_java(value: Any) -> str:
    """A value without type information inside a typed record: Java's form of what
    PyFlink would have made of it (Python's ``str`` otherwise)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return java_double_string(value)
    if isinstance(value, Row):
        return f"{value.get_row_kind()}[{', '.join(_untyped_java(v) for v in value)}]"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_untyped_java(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{_untyped_java(k)}={_untyped_java(v)}" for k, v in value.items())
            + "}"
        )
    return str(value)


# ----------------------------------------------------------------------------- batch key order
def pickled_sort_key(value: Any) -> tuple[int, bytes]:
    """Where Flink's BATCH execution sorts a key it holds as pickled bytes (PyFlink's
    ``key_by`` without ``key_type``): by the length of the pickled form, then bytewise
    (the serialized ``byte[]`` is its length followed by its bytes).

    Example:
        >>> sorted(["be", "a", "to", "bee"], key=pickled_sort_key)
        ['a', 'be', 'to', 'bee']
    """
    data = pickle.dumps(value, protocol=4)
    return len(data), data


# ----------------------------------------------------------------------------- type information
class TypeInformation:
    """The type of a stream's records (PyFlink's ``TypeInformation``).

    Subclasses say how Java prints a value of the type (:meth:`to_java_string`), how a
    Python value becomes a record of the type (:meth:`from_python`), and which
    serializer fits the type (:meth:`create_serializer`).
    """

    #: True when Python's ``str`` is how PyFlink prints records of this type.
    prints_with_python_str = False

    def to_java_string(self, value: Any) -> str:
        """``value`` as Java's ``toString`` shows it (``null`` for None)."""
        return _untyped_java(value)

    def from_python(self, value: Any) -> Any:
        """The record this type makes of ``value`` (``Types.ROW``: a :class:`Row`)."""
        return value

    def needs_conversion(self) -> bool:
        """Whether :meth:`from_python` changes values (sources then convert records)."""
        return False

    def create_serializer(self) -> TypeSerializer:
        """The serializer for streams of this type."""
        return DefaultSerializer()

    def sort_key(self, value: Any) -> Any:
        """Where Flink's BATCH execution sorts ``value`` as a key of this type (by its
        serialized form); the default: as pickled bytes."""
        return pickled_sort_key(value)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BasicTypeInfo(TypeInformation):
    """``Types.STRING()``, ``Types.INT()``, ``Types.DOUBLE()``, ... (one per name)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def to_java_string(self, value: Any) -> str:
        if value is None:
            return "null"
        name = self.name
        if name == "BOOLEAN":
            return "true" if value else "false"
        if name == "DOUBLE" and isinstance(value, (int, float)):
            return java_double_string(value)
        if name == "FLOAT" and isinstance(value, (int, float)):
            return java_float_string(value)
        if name in ("BYTE", "SHORT", "INT", "LONG", "BIG_INT") and isinstance(value, float):
            return str(int(value))
        if name == "INSTANT" and isinstance(value, datetime.datetime):
            stamp = value.astimezone(datetime.UTC).replace(tzinfo=None)
            return f"{stamp.date().isoformat()}T{_java_time(stamp.time())}Z"
        return _untyped_java(value)

    def sort_key(self, value: Any) -> Any:
        """Strings by length, then characters; numbers and booleans by value (Flink's
        serialized forms compare that way)."""
        if self.name in ("STRING", "CHAR") and isinstance(value, str):
            return (0, len(value), value)
        if self.name != "STRING" and isinstance(value, (int, float, bool, decimal.Decimal)):
            return (0, value)
        return (1, pickled_sort_key(value))

    def __repr__(self) -> str:
        return f"Types.{self.name}()"


class SqlTimeTypeInfo(TypeInformation):
    """``Types.SQL_DATE()``, ``Types.SQL_TIME()``, ``Types.SQL_TIMESTAMP()``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def to_java_string(self, value: Any) -> str:
        if value is None:
            return "null"
        if self.name == "SQL_TIMESTAMP" and isinstance(value, datetime.datetime):
            fraction = f"{value.microsecond:06d}".rstrip("0") or "0"
            return f"{value:%Y-%m-%d %H:%M:%S}.{fraction}"
        if self.name == "SQL_TIME" and isinstance(value, datetime.time):
            return f"{value:%H:%M:%S}"
        if isinstance(value, datetime.date):
            return value.isoformat()
        return _untyped_java(value)

    def __repr__(self) -> str:
        return f"Types.{self.name}()"


class LocalTimeTypeInfo(TypeInformation):
    """``Types.LOCAL_DATE()``, ``Types.LOCAL_TIME()``, ``Types.LOCAL_DATE_TIME()``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def to_java_string(self, value: Any) -> str:
        if isinstance(value, datetime.datetime):
            return f"{value.date().isoformat()}T{_java_time(value.time())}"
        if isinstance(value, datetime.time):
            return _java_time(value)
        if isinstance(value, datetime.date):
            return value.isoformat()
        return _untyped_java(value)

    def __repr__(self) -> str:
        return f"Types.{self.name}()"


class PickledBytesTypeInfo(TypeInformation):
    """``Types.PICKLED_BYTE_ARRAY()``: any Python object; it prints with Python's ``str``."""

    prints_with_python_str = True

    def to_java_string(self, value: Any) -> str:
        return str(value)

    def __repr__(self) -> str:
        return "Types.PICKLED_BYTE_ARRAY()"


class _ElementTypeInfo(TypeInformation):
    """Arrays and lists: ``[a, b, c]`` (Java's ``Arrays.toString``)."""

    kind = "ARRAY"

    def __init__(self, element_type: TypeInformation) -> None:
        self.element_type = _check_type(element_type, f"Types.{self.kind}")

    def to_java_string(self, value: Any) -> str:
        if value is None:
            return "null"
        element = self.element_type.to_java_string
        return "[" + ", ".join(element(v) for v in value) + "]"

    def __repr__(self) -> str:
        return f"Types.{self.kind}({self.element_type!r})"


class PrimitiveArrayTypeInfo(_ElementTypeInfo):
    kind = "PRIMITIVE_ARRAY"


class BasicArrayTypeInfo(_ElementTypeInfo):
    kind = "BASIC_ARRAY"


class ObjectArrayTypeInfo(_ElementTypeInfo):
    kind = "OBJECT_ARRAY"


class ListTypeInfo(_ElementTypeInfo):
    kind = "LIST"


class MapTypeInfo(TypeInformation):
    """``Types.MAP(key, value)``: ``{k1=v1, k2=v2}`` (Java's ``Map.toString``)."""

    def __init__(self, key_type: TypeInformation, value_type: TypeInformation) -> None:
        self.key_type = _check_type(key_type, "Types.MAP")
        self.value_type = _check_type(value_type, "Types.MAP")

    def to_java_string(self, value: Any) -> str:
        if value is None:
            return "null"
        k, v = self.key_type.to_java_string, self.value_type.to_java_string
        return "{" + ", ".join(f"{k(key)}={v(item)}" for key, item in value.items()) + "}"

    def __repr__(self) -> str:
        return f"Types.MAP({self.key_type!r}, {self.value_type!r})"


class TupleTypeInfo(TypeInformation):
    """``Types.TUPLE([...])``: Python tuples; Java prints ``(a,b,c)``."""

    def __init__(self, field_types: Sequence[TypeInformation]) -> None:
        self.field_types = [_check_type(t, "Types.TUPLE") for t in field_types]

    def get_field_types(self) -> list[TypeInformation]:
        return list(self.field_types)

    def to_java_string(self, value: Any) -> str:
        if value is None:
            return "null"
        return "(" + ",".join(_fields_java(self.field_types, value)) + ")"

    def __repr__(self) -> str:
        return f"Types.TUPLE({self.field_types!r})"


class RowTypeInfo(TypeInformation):
    """``Types.ROW([...])`` / ``Types.ROW_NAMED(names, [...])``: :class:`Row` records;
    Java prints ``+I[a, b, c]``."""

    def __init__(
        self, field_types: Sequence[TypeInformation], field_names: Sequence[str] | None = None
    ) -> None:
        self.field_types = [_check_type(t, "Types.ROW") for t in field_types]
        if field_names is not None:
            names = [str(n) for n in field_names]
            if len(names) != len(self.field_types):
                raise ValueError(
                    f"Types.ROW_NAMED got {len(names)} names for {len(self.field_types)} types"
                )
        else:
            names = [f"f{i}" for i in range(len(self.field_types))]
        self.field_names = names
        self._named = field_names is not None

    def get_field_names(self) -> list[str]:
        return list(self.field_names)

    def get_field_types(self) -> list[TypeInformation]:
        return list(self.field_types)

    def get_field_index(self, name: str) -> int:
        return self.field_names.index(name)

    def to_java_string(self, value: Any) -> str:
        if value is None:
            return "null"
        kind = value.get_row_kind() if isinstance(value, Row) else RowKind.INSERT
        return f"{kind}[{', '.join(_fields_java(self.field_types, value))}]"

    def needs_conversion(self) -> bool:
        return True

    def from_python(self, value: Any) -> Any:
        if isinstance(value, Row):
            if value.get_field_names() is None and self._named:
                row = Row.of(value, self.field_names)
                row.set_row_kind(value.get_row_kind())
                return row
            return value
        if isinstance(value, dict):
            return Row.of((value.get(n) for n in self.field_names), self.field_names)
        if isinstance(value, (tuple, list)):
            return Row.of(value, self.field_names)
        return value

    def create_serializer(self) -> TypeSerializer:
        return RowSerializer()

    def __repr__(self) -> str:
        if self._named:
            return f"Types.ROW_NAMED({self.field_names!r}, {self.field_types!r})"
        return f"Types.ROW({self.field_types!r})"


def _fields_java(types: Sequence[TypeInformation], value: Any) -> Iterator[str]:
    values = list(value)
    for i, field in enumerate(values):
        yield types[i].to_java_string(field) if i < len(types) else _untyped_java(field)


def _check_type(value: Any, what: str) -> TypeInformation:
    if not isinstance(value, TypeInformation):
        raise TypeError(f"{what} takes type information (Types.INT(), ...), got {value!r}")
    return value


class RowSerializer(TypeSerializer):
    """Rows cross channels as marshalled tuples ``(kind, names, *values)`` (exact:
    ``Row`` objects come back as equal ``Row`` objects); batches holding anything else
    than rows go through the default serializer."""

    name = "row"

    __slots__ = ("_default",)

    def __init__(self) -> None:
        self._default = DefaultSerializer()

    def encode(self, values: Sequence[Any]) -> tuple[int, bytes]:
        if values and all(type(v) is Row for v in values):
            plain = [(v._row_kind.value, v._fields, *v._values) for v in values]
            code, payload = self._default.encode(plain)
            return code + _ROW_FORMAT_OFFSET, payload
        return self._default.encode(values)

    def decode(self, format_code: int, payload: bytes | memoryview) -> list[Any]:
        if format_code < _ROW_FORMAT_OFFSET:
            return self._default.decode(format_code, payload)
        rows = []
        for kind, names, *fields in self._default.decode(format_code - _ROW_FORMAT_OFFSET, payload):
            rows.append(_rebuild_row(fields, names, kind))
        return rows


#: Format codes of batches of rows (the default serializer's code plus this).
_ROW_FORMAT_OFFSET = 16


# ----------------------------------------------------------------------------- Types
class Types:
    """PyFlink's factory of type information: ``Types.STRING()``, ``Types.TUPLE([...])``...

    Example:
        >>> Types.ROW_NAMED(["word", "n"], [Types.STRING(), Types.LONG()])
        Types.ROW_NAMED(['word', 'n'], [Types.STRING(), Types.LONG()])
    """

    @staticmethod
    def STRING() -> TypeInformation:
        return BasicTypeInfo("STRING")

    @staticmethod
    def BYTE() -> TypeInformation:
        return BasicTypeInfo("BYTE")

    @staticmethod
    def BOOLEAN() -> TypeInformation:
        return BasicTypeInfo("BOOLEAN")

    @staticmethod
    def SHORT() -> TypeInformation:
        return BasicTypeInfo("SHORT")

    @staticmethod
    def INT() -> TypeInformation:
        return BasicTypeInfo("INT")

    @staticmethod
    def LONG() -> TypeInformation:
        return BasicTypeInfo("LONG")

    @staticmethod
    def FLOAT() -> TypeInformation:
        return BasicTypeInfo("FLOAT")

    @staticmethod
    def DOUBLE() -> TypeInformation:
        return BasicTypeInfo("DOUBLE")

    @staticmethod
    def CHAR() -> TypeInformation:
        return BasicTypeInfo("CHAR")

    @staticmethod
    def BIG_INT() -> TypeInformation:
        return BasicTypeInfo("BIG_INT")

    @staticmethod
    def BIG_DEC() -> TypeInformation:
        return BasicTypeInfo("BIG_DEC")

    @staticmethod
    def INSTANT() -> TypeInformation:
        return BasicTypeInfo("INSTANT")

    @staticmethod
    def SQL_DATE() -> TypeInformation:
        return SqlTimeTypeInfo("SQL_DATE")

    @staticmethod
    def SQL_TIME() -> TypeInformation:
        return SqlTimeTypeInfo("SQL_TIME")

    @staticmethod
    def SQL_TIMESTAMP() -> TypeInformation:
        return SqlTimeTypeInfo("SQL_TIMESTAMP")

    @staticmethod
    def LOCAL_DATE() -> TypeInformation:
        return LocalTimeTypeInfo("LOCAL_DATE")

    @staticmethod
    def LOCAL_TIME() -> TypeInformation:
        return LocalTimeTypeInfo("LOCAL_TIME")

    @staticmethod
    def LOCAL_DATE_TIME() -> TypeInformation:
        return LocalTimeTypeInfo("LOCAL_DATE_TIME")

    @staticmethod
    def PICKLED_BYTE_ARRAY() -> TypeInformation:
        return PickledBytesTypeInfo()

    @staticmethod
    def ROW(field_types: Sequence[TypeInformation]) -> RowTypeInfo:
        return RowTypeInfo(field_types)

    @staticmethod
    def ROW_NAMED(
        field_names: Sequence[str], field_types: Sequence[TypeInformation]
    ) -> RowTypeInfo:
        return RowTypeInfo(field_types, field_names)

    @staticmethod
    def TUPLE(field_types: Sequence[TypeInformation]) -> TupleTypeInfo:
        return TupleTypeInfo(field_types)

    @staticmethod
    def PRIMITIVE_ARRAY(element_type: TypeInformation) -> TypeInformation:
        return PrimitiveArrayTypeInfo(element_type)

    @staticmethod
    def BASIC_ARRAY(element_type: TypeInformation) -> TypeInformation:
        return BasicArrayTypeInfo(element_type)

    @staticmethod
    def OBJECT_ARRAY(element_type: TypeInformation) -> TypeInformation:
        return ObjectArrayTypeInfo(element_type)

    @staticmethod
    def LIST(element_type: TypeInformation) -> TypeInformation:
        return ListTypeInfo(element_type)

    @staticmethod
    def MAP(key_type: TypeInformation, value_type: TypeInformation) -> TypeInformation:
        return MapTypeInfo(key_type, value_type)
