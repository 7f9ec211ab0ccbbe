"""flowkit's exceptions: few, small and named.

Imports nothing else from flowkit.
"""

from __future__ import annotations

__all__ = [
    "ChannelClosed",
    "FlowkitError",
    "InvalidConfigurationError",
    "JobCancelled",
    "JobFailed",
    "RunningLoopError",
    "SerializationError",
    "UserFunctionError",
    "root_cause",
]


class FlowkitError(Exception):
    """Base class of every error flowkit raises on purpose."""


class InvalidConfigurationError(FlowkitError, ValueError):
    """Raised when a job is built (before anything runs) if its configuration is invalid.

    The message says what is wrong and what to change, e.g. ``buffer_size must be > 0``.
    """


class UserFunctionError(FlowkitError):
    """Raised inside a subtask when a user function raises.

    Names the operator and the subtask; the user's exception is chained as ``__cause__``.
    """

    def __init__(self, operator: str, subtask: str, cause: BaseException, detail: str = "") -> None:
        self.operator = operator
        self.subtask = subtask
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"operator {operator!r} in subtask {subtask!r} failed{extra}: "
            f"{type(cause).__name__}: {cause}"
        )


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
    """Raised by ``env.execute()`` when called inside a running event loop.

    Use ``client = await env.execute_async()`` and ``await client.wait()`` there instead.
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
