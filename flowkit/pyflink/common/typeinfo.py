"""``pyflink.common.typeinfo``: type information."""

from __future__ import annotations

from flowkit.typeinfo import BasicArrayTypeInfo as BasicArrayTypeInfo
from flowkit.typeinfo import BasicTypeInfo as BasicTypeInfo
from flowkit.typeinfo import ListTypeInfo as ListTypeInfo
from flowkit.typeinfo import LocalTimeTypeInfo as LocalTimeTypeInfo
from flowkit.typeinfo import MapTypeInfo as MapTypeInfo
from flowkit.typeinfo import ObjectArrayTypeInfo as ObjectArrayTypeInfo
from flowkit.typeinfo import PickledBytesTypeInfo as PickledBytesTypeInfo
from flowkit.typeinfo import PrimitiveArrayTypeInfo as PrimitiveArrayTypeInfo
from flowkit.typeinfo import RowTypeInfo as RowTypeInfo
from flowkit.typeinfo import SqlTimeTypeInfo as SqlTimeTypeInfo
from flowkit.typeinfo import TupleTypeInfo as TupleTypeInfo
from flowkit.typeinfo import TypeInformation as TypeInformation
from flowkit.typeinfo import Types as Types

__all__ = [
    "BasicArrayTypeInfo",
    "BasicTypeInfo",
    "ListTypeInfo",
    "LocalTimeTypeInfo",
    "MapTypeInfo",
    "ObjectArrayTypeInfo",
    "PickledBytesTypeInfo",
    "PrimitiveArrayTypeInfo",
    "RowTypeInfo",
    "SqlTimeTypeInfo",
    "TupleTypeInfo",
    "TypeInformation",
    "Types",
]
