"""Checks that apply to every test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

#: How long a job thread started by a test may take to end after the test.
JOB_THREAD_GRACE_S = 10.0


def _job_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "flowkit-execute" and t.is_alive()}


@pytest.fixture(autouse=True)
def no_job_thread_outlives_its_test() -> Iterator[None]:
    """``env.execute()`` called inside a running event loop runs the job on a
    ``flowkit-execute`` thread and must not return (or raise) before that thread ended.
    A test that leaves one running fails here, instead of a later test that counts
    threads."""
    before = _job_threads()
    yield
    left = _job_threads() - before
    deadline = time.monotonic() + JOB_THREAD_GRACE_S
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        left = {t for t in left if t.is_alive()}
    assert not left, f"{len(left)} job thread(s) still running after the test"
