"""The cluster's control plane: calls and notifications between its processes.

The Dispatcher, the ResourceManager and the JobManagers live in one process; every
TaskManager keeps one connection to it (a Unix domain socket) and both ends use it in
both directions, as Flink's RPC gateways do: the TaskManager registers and sends
heartbeats, task state changes and checkpoint acknowledgements; the JobManager deploys
and cancels tasks and triggers checkpoints.

A frame is a 4-byte big-endian length and a pickled tuple: ``("call", id, method,
kwargs)``, ``("reply", id, ok, value)`` or ``("notify", method, kwargs)``. Both ends are
processes of the same cluster started by the same user, so pickle is the right codec:
job configuration, checkpoint handles and exceptions travel as they are.

A method ``m`` of the remote end is the handler's ``rpc_m`` (plain function or
coroutine function). Every handler runs in a task that :class:`RpcPeer` owns; a handler
that raises on a call sends the exception back, one that raises on a notification is
logged.

Example:
    >>> import asyncio
    >>> class Echo:
    ...     def rpc_echo(self, text):
    ...         return text
    >>> async def demo(path):
    ...     server = await serve_rpc(path, lambda peer: Echo())
    ...     peer = await connect_rpc(path, object())
    ...     try:
    ...         return await peer.call("echo", text="hi")
    ...     finally:
    ...         await peer.close()
    ...         server.close()
    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     asyncio.run(demo(os.path.join(d, "rpc.sock")))
    'hi'
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import pickle
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["RpcError", "RpcPeer", "connect_rpc", "serve_rpc"]

_log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
#: Largest control message accepted (a deployment carries the job's configuration only).
MAX_FRAME = 64 * 1024 * 1024


class RpcError(ConnectionError):
    """The other end is gone (or went away while a call waited for its reply)."""


class RpcPeer:
    """One end of a control connection.

    Args:
        reader: the connection's stream reader.
        writer: the connection's stream writer.
        handler: an object whose ``rpc_<method>`` answers the other end's calls.
        name: for logs and errors (e.g. ``"taskmanager tm-1"``).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handler: Any,
        name: str = "peer",
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.handler = handler
        self.name = name
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader_task: asyncio.Task[None] | None = None
        #: Set when the connection ended; callbacks run once.
        self.closed = asyncio.Event()
        self._on_close: list[Callable[[RpcPeer], Any]] = []

    def start(self) -> None:
        """Start reading (the peer owns its reading task)."""
        self._reader_task = asyncio.get_running_loop().create_task(
            self._read_loop(), name=f"rpc {self.name}"
        )

    def on_close(self, callback: Callable[[RpcPeer], Any]) -> None:
        """Call ``callback(peer)`` once the connection has ended."""
        self._on_close.append(callback)

    # ------------------------------------------------------------------ sending
    def _send(self, message: tuple[Any, ...]) -> None:
        if self.closed.is_set() or self.writer.is_closing():
            raise RpcError(f"the connection to {self.name} is closed")
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.writer.write(_LENGTH.pack(len(payload)) + payload)

    async def call(self, method: str, reply_timeout: float | None = 30.0, **kwargs: Any) -> Any:
        """Call ``method`` on the other end and return its result.

        Raises:
            RpcError: the connection is or went closed.
            TimeoutError: no reply within ``reply_timeout`` seconds.
            Exception: whatever the remote handler raised.
        """
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        try:
            self._send(("call", call_id, method, kwargs))
            await self.writer.drain()
            async with asyncio.timeout(reply_timeout):
                return await future
        finally:
            self._calls.pop(call_id, None)

    def notify(self, method: str, **kwargs: Any) -> None:
        """Send ``method`` without waiting for an answer (dropped, with a DEBUG line, when
        the connection is closed)."""
        try:
            self._send(("notify", method, kwargs))
        except RpcError:
            _log.debug("dropped %s to %s: connection closed", method, self.name)

    # ------------------------------------------------------------------ receiving
    async def _read_loop(self) -> None:
        try:
            while True:
                header = await self.reader.readexactly(_LENGTH.size)
                (size,) = _LENGTH.unpack(header)
                if size > MAX_FRAME:
                    raise RpcError(f"{self.name} sent a frame of {size} bytes (limit {MAX_FRAME})")
                message = pickle.loads(await self.reader.readexactly(size))
                self._dispatch(message)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception:
            _log.exception("control connection to %s failed", self.name)
        finally:
            self._closed()

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "reply":
            _, call_id, ok, value = message
            future = self._calls.get(call_id)
            if future is not None and not future.done():
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        elif kind == "call":
            _, call_id, method, kwargs = message
            self._spawn(self._answer(call_id, method, kwargs))
        elif kind == "notify":
            _, method, kwargs = message
            self._spawn(self._run_notification(method, kwargs))
        else:
            _log.error("unknown control message %r from %s", kind, self.name)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _invoke(self, method: str, kwargs: dict[str, Any]) -> Any:
        fn = getattr(self.handler, f"rpc_{method}", None)
        if fn is None:
            raise AttributeError(f"{type(self.handler).__name__} has no rpc method {method!r}")
        result = fn(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _answer(self, call_id: int, method: str, kwargs: dict[str, Any]) -> None:
        try:
            value = await self._invoke(method, kwargs)
            reply: tuple[Any, ...] = ("reply", call_id, True, value)
        except Exception as exc:
            reply = ("reply", call_id, False, _picklable(exc))
        try:
            self._send(reply)
        except RpcError:
            pass

    async def _run_notification(self, method: str, kwargs: dict[str, Any]) -> None:
        try:
            await self._invoke(method, kwargs)
        except Exception:
            _log.exception("handling %s from %s failed", method, self.name)

    def _closed(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for future in self._calls.values():
            if not future.done():
                future.set_exception(RpcError(f"the connection to {self.name} was lost"))
        if not self.writer.is_closing():
            self.writer.close()
        for callback in self._on_close:
            try:
                callback(self)
            except Exception:
                _log.exception("close callback of %s failed", self.name)

    async def close(self) -> None:
        """Close the connection and stop the handlers still running."""
        if not self.writer.is_closing():
            self.writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._closed()


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


async def serve_rpc(path: str, handler_for: Callable[[RpcPeer], Any]) -> asyncio.Server:
    """Accept control connections on the Unix socket ``path``; ``handler_for(peer)``
    gives each connection's handler."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = RpcPeer(reader, writer, None, name="client")
        peer.handler = handler_for(peer)
        peer.start()
        await peer.closed.wait()

    return await asyncio.start_unix_server(accept, path=path)


async def connect_rpc(path: str, handler: Any, name: str = "dispatcher") -> RpcPeer:
    """Open a control connection to the Unix socket ``path``."""
    reader, writer = await asyncio.open_unix_connection(path)
    peer = RpcPeer(reader, writer, handler, name=name)
    peer.start()
    return peer
