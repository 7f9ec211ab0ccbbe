"""A checkpoint id prepared for (where a savepoint goes, told to the TaskManagers over
the network) is the id of the checkpoint then triggered: no periodic or final checkpoint
takes it meanwhile."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flowkit.checkpoint.coordinator import CheckpointConfig, CheckpointCoordinator
from flowkit.checkpoint.storage import CheckpointStorage
from flowkit.testing import wait_until

TIMEOUT = 30


class RecordingSource:
    """A source subtask that records the triggers it gets and never acknowledges."""

    name = "source (1/1)"
    is_source = True
    is_finished = False

    def __init__(self) -> None:
        self.triggered: list[tuple[int, bool]] = []

    def trigger_checkpoint(
        self,
        checkpoint_id: int,
        timestamp: int,
        is_savepoint: bool,
        stop: bool = False,
        final: bool = False,
    ) -> None:
        self.triggered.append((checkpoint_id, is_savepoint))

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        pass

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        pass


async def test_no_periodic_checkpoint_takes_the_id_held_for_a_savepoint(tmp_path: Path) -> None:
    source = RecordingSource()
    config = CheckpointConfig(interval_ms=5, directory=str(tmp_path), max_concurrent=1000)
    coordinator = CheckpointCoordinator(config, CheckpointStorage(str(tmp_path)), [source], {})
    periodic = asyncio.ensure_future(coordinator.run())
    try:
        await wait_until(lambda: len(source.triggered) >= 3, "periodic checkpoints", TIMEOUT)
        async with coordinator.triggers_held():
            held = coordinator.next_id
            before = len(source.triggered)
            await asyncio.sleep(0.1)  # twenty intervals: the TaskManagers answering
            assert len(source.triggered) == before  # none triggered meanwhile
            assert coordinator.next_id == held
            coordinator.trigger(is_savepoint=True, savepoint_dir=str(tmp_path / "sp"))
        assert source.triggered[before] == (held, True)
        await wait_until(
            lambda: len(source.triggered) >= before + 3, "periodic checkpoints after it", TIMEOUT
        )
        assert [cid for cid, _ in source.triggered] == list(range(1, len(source.triggered) + 1))
        assert [cid for cid, savepoint in source.triggered if savepoint] == [held]
    finally:
        coordinator.stop()
        periodic.cancel()
        await asyncio.gather(periodic, return_exceptions=True)
        await coordinator.close()
