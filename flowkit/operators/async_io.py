"""Async I/O: ``ds.map_async(async_fn, ...)``, Flink's AsyncWaitOperator for asyncio.

Every record starts one call of the user's ``async def`` as an asyncio task owned by the
operator. At most ``capacity`` records are held at once (calls in flight plus results not
yet emitted); records beyond that wait in a local backlog and the operator reports
``pending`` so that the subtask stops taking input: that is backpressure.

Tasks never emit anything themselves. Their done callback only records the completion and
wakes the subtask, which calls :meth:`AsyncMapOperator.process_mail` (or is inside
:meth:`~AsyncMapOperator.drain` / :meth:`~AsyncMapOperator.wait_idle`) and emits every
result that may leave, in one batch.

Ordering follows Flink's stream element queues:

* ordered: results leave in input order; a watermark leaves once every record before it
  has left.
* unordered: results leave as they complete, but watermarks are barriers. The queue is a
  sequence of segments (a set of records, or one watermark); only the first segment may
  emit, so no record overtakes a watermark and no watermark overtakes a record.

A call slower than ``timeout_ms`` is cancelled; the ``timeout`` handler's result is then
emitted in the record's place (None: nothing), or, without a handler, the job fails.

Checkpoints: the records held at a barrier (calls in flight, results not yet emitted, the
backlog) are part of the operator's state, as in Flink. :meth:`~AsyncMapOperator.
snapshot_state` returns their inputs with their timestamps, in input order, with the
watermarks queued between them; after a restore, ``open()`` issues the calls again before
any new input, so every record whose result had not left before the barrier produces it
exactly once. Results emitted after the barrier belong to the next checkpoint, so they are
produced again after a restore, which rewinds everything downstream to the barrier.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from itertools import repeat
from typing import Any, cast

from flowkit.operators.base import (
    NO_RECORD,
    Batch,
    OneInputOperator,
    Timestamps,
    call_close,
    call_open,
    copy_function,
)
from flowkit.operators.simple import FunctionStateOperator

__all__ = ["AsyncMapOperator"]

#: Seconds a cancelled subtask waits for its cancelled calls to finish unwinding.
CANCEL_GRACE_SECONDS = 1.0


class _Skip:
    """Marks a record whose timeout handler returned None: it emits nothing."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<skip>"


_SKIP: Any = _Skip()
#: Result of a call that timed out with no handler (the job fails).
_TIMED_OUT: Any = object()
#: Snapshot keys: the held records and watermarks, and the subtask that held them.
_ELEMENTS = "async_elements"
_SUBTASK = "async_subtask"


class _Segment:
    """Records of the unordered queue between two watermarks."""

    __slots__ = ("held", "incomplete", "ready")

    def __init__(self) -> None:
        #: Every entry of the segment not yet emitted, in input order (for snapshots).
        self.held: dict[_Entry, None] = {}
        #: Entries completed (skipped ones included) but not yet emitted.
        self.ready: list[_Entry] = []
        #: Calls of this segment still running.
        self.incomplete = 0


class _Entry:
    """One record in the queue: its input, its timestamp and, once done, its result."""

    __slots__ = ("done", "result", "segment", "timestamp", "value")

    def __init__(self, value: Any, timestamp: Any, segment: _Segment | None) -> None:
        self.value = value
        self.timestamp = timestamp
        self.segment = segment
        self.done = False
        self.result: Any = None


def _noop() -> None:
    return None


def _resolve_async_function(function: Any, name: str) -> Callable[[Any], Any]:
    """The callable to invoke per record: ``async_invoke``/``map`` of a class, else itself."""
    for method in ("async_invoke", "map"):
        bound = getattr(function, method, None)
        if bound is not None and callable(bound) and not isinstance(function, type):
            return cast("Callable[[Any], Any]", bound)
    if callable(function):
        return cast("Callable[[Any], Any]", function)
    raise TypeError(
        f"{name} expects an async function or an object with an async map() method, "
        f"got {function!r}"
    )


def _results(result: Any) -> list[Any]:
    """The records of an ``AsyncFunction`` call: the collection it returned, as a list
    (None: no records).

    Raises:
        TypeError: ``result`` is not a collection (a str counts as one value).
    """
    if result is None:
        return []
    if isinstance(result, (list, tuple)):
        return list(result)
    if isinstance(result, (str, bytes, dict)) or not isinstance(result, Iterable):
        raise TypeError(
            f"async_invoke() must return a collection of results (e.g. [value]), got "
            f"{type(result).__name__} {result!r}"
        )
    return list(result)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class AsyncMapOperator(FunctionStateOperator, OneInputOperator):
    """Calls ``await async_fn(value)`` for each record, ``capacity`` records at a time.

    Args:
        name: operator name (shown in plans and errors).
        async_fn: an ``async def`` taking one record, or an object whose ``async_invoke``
            or ``map`` method is one (with optional ``open(ctx)`` / ``close()``,
            ``timeout(value)`` and the ``CheckpointedFunction`` hooks).
        capacity: most records held at once (running calls and unemitted results).
        timeout_ms: per-call timeout in milliseconds (None: no timeout).
        ordered: emit in input order (True) or as calls complete (False).
        timeout: called with the record when its call timed out; its return value is
            emitted instead (None: nothing). Without it a timeout fails the job.
    """

    is_async = True

    def __init__(
        self,
        name: str,
        async_fn: Any,
        capacity: int = 100,
        timeout_ms: float | None = None,
        ordered: bool = True,
        timeout: Callable[[Any], Any] | None = None,
        flatten: bool = False,
        retry_strategy: Any = None,
    ) -> None:
        super().__init__(name)
        if capacity < 1:
            raise ValueError(f"{name}: capacity must be >= 1, got {capacity!r}")
        self.function = copy_function(async_fn)
        self.fn = _resolve_async_function(self.function, name)
        #: Each call returns a collection of results, each emitted (PyFlink's
        #: ``AsyncFunction``); else a call's return value is one record.
        self.flatten = flatten
        #: An ``AsyncRetryStrategy``: calls it asks to retry are made again.
        self.retry_strategy = retry_strategy
        if timeout is None:
            handler = getattr(self.function, "timeout", None)
            if handler is not None and callable(handler) and not inspect.isfunction(self.function):
                timeout = handler
        self.timeout_handler = timeout
        self.capacity = capacity
        self.timeout_ms = timeout_ms
        self._timeout_s = None if timeout_ms is None else timeout_ms / 1000
        self.ordered = ordered
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: Callable[[], None] = _noop
        #: Running calls and the entry each one completes.
        self._running: dict[asyncio.Future[Any], _Entry] = {}
        #: Ordered mode: entries and watermarks (ints) in input order.
        self._queue: deque[Any] = deque()
        #: Unordered mode: segments and watermarks (ints) in input order.
        self._segments: deque[Any] = deque()
        #: Records (value, timestamp) and watermarks (ints) not yet admitted.
        self._backlog: deque[Any] = deque()
        #: Records admitted and not yet emitted.
        self._occupied = 0
        self._mail = False
        self._error: BaseException | None = None
        self._error_detail = ""
        self._error_record: Any = NO_RECORD
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        #: Restored records (value, timestamp) and watermarks (ints), issued by ``open()``.
        self._restored: list[Any] = []

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.ctx is not None:
            self._wake = self.ctx.wake
        self.initialize_function_state()
        try:
            call_open(self.function, self.runtime_context)
        except Exception as exc:
            raise self.fail(exc, "in open()") from exc
        restored = self._restored
        if restored:
            # Issue the restored records again, in order and before any new input; those
            # beyond the capacity wait in the backlog, so the subtask drains them first.
            self._restored = []
            self._backlog.extend(restored)
            self._admit_backlog()

    def close(self) -> None:
        """Cancel every call still running (nothing is left behind) and close the function."""
        self._closed = True
        self._cancel_running()
        self._backlog.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.cancel()
        call_close(self.function)

    def _cancel_running(self) -> None:
        for task in self._running:
            task.cancel()

    # ------------------------------------------------------------------ input
    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        n = len(values)
        start = 0
        if not self._backlog:
            start = min(n, self.capacity - self._occupied)
            admit = self._admit
            if timestamps is None:
                for i in range(start):
                    admit(values[i], None)
            else:
                for i in range(start):
                    admit(values[i], timestamps[i])
        if start < n:
            if timestamps is None:
                self._backlog.extend((v, None) for v in values[start:])
            else:
                self._backlog.extend(zip(values[start:], timestamps[start:]))

    def process_watermark(self, timestamp: int) -> None:
        if self._backlog:
            self._backlog.append(timestamp)
        else:
            self._enqueue_watermark(timestamp)

    def _enqueue_watermark(self, timestamp: int) -> None:
        queue = self._queue if self.ordered else self._segments
        if queue:
            queue.append(timestamp)
        else:
            self.output.emit_watermark(timestamp)

    def _admit(self, value: Any, timestamp: Any) -> None:
        """Start the call for one record and put it into the queue."""
        try:
            call = self.fn(value) if self.retry_strategy is None else self._retrying(value)
        except Exception as exc:
            raise self.fail(exc, record=value) from exc
        if self.ordered:
            entry = _Entry(value, timestamp, None)
            self._queue.append(entry)
        else:
            segments = self._segments
            segment = segments[-1] if segments else None
            if type(segment) is not _Segment:
                segment = _Segment()
                segments.append(segment)
            segment.incomplete += 1
            entry = _Entry(value, timestamp, segment)
            segment.held[entry] = None
        self._occupied += 1
        if self._timeout_s is not None:
            if not inspect.isawaitable(call):
                self._complete(entry, call)
                return
            coro = self._call_with_timeout(call, entry)
        elif inspect.iscoroutine(call):
            coro = call
        elif inspect.isawaitable(call):
            coro = _await(call)
        else:
            self._complete(entry, call)
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = loop.create_task(coro)
        self._running[task] = entry
        task.add_done_callback(self._on_done)

    def _admit_backlog(self) -> None:
        backlog = self._backlog
        while backlog:
            item = backlog[0]
            if type(item) is int:
                backlog.popleft()
                self._enqueue_watermark(item)
                continue
            if self._occupied >= self.capacity:
                return
            backlog.popleft()
            self._admit(item[0], item[1])

    async def _retrying(self, value: Any) -> Any:
        """Call the function for ``value`` until the retry strategy is content (or gives
        up): the last attempt's result, or its error."""
        strategy = self.retry_strategy
        attempt = 1
        while True:
            error: Exception | None = None
            result: Any = None
            try:
                result = self.fn(value)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                error = exc
            if strategy.should_retry(result, error) and strategy.can_retry(attempt):
                await asyncio.sleep(max(strategy.get_backoff_time_millis(attempt), 0) / 1000)
                attempt += 1
                continue
            if error is not None:
                raise error
            return result

    async def _call_with_timeout(self, call: Awaitable[Any], entry: _Entry) -> Any:
        scope = asyncio.timeout(self._timeout_s)
        try:
            async with scope:
                return await call
        except TimeoutError as exc:
            if not scope.expired():
                raise  # the user's own TimeoutError
            handler = self.timeout_handler
            value = entry.value
            if handler is None:
                entry.result = _TIMED_OUT
                raise TimeoutError(
                    f"async call timed out after {self.timeout_ms} ms for a record of type "
                    f"{type(value).__name__}"
                ) from exc
            result = handler(value)
            if inspect.isawaitable(result):
                result = await result
            return _SKIP if result is None else result

    # ------------------------------------------------------------------ completion
    def _on_done(self, task: asyncio.Future[Any]) -> None:
        """Done callback of a call: record the outcome and wake the subtask; emit nothing."""
        entry = self._running.pop(task, None)
        if task.cancelled():
            if entry is None or self._closed:
                return
            self._record_error(
                asyncio.CancelledError("the async call was cancelled"), "", entry.value
            )
            return
        exc = task.exception()  # also marks the exception as retrieved
        if entry is None or self._closed:
            return
        if exc is not None:
            self._record_error(exc, "timeout" if entry.result is _TIMED_OUT else "", entry.value)
            return
        self._complete(entry, task.result())

    def _complete(self, entry: _Entry, result: Any) -> None:
        if self.flatten and result is not _SKIP:
            try:
                result = _results(result)
            except TypeError as exc:
                self._record_error(exc, "", entry.value)
                return
        if self.ordered:
            entry.done = True
            entry.result = result
            queue = self._queue
            if queue and queue[0] is entry:
                self._notify()
            return
        segment = entry.segment
        assert segment is not None
        segment.incomplete -= 1
        entry.done = True
        entry.result = result
        segment.ready.append(entry)
        segments = self._segments
        if segments and segments[0] is segment:
            self._notify()

    def _record_error(self, exc: BaseException, detail: str, record: Any = NO_RECORD) -> None:
        if self._error is None:
            self._error = exc
            self._error_detail = detail
            self._error_record = record
        self._notify()

    def _notify(self) -> None:
        self._mail = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._wake()

    # ------------------------------------------------------------------ subtask hooks
    @property
    def pending(self) -> bool:
        return self._occupied >= self.capacity or bool(self._backlog)

    @property
    def has_mail(self) -> bool:
        return self._mail

    @property
    def records_waiting(self) -> int:
        """Records taken and not started yet (waiting for capacity), for the metrics."""
        backlog = self._backlog
        if not backlog:
            return 0
        return sum(1 for item in backlog if type(item) is not int)

    def process_mail(self) -> None:
        """Emit every result (and watermark) that may leave now, then admit waiting input."""
        self._mail = False
        self._raise_failure()
        if self.ordered:
            self._emit_ordered()
        else:
            self._emit_unordered()
        if self._backlog:
            self._admit_backlog()

    async def drain(self) -> None:
        """Wait until the operator can take more input, emitting what completes meanwhile."""
        while True:
            self.process_mail()
            if self._mail:  # calls completed synchronously while admitting
                self.process_mail()
            if not self.pending:
                return
            await self._wait_for_completion()

    async def wait_idle(self) -> None:
        """End of input: wait until every record and watermark held here was emitted."""
        while True:
            self.process_mail()
            if self._mail:
                self.process_mail()
            if not self._backlog and not (self._queue if self.ordered else self._segments):
                return
            await self._wait_for_completion()

    async def _wait_for_completion(self) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        except asyncio.CancelledError:
            # The job is being cancelled: stop every call and let them unwind here.
            self._closed = True
            self._cancel_running()
            running = list(self._running)
            if running:
                await asyncio.wait(running, timeout=CANCEL_GRACE_SECONDS)
            raise
        finally:
            self._waiter = None

    def _raise_failure(self) -> None:
        exc = self._error
        if exc is not None:
            raise self.fail(exc, self._error_detail, self._error_record) from exc

    # ------------------------------------------------------------------ checkpoints
    def snapshot_state(self, checkpoint_id: int) -> Any:
        """The input records held here and the watermarks between them, in input order,
        next to the function's operator state (if it has ``CheckpointedFunction`` hooks).

        Records are ``(value, timestamp)`` pairs (calls in flight, results not emitted
        yet, the backlog); watermarks are ints. The list is built here, so processing after
        the barrier does not change it. None when there is nothing to keep.
        """
        state = super().snapshot_state(checkpoint_id)
        elements: list[Any] = []
        append = elements.append
        if self.ordered:
            for item in self._queue:
                if type(item) is int:
                    append(item)
                else:
                    append((item.value, item.timestamp))
        else:
            for item in self._segments:
                if type(item) is int:
                    append(item)
                else:
                    elements.extend((entry.value, entry.timestamp) for entry in item.held)
        elements.extend(self._backlog)
        if not elements:
            return state
        index = 0 if self.ctx is None else self.ctx.subtask_index
        held = {_ELEMENTS: elements, _SUBTASK: index}
        return {**state, **held} if isinstance(state, dict) else held

    def initialize_state(self, states: list[Any]) -> None:
        """Keep the held records of the old subtasks assigned to this one (old subtask
        ``j`` goes to ``j % parallelism``); ``open()`` issues them again."""
        super().initialize_state(states)  # the function's operator state, if any
        ctx = self.ctx
        index, parallelism = (0, 1) if ctx is None else (ctx.subtask_index, ctx.parallelism)
        restored: list[Any] = []
        for state in states:
            if (
                isinstance(state, dict)
                and _ELEMENTS in state
                and state.get(_SUBTASK, index) % parallelism == index
            ):
                restored.extend(state[_ELEMENTS])
        self._restored = restored

    # ------------------------------------------------------------------ emission
    def _emit_ordered(self) -> None:
        queue = self._queue
        values: list[Any] = []
        stamps: list[Any] = []
        popleft = queue.popleft
        freed = 0
        while queue:
            head = queue[0]
            if type(head) is int:
                popleft()
                if values:
                    self._collect(values, stamps)
                    values = []
                    stamps = []
                self.output.emit_watermark(head)
                continue
            if not head.done:
                break
            popleft()
            freed += 1
            result = head.result
            if result is _SKIP:
                continue
            if self.flatten:
                values.extend(result)
                stamps.extend(repeat(head.timestamp, len(result)))
            else:
                values.append(result)
                stamps.append(head.timestamp)
        self._occupied -= freed
        if values:
            self._collect(values, stamps)

    def _emit_unordered(self) -> None:
        segments = self._segments
        while segments:
            head = segments[0]
            if type(head) is int:
                segments.popleft()
                self.output.emit_watermark(head)
                continue
            ready = head.ready
            if ready:
                head.ready = []
                self._occupied -= len(ready)
                held = head.held
                values: list[Any] = []
                stamps: list[Any] = []
                flatten = self.flatten
                for entry in ready:
                    del held[entry]
                    result = entry.result
                    if result is _SKIP:
                        continue
                    if flatten:
                        values.extend(result)
                        stamps.extend(repeat(entry.timestamp, len(result)))
                    else:
                        values.append(result)
                        stamps.append(entry.timestamp)
                if values:
                    self._collect(values, stamps)
            if head.incomplete:
                return
            segments.popleft()

    def _collect(self, values: list[Any], stamps: list[Any]) -> None:
        if stamps.count(None) == len(stamps):
            self.output.collect(values, None)
        else:
            self.output.collect(values, stamps)
