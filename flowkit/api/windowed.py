"""WindowedStream (keyed windows) and AllWindowedStream (``window_all``)."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from flowkit.elements import OutputTag
from flowkit.eventtime.watermarks import to_millis
from flowkit.operators.window import WindowOperator
from flowkit.window import Evictor, Trigger, WindowAssigner

if TYPE_CHECKING:
    from flowkit.api.datastream import DataStream, OutputType

__all__ = ["AllWindowedStream", "WindowedStream"]


def _describe(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


class WindowedStream:
    """A keyed stream cut into windows; finish it with reduce/aggregate/process/apply.

    Example:
        >>> from flowkit import StreamExecutionEnvironment, WatermarkStrategy
        >>> from flowkit.window import TumblingEventTimeWindows
        >>> env = StreamExecutionEnvironment()
        >>> sums = (env.from_collection([("a", 1000, 1), ("a", 1500, 2), ("b", 2500, 5)])
        ...     .assign_timestamps_and_watermarks(WatermarkStrategy.for_monotonous_timestamps()
        ...         .with_timestamp_assigner(lambda e, ts: e[1]))
        ...     .key_by(lambda e: e[0])
        ...     .window(TumblingEventTimeWindows.of(1000))
        ...     .reduce(lambda a, b: (a[0], b[1], a[2] + b[2])))
        >>> sorted(sums.execute_and_collect())
        [('a', 1500, 3), ('b', 2500, 5)]
    """

    _non_parallel = False
    _kind = "Window"

    def __init__(
        self, stream: DataStream, assigner: WindowAssigner[Any], key_selector: Any
    ) -> None:
        if not isinstance(assigner, WindowAssigner):
            raise TypeError(f"window() needs a WindowAssigner, got {assigner!r}")
        self._stream = stream
        self._assigner = assigner
        self._key_selector = key_selector
        self._trigger: Trigger | None = None
        self._evictor: Evictor | None = None
        self._allowed_lateness = 0
        self._late_tag: OutputTag | None = None

    def trigger(self, trigger: Trigger) -> WindowedStream:
        """Replace the assigner's default trigger."""
        if not isinstance(trigger, Trigger):
            raise TypeError(f"trigger() needs a Trigger, got {trigger!r}")
        self._trigger = trigger
        return self

    def evictor(self, evictor: Evictor) -> WindowedStream:
        """Remove elements from a window before and/or after the function runs."""
        if not isinstance(evictor, Evictor):
            raise TypeError(f"evictor() needs an Evictor, got {evictor!r}")
        self._evictor = evictor
        return self

    def allowed_lateness(self, lateness: int | datetime.timedelta) -> WindowedStream:
        """Keep event-time windows (and fire again) for late elements up to ``lateness``."""
        ms = to_millis(lateness, "allowed_lateness")
        if ms < 0:
            raise ValueError(f"allowed_lateness must be >= 0, got {ms}")
        self._allowed_lateness = ms
        return self

    def side_output_late_data(self, output_tag: OutputTag) -> WindowedStream:
        """Send elements that are too late for every window to ``output_tag``."""
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"side_output_late_data() needs an OutputTag, got {output_tag!r}")
        self._late_tag = output_tag
        return self

    def _build(self, fn: Any, output_type: OutputType, **functions: Any) -> DataStream:
        from flowkit.api.datastream import DataStream

        assigner = self._assigner
        key_selector = self._key_selector
        trigger = self._trigger
        evictor = self._evictor
        lateness = self._allowed_lateness
        late_tag = self._late_tag

        def make(name: str) -> WindowOperator:
            return WindowOperator(
                name,
                assigner,
                key_selector,
                trigger=trigger,
                evictor=evictor,
                allowed_lateness=lateness,
                late_tag=late_tag,
                **functions,
            )

        make(self._kind)  # validate the combination now, before anything runs
        t = self._stream._add(
            "one_input",
            self._kind,
            make,
            output_type,
            description=f"{assigner!r}, {trigger or assigner.get_default_trigger()!r}, {_describe(fn)}",
            operator_max_parallelism=1 if self._non_parallel else None,
        )
        t.requires_watermarks = assigner.is_event_time()
        return DataStream(self._stream._env, t)

    def reduce(
        self, reduce_function: Any, window_function: Any = None, output_type: OutputType = None
    ) -> DataStream:
        """Incrementally reduce each window; ``window_function`` (a ProcessWindowFunction)
        receives the one reduced value."""
        if not callable(getattr(reduce_function, "reduce", reduce_function)):
            raise TypeError(
                f"reduce() needs a ReduceFunction or a two-argument callable, got {reduce_function!r}"
            )
        return self._build(
            reduce_function, output_type, reduce=reduce_function, window_function=window_function
        )

    def aggregate(
        self,
        aggregate_function: Any,
        window_function: Any = None,
        accumulator_type: Any = None,
        output_type: OutputType = None,
    ) -> DataStream:
        """Incrementally aggregate each window with an AggregateFunction."""
        for method in ("create_accumulator", "add", "get_result"):
            if not callable(getattr(aggregate_function, method, None)):
                raise TypeError(
                    f"aggregate() needs an AggregateFunction, got {aggregate_function!r}"
                )
        return self._build(
            aggregate_function,
            output_type,
            aggregate=aggregate_function,
            window_function=window_function,
        )

    def process(self, process_window_function: Any, output_type: OutputType = None) -> DataStream:
        """Evaluate each window over all its elements with a ProcessWindowFunction."""
        return self._build(process_window_function, output_type, process=process_window_function)

    def apply(self, window_function: Any, output_type: OutputType = None) -> DataStream:
        """Evaluate each window with a WindowFunction ``apply(key, window, inputs)``."""
        return self._build(window_function, output_type, process=window_function)


class AllWindowedStream(WindowedStream):
    """Windows over a whole (non-keyed) stream; runs at parallelism 1."""

    _non_parallel = True
    _kind = "AllWindow"
