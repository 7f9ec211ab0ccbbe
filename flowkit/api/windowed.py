"""WindowedStream (keyed windows) and AllWindowedStream (``window_all``)."""

from __future__ import annotations

import datetime
import inspect
from typing import TYPE_CHECKING, Any

from flowkit.elements import OutputTag
from flowkit.errors import InvalidConfigurationError
from flowkit.operators.window import WindowOperator
from flowkit.window import Evictor, Trigger, WindowAssigner, allowed_lateness_millis

if TYPE_CHECKING:
    from flowkit.api.datastream import DataStream, OutputType

__all__ = ["AllWindowedStream", "WindowedStream"]


def _describe(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def _invalid_function(message: str) -> Exception:
    from flowkit.api.datastream import InvalidFunctionError

    return InvalidFunctionError(message)


def _check_window_function(fn: Any, what: str) -> None:
    """Reject ``fn`` unless it has ``process``/``apply`` or is callable."""
    for method in ("process", "apply"):
        if callable(getattr(fn, method, None)):
            return
    if callable(fn):
        return
    raise _invalid_function(
        f"{what} needs a ProcessWindowFunction (process(key, context, elements)), a "
        f"WindowFunction (apply(key, window, inputs)) or a callable, got "
        f"{type(fn).__name__} {fn!r}"
    )


def _positional_arity(method: Any) -> int | None:
    """Number of positional parameters of a bound method (None: unknown or variadic)."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return None
    count = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
            count += 1
    return count


class _KeylessAllWindowFunction:
    """Adapts PyFlink's non-keyed window functions to the keyed calling convention.

    ``ProcessAllWindowFunction.process(context, elements)`` and
    ``AllWindowFunction.apply(window, inputs)`` take no key; the window operator calls
    ``process(key, context, elements)`` / ``apply(key, window, inputs)``.
    """

    def __init__(self, fn: Any, method: str) -> None:
        self.fn = fn
        self.method = method

    def open(self, runtime_context: Any) -> None:
        opener = getattr(self.fn, "open", None)
        if callable(opener):
            opener(runtime_context)

    def close(self) -> None:
        closer = getattr(self.fn, "close", None)
        if callable(closer):
            closer()

    def clear(self, context: Any) -> None:
        clear = getattr(self.fn, "clear", None)
        if callable(clear):
            clear(context)

    def process(self, key: Any, context: Any, elements: Any) -> Any:
        if self.method == "apply":
            return self.fn.apply(context.window(), elements)
        return self.fn.process(context, elements)


def _keyless(fn: Any) -> Any:
    """Wrap a two-argument ``process``/``apply`` of a ``window_all`` function."""
    for method in ("process", "apply"):
        bound = getattr(fn, method, None)
        if callable(bound):
            return _KeylessAllWindowFunction(fn, method) if _positional_arity(bound) == 2 else fn
    return fn


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
            raise _invalid_function(
                f"window() needs a WindowAssigner (e.g. TumblingEventTimeWindows.of(1000)), "
                f"got {type(assigner).__name__} {assigner!r}"
            )
        self._stream = stream
        self._assigner = assigner
        self._key_selector = key_selector
        self._trigger: Trigger | None = None
        self._evictor: Evictor | None = None
        self._allowed_lateness = 0
        self._late_tag: OutputTag | None = None

    def trigger(self, trigger: Trigger) -> WindowedStream:
        """Replace the assigner's default trigger.

        Raises:
            InvalidConfigurationError: ``trigger`` is not a Trigger, or the assigner merges
                windows (sessions) and the trigger cannot merge (``can_merge()`` False).
        """
        if not isinstance(trigger, Trigger):
            raise _invalid_function(
                f"trigger() needs a Trigger, got {type(trigger).__name__} {trigger!r}"
            )
        if self._assigner.is_merging() and not trigger.can_merge():
            raise InvalidConfigurationError(
                f"{self._assigner!r} merges windows, but the trigger {trigger!r} does not "
                f"support merging; implement can_merge() (return True) and on_merge()"
            )
        self._trigger = trigger
        return self

    def evictor(self, evictor: Evictor) -> WindowedStream:
        """Remove elements from a window before and/or after the function runs."""
        if not isinstance(evictor, Evictor):
            raise _invalid_function(
                f"evictor() needs an Evictor, got {type(evictor).__name__} {evictor!r}"
            )
        self._evictor = evictor
        return self

    def allowed_lateness(self, lateness: int | datetime.timedelta) -> WindowedStream:
        """Keep event-time windows (and fire again) for late elements up to ``lateness``.

        Ignored for processing-time and global windows, as in Flink.

        Raises:
            InvalidConfigurationError: ``lateness`` is negative or not whole milliseconds
                (an int, or a ``timedelta`` of whole ms); the message names the window.
        """
        self._allowed_lateness = allowed_lateness_millis(lateness, repr(self._assigner))
        return self

    def side_output_late_data(self, output_tag: OutputTag) -> WindowedStream:
        """Send elements that are too late for every window to ``output_tag``."""
        if not isinstance(output_tag, OutputTag):
            raise _invalid_function(
                f"side_output_late_data() needs an OutputTag, got "
                f"{type(output_tag).__name__} {output_tag!r}"
            )
        self._late_tag = output_tag
        return self

    def _adapt(self, fn: Any) -> Any:
        """Hook for AllWindowedStream: adapt key-less window functions."""
        return fn

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

        try:
            make(self._kind)  # validate the combination now, before anything runs
        except (TypeError, ValueError) as exc:
            raise InvalidConfigurationError(f"{self._kind}: {exc}") from exc
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
            raise _invalid_function(
                f"reduce() needs a ReduceFunction or a two-argument callable, got "
                f"{type(reduce_function).__name__} {reduce_function!r}"
            )
        if window_function is not None:
            _check_window_function(window_function, "reduce(window_function=...)")
            window_function = self._adapt(window_function)
        elif output_type is None:  # the reduced records have the input's type (PyFlink)
            output_type = self._stream.get_type()
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
                raise _invalid_function(
                    f"aggregate() needs an AggregateFunction (create_accumulator, add, "
                    f"get_result, merge), got {type(aggregate_function).__name__} "
                    f"{aggregate_function!r}"
                )
        if window_function is not None:
            _check_window_function(window_function, "aggregate(window_function=...)")
            window_function = self._adapt(window_function)
        return self._build(
            aggregate_function,
            output_type,
            aggregate=aggregate_function,
            window_function=window_function,
        )

    def process(self, process_window_function: Any, output_type: OutputType = None) -> DataStream:
        """Evaluate each window over all its elements with a ProcessWindowFunction."""
        _check_window_function(process_window_function, "process()")
        return self._build(
            process_window_function,
            output_type,
            process=self._adapt(process_window_function),
        )

    def apply(self, window_function: Any, output_type: OutputType = None) -> DataStream:
        """Evaluate each window with a WindowFunction ``apply(key, window, inputs)``."""
        _check_window_function(window_function, "apply()")
        return self._build(window_function, output_type, process=self._adapt(window_function))


class AllWindowedStream(WindowedStream):
    """Windows over a whole (non-keyed) stream; runs at parallelism 1.

    Window functions get ``None`` as key; PyFlink's key-less forms are accepted as well:
    ``ProcessAllWindowFunction.process(context, elements)`` and
    ``AllWindowFunction.apply(window, inputs)``.
    """

    _non_parallel = True
    _kind = "AllWindow"

    def _adapt(self, fn: Any) -> Any:
        return _keyless(fn)
