"""flowkit's exceptions: few, small and named.

Imports nothing else from flowkit.
"""

from __future__ import annotations

import reprlib

__all__ = [
    "ChannelClosed",
    "FlowkitError",
    "InvalidConfigurationError",
    "InvalidTimestampError",
    "JobCancelled",
    "JobFailed",
    "RunningLoopError",
    "SerializationError",
    "UserFunctionError",
    "describe_record",
    "root_cause",
]

#: Longest repr of a record that an error message shows (longer ones are cut with "...").
RECORD_REPR_LIMIT = 100

_NO_RECORD = object()

_record_repr = reprlib.Repr()
_record_repr.maxstring = RECORD_REPR_LIMIT
_record_repr.maxother = RECORD_REPR_LIMIT
_record_repr.maxlist = _record_repr.maxtuple = _record_repr.maxdict = 10
_record_repr.maxset = _record_repr.maxfrozenset = 10


def describe_record(record: object) -> str:
    """The record as error messages show it: its type and a repr of at most ~100 characters.

    Example:
        >>> describe_record({"user": "u1", "value": 3})
        "{'user': 'u1', 'value': 3} (dict)"
        >>> len(describe_record("x" * 1000)) <= RECORD_REPR_LIMIT + len(" (str)")
        True
    """
    kind = type(record)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    try:
        text = _record_repr.repr(record)
    except Exception as exc:  # a broken __repr__ must not hide the real error
        text = f"<repr() failed: {type(exc).__name__}>"
    if len(text) > RECORD_REPR_LIMIT:
        text = text[: RECORD_REPR_LIMIT - 3] + "..."
    return f"{text} ({name})"


class FlowkitError(Exception):
    """Base class of every error flowkit raises on purpose."""


class InvalidConfigurationError(FlowkitError, ValueError):
    """Raised when a job is built (before anything runs) if its configuration is invalid.

    The message says what is wrong and what to change, e.g. ``buffer_size must be > 0``.
    Window definitions and lateness raise it too (``TumblingEventTimeWindows: size must be
    > 0, got 0``), and so does a session gap computed per record, when that record is
    assigned. A ``ValueError``, so ``except ValueError`` catches it.
    """


class UserFunctionError(FlowkitError):
    """Raised inside a subtask when a user function raises.

    Names the operator and the subtask, and the record being processed when one caused the
    error (its type and a repr cut to about 100 characters, see :func:`describe_record`);
    the user's exception is chained as ``__cause__``.

    Example:
        >>> error = UserFunctionError("parse", "parse (1/2)", ValueError("bad"), record="x1")
        >>> str(error)
        "operator 'parse' in subtask 'parse (1/2)' failed (on record 'x1' (str)): ValueError: bad"
        >>> error.record
        "'x1' (str)"
    """

    def __init__(
        self,
        operator: str,
        subtask: str,
        cause: BaseException,
        detail: str = "",
        *,
        record: object = _NO_RECORD,
    ) -> None:
        self.operator = operator
        self.subtask = subtask
        self.detail = detail
        #: The record that caused the error as :func:`describe_record` shows it (None: no
        #: record was involved). The record itself is not kept.
        self.record: str | None = None if record is _NO_RECORD else describe_record(record)
        parts = [detail] if detail else []
        if self.record is not None:
            parts.append(f"on record {self.record}")
        extra = f" ({', '.join(parts)})" if parts else ""
        super().__init__(
            f"operator {operator!r} in subtask {subtask!r} failed{extra}: "
            f"{type(cause).__name__}: {cause}"
        )


class InvalidTimestampError(FlowkitError, ValueError):
    """A record's timestamp or a timer's time is not a valid event time.

    Timestamps are epoch milliseconds: ints in the signed 64-bit range
    ``[-2**63, 2**63 - 1]`` (``MIN_WATERMARK`` .. ``MAX_WATERMARK``), as Java's ``long`` in
    Flink. A value outside it (e.g. ``2**63 + 50``), NaN, infinity, a bool, a str or another
    non-number is rejected instead of being carried along until its window silently never
    fires. Operators raise it wrapped in a :class:`UserFunctionError` that names the
    operator, the subtask and the record.
    """

    #: Position of the invalid timestamp in the batch that was checked (None: no batch).
    index: int | None = None


class SerializationError(FlowkitError):
    """Raised when a record cannot be serialized for a channel (names operator and record type)."""


class ChannelClosed(FlowkitError):
    """Raised when writing to or reading from a channel that was closed."""


class JobFailed(FlowkitError):
    """Raised by ``execute()`` / ``JobClient.wait()`` when a job fails.

    The message names the failing operator and subtask; ``__cause__`` is the original error.
    """


class JobCancelled(FlowkitError):
    """Raised by ``JobClient.wait()`` when the job was cancelled."""


class RunningLoopError(FlowkitError, RuntimeError):
    """An operation that cannot run inside a running event loop was called there.

    ``env.execute()`` no longer raises it: inside a running loop it runs the job on a
    worker thread. The class stays for code that catches it.
    """


def root_cause(exc: BaseException) -> BaseException:
    """The last error in ``exc``'s chain of ``__cause__`` (``exc`` itself if none).

    Example:
        >>> try:
        ...     try:
        ...         raise KeyError("k")
        ...     except KeyError as inner:
        ...         raise JobFailed("job failed") from inner
        ... except JobFailed as outer:
        ...     root_cause(outer)
        KeyError('k')
    """
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc
