"""Valid event times, checked where timestamps enter a job.

Timestamps are epoch milliseconds in the signed 64-bit range ``[MIN_WATERMARK,
MAX_WATERMARK]`` (Java's ``long`` in Flink). A record stamped outside it (``2**63 + 50``,
``10**30``) would silently vanish: its window ends after the last possible watermark and
never fires, and it is never late either. So timestamp assigners, sources and timers go
through :func:`to_timestamp` / :func:`checked_timestamps`, which reject such values with
an :class:`~flowkit.errors.InvalidTimestampError` (operators wrap it in a
:class:`~flowkit.errors.UserFunctionError` naming the operator, subtask and record).

Accepted: ints (and int-like numbers such as numpy integers), and finite floats, which are
truncated to ints as before. Rejected: values out of range, NaN and infinities, bools,
strings and bytes, ``None`` (where a timestamp is required) and other non-numbers.

Example:
    >>> to_timestamp(1_700_000_000_000), to_timestamp(12.9)
    (1700000000000, 12)
    >>> to_timestamp(2**63 + 50)
    Traceback (most recent call last):
    flowkit.errors.InvalidTimestampError: timestamp 9223372036854775858 is outside the range of event time [-9223372036854775808, 9223372036854775807] (signed 64-bit epoch milliseconds)
"""

from __future__ import annotations

import math
import operator
from typing import Any

from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK
from flowkit.errors import InvalidTimestampError

__all__ = ["checked_timestamps", "to_timestamp"]


def _out_of_range(value: int, what: str) -> InvalidTimestampError:
    return InvalidTimestampError(
        f"{what} {value} is outside the range of event time [{MIN_WATERMARK}, "
        f"{MAX_WATERMARK}] (signed 64-bit epoch milliseconds)"
    )


def _not_a_time(value: Any, what: str, why: str) -> InvalidTimestampError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return InvalidTimestampError(
        f"{what} {shown} ({type(value).__name__}) is not a valid event time: {why}; "
        f"timestamps are epoch milliseconds (int)"
    )


def to_timestamp(value: Any, what: str = "timestamp") -> int:
    """Return ``value`` as a valid event time (an int in ``[MIN_WATERMARK, MAX_WATERMARK]``).

    Args:
        value: The timestamp: an int, an int-like number or a finite float (truncated).
        what: How the error message calls it (``"timestamp"``, ``"event-time timer"``...).

    Returns:
        The timestamp as an int.

    Raises:
        InvalidTimestampError: ``value`` is out of range or not a number (see the module
            docstring).

    Example:
        >>> to_timestamp(-5), to_timestamp(7.0)
        (-5, 7)
        >>> to_timestamp(True)
        Traceback (most recent call last):
        flowkit.errors.InvalidTimestampError: timestamp True (bool) is not a valid event time: a bool is not a number of milliseconds; timestamps are epoch milliseconds (int)
    """
    cls = value.__class__
    if cls is int:
        number = value
    elif cls is bool:
        raise _not_a_time(value, what, "a bool is not a number of milliseconds")
    elif value is None or isinstance(value, str | bytes | bytearray):
        raise _not_a_time(value, what, "not a number")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _not_a_time(value, what, "NaN and infinities are no points in time")
        number = int(value)
    else:
        try:
            number = operator.index(value)  # int subclasses, numpy integers
        except TypeError:
            try:
                number = int(value)  # Decimal, Fraction, ...
            except (TypeError, ValueError, OverflowError):
                raise _not_a_time(value, what, "not a number") from None
    if MIN_WATERMARK <= number <= MAX_WATERMARK:
        return number
    raise _out_of_range(number, what)


def _all_valid_ints(stamps: list[Any]) -> bool:
    """Whether every timestamp is an int in range, in three C-level passes: the sum is an
    int only if every element is an int (a float, NaN, numpy number or None makes it
    something else or raises); the smallest and largest must be exact ints in range (a
    bool would be the smallest of real timestamps)."""
    try:
        total = sum(stamps)
    except TypeError:
        return False
    if type(total) is not int:
        return False
    low = min(stamps)
    high = max(stamps)
    return type(low) is int and type(high) is int and low >= MIN_WATERMARK and high <= MAX_WATERMARK


def checked_timestamps(stamps: list[Any], allow_none: bool = False) -> list[Any]:
    """Check a batch of timestamps; return it, or a copy with every one made an int.

    The common batch (only ints, all in range) costs three C-level passes (``sum``,
    ``min`` and ``max``) and is returned as is; anything else goes element by element
    through :func:`to_timestamp`. (An int subclass, e.g. a bool, between the smallest and
    the largest timestamp passes as the number it is.)

    Args:
        stamps: The timestamps of a batch of records.
        allow_none: Whether ``None`` (a record without timestamp) is allowed.

    Returns:
        ``stamps`` itself, or a new list of ints (and Nones, with ``allow_none``).

    Raises:
        InvalidTimestampError: For the first invalid timestamp; its ``index`` is that
            timestamp's position in ``stamps``.

    Example:
        >>> checked_timestamps([3, 1, 2])
        [3, 1, 2]
        >>> checked_timestamps([3, 1.5, None], allow_none=True)
        [3, 1, None]
        >>> try:
        ...     checked_timestamps([1, 10**30])
        ... except Exception as error:
        ...     print(error.index)
        1
    """
    if stamps and _all_valid_ints(stamps):
        return stamps
    out: list[Any] = []
    append = out.append
    for index, ts in enumerate(stamps):
        if ts is None and allow_none:
            append(None)
            continue
        try:
            append(to_timestamp(ts))
        except InvalidTimestampError as error:
            error.index = index
            raise
    return out
