"""Serializing and writing a state file in a forked child process.

Pickling a snapshot of keyed state takes the interpreter: on the event loop (in slices)
it costs the job a share of its loop for as long as the checkpoint takes, and a thread
would hold the same lock. ``fork()`` hands the subtask's memory, as it is at that
instant, to a child process in a few milliseconds (the kernel copies a page only when
one side writes to it). Forked at the barrier, the child snapshots, pickles, writes,
hashes and fsyncs the state on another core and exits, while the subtask goes on at
once (see :mod:`flowkit.runtime.checkpointing`).

The child runs nothing but the ``produce`` callable it is given and plain file writes:
no event loop, no logging, no locks of the parent's threads. It closes the parent's file
descriptors (a socket or pipe the parent closes must not stay open here) and turns the
garbage collector off (a collection would copy every page it walks). Its signals
(interrupt, terminate, hang-up, the user signals) are blocked, so a Ctrl-C meant for the
job does not reach it twice; it is killed with the parent (Linux), and by the parent
when the write is abandoned (checkpoint aborted, job cancelled). It reports ``size`` and
SHA-256 of the file, or what went wrong, through a pipe, and exits with ``os._exit`` (no
``atexit`` handlers, no buffered output flushed twice).

Only on Linux (:func:`can_fork`): elsewhere, and wherever a caller prefers, state is
serialized on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import hashlib
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["ChildFailedError", "ChildWrite", "ProduceError", "can_fork"]

Buffer = bytes | bytearray | memoryview

#: Signals the child blocks: those a user or a supervisor sends to a whole process group.
_BLOCKED = (
    {
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
    }
    if sys.platform.startswith("linux")
    else set()
)

#: How often a waiting parent checks whether the write was abandoned (seconds).
_POLL_S = 0.02
_PR_SET_PDEATHSIG = 1
_libc: Any = None


class ProduceError(ValueError):
    """``produce`` failed in the child process (e.g. a value could not be pickled); the
    message is the child's description of the exception."""


class ChildFailedError(OSError):
    """The child process could not write the file, or ended without reporting."""


def can_fork() -> bool:
    """Whether state files can be written by a forked child process here (Linux).

    Example:
        >>> isinstance(can_fork(), bool)
        True
    """
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def _die_with_parent(parent: int) -> None:
    try:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # no prctl: the child still ends when its work does
        pass
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(3)


def _child(result_fd: int, tmp: str, produce: Callable[[], Sequence[Buffer]], parent: int) -> None:
    """The child's whole life: produce, write, fsync, report, exit."""
    code = 1
    message = b"error\nthe child process stopped before reporting"
    try:
        gc.disable()  # a collection would copy every page it walks, for nothing
        _die_with_parent(parent)
        # The parent's sockets, pipes and files: a copy held here would keep a peer
        # from seeing them closed until this process ends.
        os.closerange(3, result_fd)
        os.closerange(result_fd + 1, _max_fd())
        try:
            parts = produce()
        except BaseException as exc:
            message = b"produce\n" + str(exc).encode("utf-8", "replace")
        else:
            digest = hashlib.sha256()
            size = 0
            with open(tmp, "xb", buffering=1 << 20) as f:
                for part in parts:
                    view = memoryview(part).cast("B")
                    f.write(view)
                    digest.update(view)
                    size += len(view)
                f.flush()
                os.fsync(f.fileno())
            message = b"ok\n%d %s" % (size, digest.hexdigest().encode())
            code = 0
    except BaseException as exc:
        message = b"error\n" + repr(exc).encode("utf-8", "replace")
    finally:
        try:
            view = memoryview(message[:60_000])
            while view:
                view = view[os.write(result_fd, view) :]
        finally:
            os._exit(code)


def _fork() -> int:
    """``os.fork()`` with the child's signals blocked from its first instruction."""
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            _libc = ctypes.CDLL(None, use_errno=True)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork() in a process with threads: the child here
            # uses no lock another thread could hold (no logging, no I/O objects of the
            # parent; CPython keeps the import lock and the allocator consistent).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return pid


def _max_fd() -> int:
    try:
        return max(int(os.sysconf("SC_OPEN_MAX")), 1024)
    except (OSError, ValueError):
        return 65536


class ChildWrite:
    """A child process, forked when this is created, that writes ``produce()`` (buffers,
    one after the other) to the new file ``tmp`` and fsyncs it.

    The fork is synchronous: the child sees memory as it is at this call, whatever the
    parent does afterwards. :meth:`result` waits for it; :meth:`stop` kills it. One of
    the two must be awaited (or :meth:`discard` called) for every child: that reaps it
    and removes ``tmp`` unless the write succeeded (the caller renames ``tmp`` then).

    Raises:
        OSError: The fork failed (e.g. no memory for the page tables).
    """

    __slots__ = ("_fd", "_stopping", "pid", "tmp")

    def __init__(self, tmp: str, produce: Callable[[], Sequence[Buffer]]) -> None:
        self.tmp = tmp
        self._stopping: asyncio.Task[None] | None = None
        read_fd, write_fd = os.pipe()
        try:
            parent = os.getpid()
            pid = _fork()
            if pid == 0:  # pragma: no cover - the child never returns (it is not traced)
                os.close(read_fd)
                _child(write_fd, tmp, produce, parent)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        #: The child's process id; -1 once it is reaped.
        self.pid = pid
        self._fd = read_fd

    async def result(self, check: Callable[[], None] = lambda: None) -> tuple[int, str]:
        """The file's ``(size, SHA-256 hex digest)`` once the child wrote it and ended.

        ``check`` is called every few milliseconds while the child works: when it
        raises, or this coroutine is cancelled, the child is stopped (:meth:`stop`) and
        the exception goes on.

        Raises:
            ProduceError: ``produce`` raised in the child.
            ChildFailedError: The file could not be written, or the child died.
        """
        try:
            report = await _read_report(asyncio.get_running_loop(), self._fd, check)
            status = await asyncio.shield(_reap(self.pid))
            self.pid = -1
        except BaseException:
            await asyncio.shield(self.stop())
            raise
        finally:
            self._close()
        kind, _, text = report.partition(b"\n")
        if kind == b"ok" and status == 0:
            size, digest = text.split()
            return int(size), digest.decode()
        _remove(self.tmp)
        detail = text.decode("utf-8", "replace")
        if kind == b"produce":
            raise ProduceError(detail)
        if kind == b"error":
            raise ChildFailedError(f"writing {self.tmp} in a child process failed: {detail}")
        raise ChildFailedError(
            f"the child process writing {self.tmp} ended without a report ({_describe(status)})"
        )

    def stop(self) -> asyncio.Task[None]:
        """Kill the child if it still runs; the task ends once it is reaped and ``tmp``
        removed (after the child, which may be creating it). Idempotent."""
        if self._stopping is None:
            self._close()
            self._stopping = asyncio.get_running_loop().create_task(self._stop())
        return self._stopping

    def discard(self) -> asyncio.Task[None]:
        """:meth:`stop` for a caller that cannot wait: the module keeps the task."""
        task = self.stop()
        _STOPPING.add(task)
        task.add_done_callback(_STOPPING.discard)
        return task

    async def _stop(self) -> None:
        pid = self.pid
        if pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await _reap(pid)
            self.pid = -1
        _remove(self.tmp)

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


#: Children being stopped for owners that could not wait (see :meth:`ChildWrite.discard`).
_STOPPING: set[asyncio.Task[None]] = set()


async def _read_report(
    loop: asyncio.AbstractEventLoop, fd: int, check: Callable[[], None]
) -> bytes:
    """Everything the child writes to the pipe, until it closes it (by exiting)."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except BlockingIOError:
            return
        except OSError as exc:
            if not ended.done():
                ended.set_exception(exc)
            return
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(fd, readable)
    try:
        while not ended.done():
            await asyncio.wait((ended,), timeout=_POLL_S)
            if not ended.done():
                check()
        ended.result()
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)


async def _reap(pid: int) -> int:
    """Wait for ``pid`` to end, in a worker thread (a child in the middle of an fsync
    can take a while to die); its wait status."""
    try:
        return (await asyncio.to_thread(os.waitpid, pid, 0))[1]
    except ChildProcessError:  # reaped already (by a stop racing a result)
        return -1


def _describe(status: int) -> str:
    if status < 0:
        return "its exit status was collected elsewhere"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"killed by {name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
