"""Replayable test sources that run slowly enough for checkpoints to happen mid-stream."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from flowkit.sources import InputStatus, ReaderOutput, Source, SourceReader

__all__ = ["PacedSource"]


class _PacedReader(SourceReader):
    def __init__(self, source: PacedSource) -> None:
        self.source = source
        self.position = 0
        self._sleep: asyncio.Future[Any] | None = None

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        if self._sleep is not None and not self._sleep.done():
            return InputStatus.NOTHING_AVAILABLE
        source = self.source
        if self.position >= len(source.records):
            return InputStatus.END_OF_INPUT
        record = source.records[self.position]
        self.position += 1
        timestamp = source.timestamp(record) if source.timestamp is not None else None
        output.collect(record, timestamp)
        every = source.watermark_every
        if every and timestamp is not None and self.position % every == 0:
            output.emit_watermark(timestamp - source.watermark_lag)
        if source.pause_s > 0:
            self._sleep = asyncio.ensure_future(asyncio.sleep(source.pause_s))
            return InputStatus.NOTHING_AVAILABLE
        return InputStatus.MORE_AVAILABLE

    def is_available(self) -> Awaitable[Any] | None:
        return self._sleep

    def snapshot_position(self) -> Any:
        return self.position

    def restore_position(self, position: Any) -> None:
        self.position = int(position)

    async def close(self) -> None:
        if self._sleep is not None:
            self._sleep.cancel()


class PacedSource(Source):
    """Emits ``records`` one at a time with ``pause_s`` between them, and replays from its
    checkpointed position after a restore (a non-parallel source).

    With ``timestamp`` (record -> event time) records carry timestamps, and with
    ``watermark_every=n`` a watermark of ``timestamp - watermark_lag`` follows every
    n-th record — an exact, slow stream for testing checkpoints, savepoints and
    failures in the middle of a job.

    Example:
        >>> from flowkit import StreamExecutionEnvironment
        >>> env = StreamExecutionEnvironment()
        >>> env.from_source(PacedSource([1, 2, 3], pause_s=0)).execute_and_collect()
        [1, 2, 3]
    """

    max_parallelism = 1
    name = "Paced Source"

    def __init__(
        self,
        records: Sequence[Any],
        pause_s: float = 0.0005,
        *,
        timestamp: Callable[[Any], int] | None = None,
        watermark_every: int | None = None,
        watermark_lag: int = 1,
        name: str = "Paced Source",
    ) -> None:
        self.records = list(records)
        self.pause_s = pause_s
        self.timestamp = timestamp
        self.watermark_every = watermark_every
        self.watermark_lag = watermark_lag
        self.name = name
        #: The graph counts it as a watermark source when it makes watermarks.
        self.emits_watermarks = bool(watermark_every and timestamp is not None)

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return _PacedReader(self)
