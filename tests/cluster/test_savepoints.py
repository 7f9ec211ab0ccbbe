"""Stop with a savepoint on a cluster, and resume from it at another parallelism."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CHECKPOINT_TESTS
from counting_job import check_output

from flowkit.cluster import Dispatcher
from flowkit.testing.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

JOB = """
import sys
sys.path.insert(0, {tests!r})
import flowkit as fk
from counting_job import build_job


def build(env, args):
    env.set_parallelism(int(args[0]))
    env.enable_checkpointing(100, directory={ckpt!r})
    build_job(env, {out!r}, {records}, 0.001)
"""


async def test_stop_with_savepoint_then_resume_at_another_parallelism(
    cluster: Dispatcher, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    records = 5000
    source = JOB.format(
        tests=str(CHECKPOINT_TESTS), ckpt=str(tmp_path / "ckpt"), out=str(out), records=records
    )
    first = cluster.submit(source, "count.py", args=["2"])
    await wait_until(lambda: first.checkpoint_stats.num_completed >= 2, "checkpoints", within=60)
    savepoint = await first.trigger_savepoint(str(tmp_path / "sp"), stop=True)
    assert first.status == "FINISHED"
    assert (Path(savepoint.directory) / "_metadata").is_file()
    # the keyed reduce ran at parallelism 2; it resumes at 1 with every key's state
    second = cluster.submit(source, "count.py", args=["1"], restore_from=savepoint.directory)
    await wait_until(lambda: second.status in ("FINISHED", "FAILED"), "the end", within=60)
    assert second.status == "FINISHED", second.failure
    assert second.restored_from == savepoint.directory
    assert len(set(second.placement.values())) == 1
    check_output(out, records)
