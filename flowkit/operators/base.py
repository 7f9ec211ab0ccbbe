"""StreamOperator lifecycle, Output wiring, and the context operators are set up with."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from flowkit.errors import FlowkitError, UserFunctionError
from flowkit.functions import RuntimeContext

__all__ = [
    "OneInputOperator",
    "OperatorContext",
    "Output",
    "StreamOperator",
    "TwoInputOperator",
    "call_close",
    "call_open",
    "copy_function",
    "resolve_function",
]

Batch = list[Any]
Timestamps = list[Any] | None


def _drop_batch(values: Batch, timestamps: Timestamps) -> None:
    return None


def _drop_watermark(timestamp: int) -> None:
    return None


class Output:
    """Where an operator sends its results: chained operators and/or record writers.

    ``collect(values, timestamps)`` takes a batch; ``emit_watermark(ts)`` reaches every
    downstream target, side outputs included; ``sides`` maps a side-output tag id to the
    Output of its consumers (tags with no consumer are dropped).
    """

    __slots__ = ("collect", "emit_watermark", "sides")

    def __init__(
        self,
        collect: Callable[[Batch, Timestamps], None] = _drop_batch,
        emit_watermark: Callable[[int], None] = _drop_watermark,
        sides: dict[str, Output] | None = None,
    ) -> None:
        self.collect = collect
        self.emit_watermark = emit_watermark
        self.sides: dict[str, Output] = sides or {}

    def collect_side(self, tag_id: str, values: Batch, timestamps: Timestamps) -> None:
        side = self.sides.get(tag_id)
        if side is not None and values:
            side.collect(values, timestamps)


class OperatorContext:
    """What the runtime tells an operator when it is set up in a subtask."""

    def __init__(
        self,
        task_name: str,
        subtask_index: int,
        parallelism: int,
        max_parallelism: int,
        wake: Callable[[], None] | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.task_name = task_name
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self.max_parallelism = max_parallelism
        #: Wakes the subtask's loop (used by operators with asynchronous work).
        self.wake = wake or (lambda: None)
        #: Processing time in epoch milliseconds.
        self.clock = clock

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

    def fail(self, cause: BaseException, detail: str = "") -> FlowkitError:
        """The error to raise when user code in this operator raised ``cause``."""
        if isinstance(cause, FlowkitError):
            return cause
        return UserFunctionError(self.name, self.subtask, cause, detail)


class OneInputOperator(StreamOperator):
    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        raise NotImplementedError


class TwoInputOperator(StreamOperator):
    """Two inputs; the operator watermark is the minimum of both inputs' watermarks."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._wm1 = self._wm2 = self._wm = -(2**63)

    def process_batch1(self, values: Batch, timestamps: Timestamps) -> None:
        raise NotImplementedError

    def process_batch2(self, values: Batch, timestamps: Timestamps) -> None:
        raise NotImplementedError

    def process_watermark1(self, timestamp: int) -> None:
        self._wm1 = timestamp
        self._combine()

    def process_watermark2(self, timestamp: int) -> None:
        self._wm2 = timestamp
        self._combine()

    def _combine(self) -> None:
        wm = min(self._wm1, self._wm2)
        if wm > self._wm:
            self._wm = wm
            self.process_watermark(wm)


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
