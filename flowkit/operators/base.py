"""StreamOperator lifecycle, Output wiring, and the context operators are set up with."""

from __future__ import annotations

import collections
import copy
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from flowkit.elements import MIN_WATERMARK, OutputTag
from flowkit.errors import FlowkitError, InvalidTimestampError, UserFunctionError
from flowkit.eventtime.clocks import Clock, SystemClock, TimerHandle
from flowkit.functions import RuntimeContext

__all__ = [
    "KEY_SELECTOR",
    "NO_RECORD",
    "OneInputOperator",
    "OperatorContext",
    "Output",
    "StreamOperator",
    "TwoInputOperator",
    "call_close",
    "call_open",
    "copy_function",
    "key_selector_fails",
    "resolve_function",
]

Batch = list[Any]
Timestamps = list[Any] | None

#: ``detail`` of the errors of key selectors (see :meth:`StreamOperator.fail`).
KEY_SELECTOR = "in the key selector"

#: ``record`` of :meth:`StreamOperator.fail` when no record caused the error.
NO_RECORD: Any = object()


def _drop_batch(values: Batch, timestamps: Timestamps) -> None:
    return None


def _drop_watermark(timestamp: int) -> None:
    return None


def _drop_status(idle: bool) -> None:
    return None


def _drop_marker(marker: Any) -> None:
    return None


#: Latency samples kept per source subtask for an operator's histogram.
LATENCY_SAMPLES = 1024


class Output:
    """Where an operator sends its results: chained operators and/or record writers.

    ``collect(values, timestamps)`` takes a batch; ``emit_watermark(ts)`` reaches every
    downstream target, side outputs included; ``sides`` maps a side-output tag id to the
    Output of its consumers (tags with no consumer are dropped).
    """

    __slots__ = ("collect", "emit_marker", "emit_status", "emit_watermark", "sides")

    def __init__(
        self,
        collect: Callable[[Batch, Timestamps], None] = _drop_batch,
        emit_watermark: Callable[[int], None] = _drop_watermark,
        sides: dict[str, Output] | None = None,
        emit_status: Callable[[bool], None] = _drop_status,
    ) -> None:
        self.collect = collect
        self.emit_watermark = emit_watermark
        #: ``emit_status(idle)``: the stream became idle (True) or active again (False).
        self.emit_status = emit_status
        #: ``emit_marker(marker)``: a latency marker goes on to one downstream target.
        self.emit_marker: Callable[[Any], None] = _drop_marker
        self.sides: dict[str, Output] = {} if sides is None else sides

    def collect_side(self, tag_id: str, values: Batch, timestamps: Timestamps) -> None:
        side = self.sides.get(tag_id)
        if side is not None and values:
            side.collect(values, timestamps)


def _run_now(steps: Iterator[None]) -> None:
    for _ in steps:
        pass


class OperatorContext:
    """What the runtime tells an operator when it is set up in a subtask."""

    def __init__(
        self,
        task_name: str,
        subtask_index: int,
        parallelism: int,
        max_parallelism: int,
        wake: Callable[[], None] | None = None,
        clock: Clock | None = None,
        post_mail: Callable[[Callable[[], None]], None] | None = None,
        checkpointing: bool = False,
        run_in_steps: Callable[[Iterator[None]], None] | None = None,
    ) -> None:
        self.task_name = task_name
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self.max_parallelism = max_parallelism
        #: Wakes the subtask's loop (used by operators with asynchronous work).
        self.wake = wake or (lambda: None)
        #: The job's processing-time clock (epoch milliseconds; callable for the time).
        self.clock: Clock = clock or SystemClock()
        #: Whether the job takes checkpoints (two-phase-commit sinks commit on them).
        self.checkpointing = checkpointing
        #: Runs an action inside the subtask between two steps.
        self.post_mail = post_mail or (lambda action: action())
        #: Runs long work (an iterator that yields between its parts) before the subtask
        #: takes more input, letting the event loop run other tasks between the parts;
        #: without a subtask (a test harness), all of it at once.
        self.run_in_steps: Callable[[Iterator[None]], None] = run_in_steps or _run_now

    def schedule(self, time_ms: int, action: Callable[[], None]) -> TimerHandle:
        """Run ``action`` inside the subtask once processing time reaches ``time_ms``."""
        post = self.post_mail
        return self.clock.call_at(time_ms, lambda: post(action))

    @property
    def subtask_name(self) -> str:
        return f"{self.task_name} ({self.subtask_index + 1}/{self.parallelism})"


class StreamOperator:
    """Base of all operators. Subclasses override what they need."""

    #: True for operators whose work may finish later (async I/O, async sinks): the
    #: subtask awaits ``drain()`` while ``pending`` is true.
    is_async = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.output = Output()
        self.ctx: OperatorContext | None = None
        self.runtime_context: RuntimeContext | None = None
        self.subtask = name

    def setup(self, ctx: OperatorContext, output: Output) -> None:
        self.ctx = ctx
        self.output = output
        self.subtask = ctx.subtask_name
        backend = self.state_store()
        configure = getattr(backend, "configure", None)
        if callable(configure):
            from flowkit.state.key_groups import key_group_range_for_operator_index

            configure(
                max_parallelism=ctx.max_parallelism,
                key_group_range=key_group_range_for_operator_index(
                    ctx.max_parallelism, ctx.parallelism, ctx.subtask_index
                ),
                clock=ctx.clock,
            )
        self.runtime_context = RuntimeContext(
            ctx.task_name,
            ctx.subtask_index,
            ctx.parallelism,
            ctx.max_parallelism,
            self.state_store(),
        )

    def state_store(self) -> Any:
        """The keyed state store handed to RuntimeContext (None: not keyed)."""
        return None

    def open(self) -> None:
        """Called before the first element."""

    def process_watermark(self, timestamp: int) -> None:
        self.output.emit_watermark(timestamp)

    def process_watermark_status(self, idle: bool) -> None:
        """The operator's input became idle (True) or active (False); forwarded as is."""
        self.output.emit_status(idle)

    def process_latency_marker(self, marker: Any) -> None:
        """Record how long the marker took from its source to here, then pass it on."""
        samples: dict[tuple[str, int], collections.deque[float]] | None = self.__dict__.get(
            "_latency"
        )
        if samples is None:
            samples = {}
            self._latency = samples
            self._latency_totals = [0.0, 0.0]  # markers seen, their latencies' sum in ms
        source = (marker.source, marker.subtask_index)
        window = samples.get(source)
        if window is None:
            window = samples[source] = collections.deque(maxlen=LATENCY_SAMPLES)
        latency = time.perf_counter() * 1000 - marker.marked_time_ms
        window.append(latency)
        totals = self._latency_totals
        totals[0] += 1
        totals[1] += latency
        self.output.emit_marker(marker)

    def latency_histogram(self) -> dict[str, float] | None:
        """Latency from the sources to this operator, in ms: over the recent markers
        ``count``, ``mean``, ``p50``, ``p90``, ``p99``, ``max``; over every marker since
        the operator opened ``total_count`` and ``total_ms`` (their sum). None: no marker
        yet."""
        samples = self.__dict__.get("_latency")
        if not samples:
            return None
        values = sorted(v for window in samples.values() for v in window)
        n = len(values)

        def quantile(q: float) -> float:
            return values[min(n - 1, int(q * n))]

        total_count, total_ms = self._latency_totals
        return {
            "count": float(n),
            "mean": sum(values) / n,
            "p50": quantile(0.5),
            "p90": quantile(0.9),
            "p99": quantile(0.99),
            "max": values[-1],
            "total_count": total_count,
            "total_ms": total_ms,
        }

    def finish(self) -> None:
        """End of input: emit whatever is still buffered."""

    def close(self) -> None:
        """Release resources; called on success and on failure."""

    @property
    def pending(self) -> bool:
        return False

    async def drain(self) -> None:
        """Wait until asynchronous work allows the subtask to take more input."""

    @property
    def has_mail(self) -> bool:
        """True when completed asynchronous work waits to be emitted by ``process_mail``."""
        return False

    def process_mail(self) -> None:
        """Emit completed asynchronous work (called by the subtask between steps)."""

    async def wait_idle(self) -> None:
        """End of input: wait until no asynchronous work is in flight (and emit it)."""
        await self.drain()

    # ---------------------------------------------------------------- checkpointing
    def snapshot_state(self, checkpoint_id: int) -> Any:
        """The operator's state at a checkpoint barrier (picklable), or None.

        Called synchronously, after every element before the barrier was processed; the
        result is serialized later, in the background, so it must not change afterwards.
        Keyed operators (with ``backend`` / ``timers``) return a copy-on-write snapshot of
        their keyed state (O(key groups) at the barrier) holding their timers too.
        """
        return self._keyed_snapshot(in_child=False)

    def snapshot_state_in_child(self, checkpoint_id: int) -> Any:
        """:meth:`snapshot_state` for a checkpoint that a forked child process writes:
        the child's memory is this subtask's as it was at the barrier.

        Keyed state and timers are then snapshotted in the child
        (:class:`~flowkit.operators.keyed_snapshots.TakenInChild`): nothing of them is
        done here at the barrier, no copy on write, no timers listed. Whatever else an
        operator snapshots runs here, at the barrier, as always: its side effects (a
        sink's pre-commit, a function's ``snapshot_state`` hook) belong to the subtask.
        An operator that overrides :meth:`snapshot_state` without overriding this takes
        its whole snapshot here.
        """
        if type(self).snapshot_state is not StreamOperator.snapshot_state:
            return self.snapshot_state(checkpoint_id)
        return self._keyed_snapshot(in_child=True)

    def _keyed_snapshot(self, *, in_child: bool) -> Any:
        """The keyed state and timers part of a snapshot (None without keyed state: timers
        are keyed too), or with ``in_child`` the same, to be taken in a forked child."""
        backend = getattr(self, "backend", None)
        if backend is None:
            return None
        timers = getattr(self, "timers", None)
        from flowkit.operators.keyed_snapshots import TakenInChild, snapshot_keyed

        if in_child:
            return TakenInChild(functools.partial(snapshot_keyed, backend, timers))
        return snapshot_keyed(backend, timers)

    def keyed_entries(self, limit: int) -> int:
        """Keyed state entries and timers this operator holds, counted until ``limit``
        is reached (then some number >= ``limit``); what decides whether a forked child
        writes the checkpoint (``snapshot_writer="auto"``)."""
        total = 0
        timers = getattr(self, "timers", None)
        if timers is not None:
            total += len(timers.event_timers) + len(timers.processing_timers)
        backend = getattr(self, "backend", None)
        if backend is not None and total < limit:
            total += backend.stored_entries(limit - total)
        return total

    def initialize_state(self, states: list[Any]) -> None:
        """Restore from the snapshots of the old subtasks assigned to this one.

        Called after ``setup`` and before ``open`` (keyed operators: the key groups of
        this subtask are picked out of every snapshot given).
        """
        self._restored_states = states

    def _restore_keyed_after_open(self) -> None:
        states = getattr(self, "_restored_states", None)
        if not states:
            return
        backend = getattr(self, "backend", None)
        timers = getattr(self, "timers", None)
        if backend is None and timers is None:
            return
        from flowkit.operators.keyed_snapshots import restore_keyed

        restore_keyed(backend, timers, states, self._key_group_range())
        self._restored_states = []

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` completed (commit side effects here)."""

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` was aborted."""

    def _key_group_of(self) -> Callable[[Any], int]:
        """Key -> key group (cached across checkpoints: each key is hashed once)."""
        assigner = getattr(self, "_key_group_assigner", None)
        if assigner is None:
            from flowkit.state.key_groups import KeyGroupAssigner

            assert self.ctx is not None
            assigner = KeyGroupAssigner(self.ctx.max_parallelism, self.ctx.parallelism)
            self._key_group_assigner = assigner
        return assigner.key_group_for_key

    def _key_group_range(self) -> Any:
        from flowkit.state.key_groups import key_group_range_for_operator_index

        assert self.ctx is not None
        return key_group_range_for_operator_index(
            self.ctx.max_parallelism, self.ctx.parallelism, self.ctx.subtask_index
        )

    def raise_failure(
        self, cause: Exception, detail: str = "", record: Any = NO_RECORD
    ) -> NoReturn:
        """Raise :meth:`fail`'s error for ``cause``, with ``cause`` chained as its
        ``__cause__`` (an error that already names where it happened is raised unchanged).

        Raises:
            FlowkitError: always.
        """
        error = self.fail(cause, detail, record)
        if error is cause:
            raise cause
        raise error from cause

    def fail(self, cause: BaseException, detail: str = "", record: Any = NO_RECORD) -> FlowkitError:
        """The error to raise when user code in this operator raised ``cause``.

        A :class:`~flowkit.errors.UserFunctionError` naming this operator and subtask,
        ``detail`` (where: ``"in open()"``, ...) and, if given, the ``record`` being
        processed (its type and a short repr). Errors flowkit raised that already say where
        they happened (any other :class:`~flowkit.errors.FlowkitError`) are returned as they
        are; an :class:`~flowkit.errors.InvalidTimestampError` is wrapped like the user's.
        """
        if isinstance(cause, FlowkitError) and not isinstance(cause, InvalidTimestampError):
            return cause
        if record is NO_RECORD:
            return UserFunctionError(self.name, self.subtask, cause, detail)
        return UserFunctionError(self.name, self.subtask, cause, detail, record=record)


class BufferedOutput:
    """Mixin for operators that gather a step's main and side output and hand each on as
    one batch in ``_flush()`` (windows and joins, whose output comes from timers as
    well as from input). Call ``_init_output_buffers()`` in ``__init__``."""

    output: Output
    _out_values: list[Any]
    _out_stamps: list[Any]
    _sides: dict[str, tuple[list[Any], list[Any]]]

    def _init_output_buffers(self) -> None:
        self._out_values = []
        self._out_stamps = []
        self._sides = {}

    def _emit_side(self, tag: OutputTag, value: Any, timestamp: int | None) -> None:
        """Buffer ``value`` for the side output ``tag``."""
        if not isinstance(tag, OutputTag):
            raise TypeError(f"ctx.output() needs an OutputTag, got {tag!r}")
        entry = self._sides.get(tag.tag_id)
        if entry is None:
            entry = self._sides[tag.tag_id] = ([], [])
        entry[0].append(value)
        entry[1].append(timestamp)

    def _flush(self) -> None:
        """Hand on the buffered main output, then each side output."""
        if self._out_values:
            values, stamps = self._out_values, self._out_stamps
            self._out_values, self._out_stamps = [], []
            self.output.collect(values, stamps)
        if self._sides:
            sides, self._sides = self._sides, {}
            for tag_id, (side_values, side_stamps) in sides.items():
                self.output.collect_side(tag_id, side_values, side_stamps)


class OneInputOperator(StreamOperator):
    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        raise NotImplementedError


class TwoInputOperator(StreamOperator):
    """Two inputs; the operator watermark is the minimum of both inputs' watermarks."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._input_watermarks = [MIN_WATERMARK, MIN_WATERMARK]
        self._input_idle = [False, False]
        self._combined_watermark = MIN_WATERMARK
        self._combined_idle = False

    def process_batch1(self, values: Batch, timestamps: Timestamps) -> None:
        raise NotImplementedError

    def process_batch2(self, values: Batch, timestamps: Timestamps) -> None:
        raise NotImplementedError

    def process_watermark1(self, timestamp: int) -> None:
        self._input_watermarks[0] = timestamp
        self._combine()

    def process_watermark2(self, timestamp: int) -> None:
        self._input_watermarks[1] = timestamp
        self._combine()

    def process_watermark_status1(self, idle: bool) -> None:
        self._input_idle[0] = idle
        self._combine()

    def process_watermark_status2(self, idle: bool) -> None:
        self._input_idle[1] = idle
        self._combine()

    def _combine(self) -> None:
        """Operator watermark = minimum over the inputs that are not idle."""
        active = [w for w, idle in zip(self._input_watermarks, self._input_idle) if not idle]
        if not active and not self._combined_idle:
            self._combined_idle = True
            self.process_watermark_status(True)
        elif active and self._combined_idle:
            self._combined_idle = False
            self.process_watermark_status(False)
        if active:
            low = min(active)
            if low > self._combined_watermark:
                self._combined_watermark = low
                self.process_watermark(low)


def resolve_function(fn: Any, method: str, what: str) -> Callable[..., Any]:
    """Return the callable to invoke: ``fn.<method>`` for function classes, else ``fn``.

    Raises:
        TypeError: when ``fn`` is neither (raised while the job is being described).
    """
    bound = getattr(fn, method, None)
    if bound is not None and callable(bound):
        return bound
    if callable(fn):
        return fn
    raise TypeError(f"{what} expects a callable or an object with a {method}() method, got {fn!r}")


def key_selector_fails(key_selector: Callable[[Any], Any] | None, record: Any) -> bool:
    """Whether ``key_selector(record)`` raises: after a failure, tells a key selector's error
    from the user function's (key selectors are deterministic, so calling one again to
    find out is safe). Runs on the error path only."""
    if key_selector is None or record is NO_RECORD:
        return False
    try:
        key_selector(record)
    except Exception:
        return True
    return False


def copy_function(fn: Any) -> Any:
    """The per-subtask copy of a user function (functions themselves are shared)."""
    if fn is None or (callable(fn) and not hasattr(fn, "__dict__")):
        return fn
    if type(fn).__name__ in ("function", "builtin_function_or_method", "method"):
        return fn
    try:
        return copy.deepcopy(fn)
    except Exception:
        try:
            return copy.copy(fn)
        except Exception:
            return fn


def call_open(fn: Any, runtime_context: RuntimeContext | None) -> None:
    opener = getattr(fn, "open", None)
    if opener is not None and callable(opener) and not isinstance(fn, type):
        opener(runtime_context)


def call_close(fn: Any) -> None:
    closer = getattr(fn, "close", None)
    if closer is not None and callable(closer) and not isinstance(fn, type):
        closer()
