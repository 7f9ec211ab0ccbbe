"""The sink protocol: a :class:`Sink` describes a destination and builds one
:class:`SinkWriter` per parallel subtask.

Synchronous writers implement ``write_batch``; asynchronous ones set ``is_async = True``
and implement ``write_batch_async``, which the subtask awaits before it takes more input,
so a slow sink slows the job down (backpressure) instead of piling records up.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Sink", "SinkWriter"]


class SinkWriter:
    """Writes the records of one sink subtask.

    An asynchronous writer that awaits once per record should advance
    :attr:`batch_progress` after each record, so that the job's metrics show the sink's
    progress through a batch as it goes rather than the whole batch at its end.

    Example:
        >>> class Store(SinkWriter):
        ...     is_async = True
        ...     async def write_batch_async(self, values, timestamps):
        ...         for value in values:
        ...             await save(value)
        ...             self.batch_progress += 1
    """

    #: True: the runtime calls ``write_batch_async`` and awaits it.
    is_async = False
    #: Asynchronous writers: records of the batch being written that are done. The
    #: runtime sets it to 0 before each ``write_batch_async`` call and reads it for the
    #: records in and out of the sink; a writer that leaves it at 0 counts each batch
    #: when its call returns.
    batch_progress = 0

    def write_batch(self, values: list[Any], timestamps: list[Any] | None) -> None:
        raise NotImplementedError

    async def write_batch_async(self, values: list[Any], timestamps: list[Any] | None) -> None:
        raise NotImplementedError

    def write_watermark(self, timestamp: int) -> None:
        """Called for each watermark that reaches the sink."""

    def finish(self) -> None:
        """End of input (not called on failure or cancel)."""

    def close(self) -> None:
        """Release resources (always called)."""

    # An asynchronous writer may define ``async def finish_async(self)`` and/or
    # ``async def close_async(self)``: the subtask awaits them instead of calling
    # ``finish()`` / ``close()``, so flushing and closing connections never block the
    # event loop (``close_async`` is always awaited, also after a failure or cancel).


class Sink:
    """Describes a sink; ``create_writer`` builds the writer of one subtask."""

    name = "Sink"

    def create_writer(self, subtask_index: int, parallelism: int) -> SinkWriter:
        raise NotImplementedError

    def with_type_info(self, type_info: Any) -> Sink:
        """The sink to use for a stream that carries ``type_info`` (PyFlink's type
        information); sinks that write text override it to write records as Java prints
        them. The default: this sink, unchanged."""
        return self
