"""A busy job leaves worker threads the GIL: state file writes, connector I/O threads and
``asyncio.to_thread`` calls beside a job must not wait for seconds to start."""

from __future__ import annotations

import asyncio
import itertools
import time

import flowkit as fk


async def test_worker_threads_start_promptly_while_a_job_keeps_the_loop_busy() -> None:
    env = fk.StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(0, 10**10).key_by(lambda i: i % 1000).map(_busy).sink_to(_Discard())
    client = await env.execute_async("busy")
    try:
        await asyncio.sleep(0.2)  # the job is running flat out
        started = []
        loop_start = time.perf_counter()

        def mark() -> None:
            started.append(time.perf_counter())

        async with asyncio.timeout(20):
            for _ in range(50):
                await asyncio.to_thread(mark)
        took = time.perf_counter() - loop_start
        assert not client.done()  # all of it happened while the job ran
        # 50 round trips to a worker thread: a few ms each when the GIL is handed over;
        # a starved thread waits hundreds of ms to seconds each time.
        assert len(started) == 50
        assert took < 10, f"50 to_thread calls took {took:.1f} s beside a busy job"
    finally:
        await asyncio.wait_for(client.cancel(), 30)


def _busy(i: int) -> int:
    return sum(range(i % 7, 60))  # a few microseconds per record: the loop never idles


class _DiscardWriter(fk.SinkWriter):
    def write_batch(self, values: list[object], timestamps: list[object] | None) -> None:
        pass


class _Discard(fk.Sink):
    def create_writer(self, subtask_index: int, parallelism: int) -> fk.SinkWriter:
        return _DiscardWriter()


async def test_a_buffer_of_many_small_records_is_processed_in_steps_between_loop_turns() -> None:
    """A 64 KiB buffer holds about 16,000 small ints; the consumer hands them to its
    operators in steps and lets the loop turn between them, so a coroutine beside the
    job runs while a buffer is still being worked through."""
    turns = [0]
    seen: list[int] = []

    def slow_map(i: int) -> int:
        seen.append(turns[0])
        end = time.perf_counter() + 5e-6
        while time.perf_counter() < end:
            pass
        return i

    env = fk.StreamExecutionEnvironment(parallelism=1, buffer_size=64 * 1024)
    env.from_sequence(0, 99_999).rebalance().map(slow_map).sink_to(_Discard())
    client = await env.execute_async("steps")
    async with asyncio.timeout(60):
        while not client.done():
            turns[0] += 1
            await asyncio.sleep(0)
        await client.wait()
    assert len(seen) == 100_000
    longest = max(len(list(run)) for _, run in itertools.groupby(seen))
    # a whole buffer in one step would leave ~16,000 records between two turns
    assert longest <= 4 * 1024, longest
