"""``pyflink.datastream.async_retry_predicates``: retry predicates of
``AsyncRetryStrategy``."""

from __future__ import annotations

from flowkit.functions import empty_result_predicate as empty_result_predicate
from flowkit.functions import exception_type_predicate as exception_type_predicate
from flowkit.functions import has_exception_predicate as has_exception_predicate

__all__ = [
    "empty_result_predicate",
    "exception_type_predicate",
    "has_exception_predicate",
]
