"""Operator test harnesses: run one function without a job, Flink-style.

A harness builds the operator around a user function, gives it a manual processing-time
clock, and records everything it emits. Push elements and watermarks, move processing
time, read the output (``StreamRecord`` and ``Watermark`` in order, accumulated like
Flink's harness), snapshot, and restore into a fresh harness.

Example:
    >>> from flowkit.functions import KeyedProcessFunction
    >>> class Echo(KeyedProcessFunction):
    ...     def process_element(self, value, ctx):
    ...         ctx.timer_service().register_event_time_timer(ctx.timestamp() + 10)
    ...         yield value
    ...     def on_timer(self, timestamp, ctx):
    ...         yield f"timer {ctx.get_current_key()}@{timestamp}"
    >>> h = KeyedProcessFunctionHarness(Echo(), key_selector=lambda v: v[0])
    >>> h.open()
    >>> h.process_element("a1", timestamp=5)
    >>> h.process_watermark(15)
    >>> h.get_output()
    [StreamRecord('a1', 5), StreamRecord('timer a@15', 15), Watermark(timestamp=15)]
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from flowkit.elements import OutputTag, StreamRecord, Watermark
from flowkit.eventtime.clocks import ManualClock
from flowkit.eventtime.timers import InternalTimerService
from flowkit.operators.base import OneInputOperator, OperatorContext, Output
from flowkit.operators.process import KeyedProcessOperator, ProcessOperator
from flowkit.operators.window import WindowOperator

__all__ = [
    "HarnessSnapshot",
    "KeyedProcessFunctionHarness",
    "OneInputOperatorHarness",
    "ProcessFunctionHarness",
    "WindowOperatorHarness",
]


class HarnessSnapshot:
    """What ``snapshot()`` captured: keyed state, timers and the current watermark."""

    def __init__(
        self, tables: dict[str, Any], timers: dict[str, Any] | None, processing_time: int
    ) -> None:
        self.tables = tables
        self.timers = timers
        self.processing_time = processing_time


class _AllSides(dict):
    """Side outputs of a harness: every tag is recorded, consumer or not."""

    def __init__(self, record: Callable[[str, list[Any], list[Any] | None], None]) -> None:
        super().__init__()
        self._record = record

    def get(self, tag_id: str, default: Any = None) -> Output:
        output = dict.get(self, tag_id)
        if output is None:
            record = self._record

            def collect(values: list[Any], stamps: list[Any] | None, _tag: str = tag_id) -> None:
                record(_tag, values, stamps)

            output = self[tag_id] = Output(collect=collect)
        return output


def _records(values: list[Any], stamps: list[Any] | None) -> list[StreamRecord]:
    if stamps is None:
        return [StreamRecord(v) for v in values]
    return [StreamRecord(v, t) for v, t in zip(values, stamps)]


class OneInputOperatorHarness:
    """Drives any one-input operator; the specific harnesses below build the operator.

    Args:
        operator: the operator to test (not yet set up).
        restore_from: a snapshot from another harness's ``snapshot()``.
        processing_time: the manual clock's start (epoch milliseconds).
    """

    def __init__(
        self,
        operator: OneInputOperator,
        restore_from: HarnessSnapshot | None = None,
        processing_time: int = 0,
    ) -> None:
        self.clock = ManualClock(restore_from.processing_time if restore_from else processing_time)
        self.operator = operator
        self._output: list[StreamRecord | Watermark] = []
        self._sides: dict[str, list[StreamRecord]] = {}
        self._restore_from = restore_from
        self._opened = False
        ctx = OperatorContext(
            "harness", 0, 1, 128, clock=self.clock, post_mail=lambda action: action()
        )
        output = Output(
            collect=self._collect,
            emit_watermark=self._watermark,
            sides=_AllSides(self._collect_side),
        )
        operator.setup(ctx, output)
        backend = getattr(operator, "backend", None)
        if restore_from is not None and backend is not None:
            for name, table in copy.deepcopy(restore_from.tables).items():
                backend.table(name).update(table)

    # ---------------------------------------------------------------- recording
    def _collect(self, values: list[Any], stamps: list[Any] | None) -> None:
        self._output.extend(_records(values, stamps))

    def _watermark(self, timestamp: int) -> None:
        self._output.append(Watermark(timestamp))

    def _collect_side(self, tag_id: str, values: list[Any], stamps: list[Any] | None) -> None:
        self._sides.setdefault(tag_id, []).extend(_records(values, stamps))

    # ---------------------------------------------------------------- driving
    def open(self) -> None:
        """Open the operator (and its function); restores timers from a snapshot."""
        self.operator.open()
        self._opened = True
        timers = self._timers()
        snapshot = self._restore_from
        if snapshot is not None and snapshot.timers is not None and timers is not None:
            timers.restore(copy.deepcopy(snapshot.timers))

    def _ensure_open(self) -> None:
        if not self._opened:
            self.open()

    def process_element(self, value: Any, timestamp: int | None = None) -> None:
        """Push one record (``timestamp`` None: the record has none)."""
        self._ensure_open()
        self.operator.process_batch([value], None if timestamp is None else [timestamp])

    def process_elements(self, values: list[Any], timestamp: int | None = None) -> None:
        for value in values:
            self.process_element(value, timestamp)

    def process_watermark(self, watermark: int | Watermark) -> None:
        """Push a watermark: due event-time timers fire before it is forwarded."""
        self._ensure_open()
        if isinstance(watermark, Watermark):
            watermark = watermark.timestamp
        self.operator.process_watermark(int(watermark))

    def set_processing_time(self, time_ms: int) -> None:
        """Move the manual clock; due processing-time timers fire."""
        self._ensure_open()
        self.clock.advance_to(time_ms)

    def get_processing_time(self) -> int:
        return self.clock.now()

    def get_output(self) -> list[StreamRecord | Watermark]:
        """Everything emitted so far, in order (records and watermarks)."""
        return list(self._output)

    def extract_output_values(self) -> list[Any]:
        """The values of the emitted records, in order."""
        return [e.value for e in self._output if isinstance(e, StreamRecord)]

    def get_records(self) -> list[StreamRecord]:
        return [e for e in self._output if isinstance(e, StreamRecord)]

    def get_side_output(self, tag: OutputTag) -> list[StreamRecord]:
        """The records emitted to side output ``tag`` so far."""
        return list(self._sides.get(tag.tag_id, []))

    def clear_output(self) -> None:
        self._output.clear()
        self._sides.clear()

    def _timers(self) -> InternalTimerService | None:
        return getattr(self.operator, "timers", None)

    def num_event_time_timers(self) -> int:
        timers = self._timers()
        return 0 if timers is None else timers.num_event_time_timers()

    def num_processing_time_timers(self) -> int:
        timers = self._timers()
        return 0 if timers is None else timers.num_processing_time_timers()

    def num_keyed_state_entries(self) -> int:
        backend = getattr(self.operator, "backend", None)
        if backend is None:
            return 0
        return sum(len(keys) for table in backend.tables.values() for keys in table.values())

    def snapshot(self) -> HarnessSnapshot:
        """Capture keyed state and timers; give it to a new harness as ``restore_from``."""
        backend = getattr(self.operator, "backend", None)
        tables = copy.deepcopy(backend.tables) if backend is not None else {}
        timers = self._timers()
        return HarnessSnapshot(
            tables,
            copy.deepcopy(timers.snapshot()) if timers is not None else None,
            self.clock.now(),
        )

    def close(self) -> None:
        self.operator.close()


class ProcessFunctionHarness(OneInputOperatorHarness):
    """Runs a ``ProcessFunction`` (non-keyed: no state, no timers)."""

    def __init__(self, function: Any, restore_from: HarnessSnapshot | None = None) -> None:
        super().__init__(ProcessOperator("Process", function), restore_from)


class KeyedProcessFunctionHarness(OneInputOperatorHarness):
    """Runs a ``KeyedProcessFunction`` with keyed state and timers."""

    def __init__(
        self,
        function: Any,
        key_selector: Callable[[Any], Any],
        restore_from: HarnessSnapshot | None = None,
    ) -> None:
        super().__init__(KeyedProcessOperator("KeyedProcess", function, key_selector), restore_from)

    def get_current_key(self) -> Any:
        return self.operator.backend.get_current_key()  # type: ignore[attr-defined]


class WindowOperatorHarness(OneInputOperatorHarness):
    """Runs a window (assigner, trigger, evictor, lateness) over one keyed input.

    Exactly one of ``reduce``, ``aggregate`` or ``process`` is given; ``window_function``
    is a ProcessWindowFunction applied to the result of ``reduce`` / ``aggregate``.
    """

    def __init__(
        self,
        assigner: Any,
        key_selector: Callable[[Any], Any],
        *,
        reduce: Any = None,
        aggregate: Any = None,
        process: Any = None,
        window_function: Any = None,
        trigger: Any = None,
        evictor: Any = None,
        allowed_lateness: int = 0,
        late_tag: OutputTag | None = None,
        restore_from: HarnessSnapshot | None = None,
    ) -> None:
        operator = WindowOperator(
            "Window",
            assigner,
            key_selector,
            trigger=trigger,
            evictor=evictor,
            allowed_lateness=allowed_lateness,
            late_tag=late_tag,
            reduce=reduce,
            aggregate=aggregate,
            process=process,
            window_function=window_function,
        )
        super().__init__(operator, restore_from)

    @property
    def num_late_records_dropped(self) -> int:
        return self.operator.num_late_records_dropped  # type: ignore[attr-defined]
