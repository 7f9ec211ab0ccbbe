"""``enable_checkpointing()`` without a directory: the temporary directory flowkit makes
for a job is removed, with its checkpoints, when the job ends (finished, failed or
cancelled); a directory the user gave is kept."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flowkit import (
    CollectSink,
    JobCancelled,
    JobFailed,
    RestartStrategy,
    StreamExecutionEnvironment,
)
from flowkit.testing import wait_until

TIMEOUT = 30


def checkpoints_in(directory: str) -> list[str]:
    """The completed checkpoints (``chk-<id>`` with ``_metadata``) in ``directory``."""
    if not os.path.isdir(directory):
        return []
    return [
        name
        for name in os.listdir(directory)
        if name.startswith("chk-") and os.path.exists(os.path.join(directory, name, "_metadata"))
    ]


def gone(directory: str) -> bool:
    return not os.path.exists(directory)


def temporary_dir(env: StreamExecutionEnvironment) -> str:
    config = env.get_checkpoint_config()
    assert config is not None
    assert os.path.basename(config.directory).startswith("flowkit-checkpoints-")
    return config.directory


async def until_checkpointed(directory: str) -> AsyncIterator[int]:
    """Records 0, 1, 2, ... until a checkpoint of the job is complete in ``directory``,
    then a last one and the end of the input."""
    n = 0
    async with asyncio.timeout(TIMEOUT):
        while not checkpoints_in(directory):
            yield n
            n += 1
            await asyncio.sleep(0.005)
    yield n


def job(directory: str | None = None) -> tuple[StreamExecutionEnvironment, CollectSink]:
    env = StreamExecutionEnvironment(buffer_timeout_ms=0)
    env.enable_checkpointing(10, directory=directory)
    env.set_restart_strategy(RestartStrategy.no_restart())
    sink = CollectSink()
    source = env.from_async_iterable(lambda: until_checkpointed(env_dir(env)))
    source.map(lambda x: x * 2).sink_to(sink)
    return env, sink


def env_dir(env: StreamExecutionEnvironment) -> str:
    config = env.get_checkpoint_config()
    assert config is not None
    return config.directory


def test_removed_when_the_job_finishes() -> None:
    env, sink = job()
    directory = temporary_dir(env)
    assert not gone(directory)
    env.execute("finishes")
    assert sink.values[-1] == 2 * (len(sink.values) - 1)  # it ran, up to a checkpoint
    assert gone(directory)


def test_removed_when_the_job_fails() -> None:
    env = StreamExecutionEnvironment(buffer_timeout_ms=0)
    env.enable_checkpointing(10)
    env.set_restart_strategy(RestartStrategy.no_restart())
    directory = temporary_dir(env)

    def fail_at_end(x: int) -> int:
        if not checkpoints_in(directory):
            return x
        raise ValueError(f"record {x} after a checkpoint")

    source = env.from_async_iterable(lambda: until_checkpointed(directory))
    source.map(fail_at_end).sink_to(CollectSink())
    with pytest.raises(JobFailed, match="after a checkpoint"):
        env.execute("fails")
    assert gone(directory)


async def test_removed_when_the_job_is_cancelled() -> None:
    env = StreamExecutionEnvironment(buffer_timeout_ms=0)
    env.enable_checkpointing(10)
    directory = temporary_dir(env)
    env.from_async_iterable(asyncio.Queue()).sink_to(CollectSink())  # never ends
    client = await env.execute_async("cancelled")
    await wait_until(lambda: checkpoints_in(directory), "a checkpoint", within=TIMEOUT)
    await client.cancel()
    assert gone(directory)
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(client.wait(), TIMEOUT)


async def test_removed_when_cancelled_before_the_job_took_a_step() -> None:
    env = StreamExecutionEnvironment()
    env.enable_checkpointing(10)
    directory = temporary_dir(env)
    env.from_async_iterable(asyncio.Queue()).sink_to(CollectSink())
    client = await env.execute_async("cancelled at once")
    await client.cancel()
    assert gone(directory)


def test_removed_when_execute_in_a_running_loop_is_interrupted() -> None:
    """Ctrl-C on ``execute()`` in a running loop (a notebook cell) cancels the job: the
    directory is gone when ``execute()`` has returned."""
    env = StreamExecutionEnvironment(buffer_timeout_ms=0)
    env.enable_checkpointing(10)
    directory = temporary_dir(env)
    checkpointed = threading.Event()

    async def endless() -> AsyncIterator[int]:
        n = 0
        while True:
            if checkpoints_in(directory):
                checkpointed.set()
            yield n
            n += 1
            await asyncio.sleep(0.005)

    env.from_async_iterable(endless, bounded=False).sink_to(CollectSink())

    def interrupt() -> None:
        if checkpointed.wait(TIMEOUT):
            os.kill(os.getpid(), signal.SIGINT)

    async def cell() -> None:
        env.execute("endless")

    loop = asyncio.new_event_loop()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupter = threading.Thread(target=interrupt)
    try:
        interrupter.start()
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(cell())
    finally:
        interrupter.join()
        signal.signal(signal.SIGINT, previous)
        loop.close()
    assert checkpointed.is_set()
    assert gone(directory)


async def test_each_job_gets_its_own_temporary_directory() -> None:
    env = StreamExecutionEnvironment(buffer_timeout_ms=0)
    env.enable_checkpointing(10)
    first = temporary_dir(env)
    env.from_collection([1, 2]).sink_to(CollectSink())
    await (await env.execute_async("first")).wait()
    assert gone(first)
    second_sink = CollectSink()
    env.from_collection([3]).sink_to(second_sink)
    client = await env.execute_async("second")
    second = temporary_dir(env)
    assert second != first
    assert not gone(second)
    await asyncio.wait_for(client.wait(), TIMEOUT)
    assert second_sink.values == [3]
    assert gone(second)


def test_a_replaced_configuration_leaves_no_directory(tmp_path: Path) -> None:
    env = StreamExecutionEnvironment()
    env.enable_checkpointing(10)
    unused = temporary_dir(env)
    env.enable_checkpointing(20, directory=tmp_path / "mine")
    assert gone(unused)


def test_removed_with_an_environment_that_never_ran_a_job() -> None:
    env = StreamExecutionEnvironment()
    env.enable_checkpointing(10)
    env.from_collection([1]).sink_to(CollectSink())
    directory = temporary_dir(env)
    del env
    gc.collect()
    assert gone(directory)


def test_kept_for_an_executor_built_outside_execute_async() -> None:
    """A cluster's JobManager and TaskManagers build their executor from an environment
    they then drop; its checkpoint directory must outlive the environment."""
    env = StreamExecutionEnvironment()
    env.enable_checkpointing(10)
    env.from_collection([1]).sink_to(CollectSink())
    directory = temporary_dir(env)
    executor = env._executor("built by a cluster process")
    del env
    gc.collect()
    try:
        assert executor.config.checkpoint is not None
        assert executor.config.checkpoint.directory == directory
        assert not gone(directory)
    finally:
        os.rmdir(directory)


def test_removed_when_the_job_cannot_start(tmp_path: Path) -> None:
    env = StreamExecutionEnvironment()
    env.enable_checkpointing(10)
    directory = temporary_dir(env)
    env.from_collection([1]).sink_to(CollectSink())
    with pytest.raises(FileNotFoundError):
        env.execute("restores nothing", restore_from=tmp_path / "missing")
    assert gone(directory)


def test_a_directory_of_the_users_is_kept(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    env, _ = job(str(directory))
    env.execute("keeps its checkpoints")
    assert checkpoints_in(str(directory))
