"""Stream joins: window joins and co-groups (``join`` / ``co_group``) and interval joins.

A window join is Flink's: both inputs are tagged (``(1, value)`` / ``(2, value)``),
unioned, keyed by the respective key selector and windowed; when a window fires, the
function is applied to every (left, right) pair of the window's elements of one key. It is
made of the ordinary ``map``, ``union``, ``key_by`` and ``window(...).apply`` operators, so
its state, timers, triggers, evictors and allowed lateness are the window operator's, and
its results carry the window's ``max_timestamp()``.

An interval join (``a.key_by(k).interval_join(b.key_by(k)).between(lower, upper)``) runs
:class:`~flowkit.operators.join.IntervalJoinOperator`.
"""

from __future__ import annotations

import datetime
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from flowkit.elements import OutputTag
from flowkit.errors import InvalidConfigurationError
from flowkit.functions import Function
from flowkit.operators.base import call_close, call_open
from flowkit.operators.join import IntervalJoinOperator, ProcessJoinFunction
from flowkit.window import (
    Evictor,
    Trigger,
    WindowAssigner,
    allowed_lateness_millis,
    whole_millis,
)

if TYPE_CHECKING:
    from flowkit.api.datastream import DataStream, KeyedStream, OutputType

__all__ = [
    "CoGroupFunction",
    "CoGroupedStreams",
    "FlatJoinFunction",
    "IntervalJoin",
    "IntervalJoined",
    "JoinFunction",
    "JoinedStreams",
    "ProcessJoinFunction",
]


# ---------------------------------------------------------------------- function classes
class JoinFunction(Function, ABC):
    """Joins one pair of a window join: ``join(first, second)`` returns the output."""

    @abstractmethod
    def join(self, first: Any, second: Any) -> Any: ...


class FlatJoinFunction(Function, ABC):
    """Joins one pair of a window join: ``join(first, second)`` yields zero or more outputs."""

    @abstractmethod
    def join(self, first: Any, second: Any) -> Iterable[Any] | None: ...


class CoGroupFunction(Function, ABC):
    """Called once per key and window with the elements of both inputs (either may be
    empty, not both); ``co_group(first, second)`` yields the outputs."""

    @abstractmethod
    def co_group(self, first: Iterable[Any], second: Iterable[Any]) -> Iterable[Any] | None: ...


# ---------------------------------------------------------------------- plumbing
class _Tagger:
    """Wraps each record of one input as ``(tag, record)``."""

    __slots__ = ("tag",)

    def __init__(self, tag: int) -> None:
        self.tag = tag

    def map(self, value: Any) -> tuple[int, Any]:
        return (self.tag, value)

    def __repr__(self) -> str:
        return f"Input{self.tag}Tagger"


class _UnionKeySelector:
    """The key of a tagged record: the key selector of the input it came from."""

    __slots__ = ("first", "second")

    def __init__(self, first: Callable[[Any], Any], second: Callable[[Any], Any]) -> None:
        self.first = first
        self.second = second

    def __call__(self, tagged: tuple[int, Any]) -> Any:
        tag, value = tagged
        return self.first(value) if tag == 1 else self.second(value)


class _CoGroupWindowFunction(Function):
    """The window function of a co-group: splits a window's tagged elements by input.

    The user's function is called with the two lists; wrapper subclasses turn a join
    function into a co-group one. ``open``/``close`` reach the user's function.
    """

    def __init__(self, function: Any) -> None:
        self.function = function

    def open(self, runtime_context: Any) -> None:
        call_open(self.function, runtime_context)

    def close(self) -> None:
        call_close(self.function)

    def apply(self, key: Any, window: Any, inputs: Iterable[tuple[int, Any]]) -> Iterable[Any]:
        first: list[Any] = []
        second: list[Any] = []
        for tag, value in inputs:
            (first if tag == 1 else second).append(value)
        return self.co_group(first, second)

    def co_group(self, first: list[Any], second: list[Any]) -> Iterable[Any]:
        fn = self.function
        method = getattr(fn, "co_group", None)
        result = method(first, second) if callable(method) else fn(first, second)
        return () if result is None else result


class _JoinWindowFunction(_CoGroupWindowFunction):
    """Window join: ``join(first, second)`` (or the callable) for every pair, one output each."""

    def co_group(self, first: list[Any], second: list[Any]) -> Iterable[Any]:
        if not first or not second:
            return ()
        fn = self.function
        method = getattr(fn, "join", None)
        join = method if callable(method) else fn
        return [join(left, right) for left in first for right in second]


class _FlatJoinWindowFunction(_CoGroupWindowFunction):
    """Window join with a FlatJoinFunction: every pair yields zero or more outputs."""

    def co_group(self, first: list[Any], second: list[Any]) -> Iterator[Any]:
        join = self.function.join
        for left in first:
            for right in second:
                result = join(left, right)
                if result is not None:
                    yield from result


def _selector(key_selector: Any) -> Callable[[Any], Any]:
    from flowkit.api.datastream import _key_selector

    return _key_selector(key_selector)


def _describe(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


# ---------------------------------------------------------------------- window joins
class _TwoInputWindowSpec:
    """Inputs, keys and window settings shared by the join and co-group builders."""

    def __init__(
        self,
        first: DataStream,
        second: DataStream,
        key1: Callable[[Any], Any],
        key2: Callable[[Any], Any],
        assigner: WindowAssigner[Any],
    ) -> None:
        if not isinstance(assigner, WindowAssigner):
            raise TypeError(f"window() needs a WindowAssigner, got {assigner!r}")
        self._first = first
        self._second = second
        self._key1 = key1
        self._key2 = key2
        self._assigner = assigner
        self._trigger: Trigger | None = None
        self._evictor: Evictor | None = None
        self._allowed_lateness = 0

    def _set_trigger(self, trigger: Trigger) -> None:
        if not isinstance(trigger, Trigger):
            raise TypeError(f"trigger() needs a Trigger, got {trigger!r}")
        self._trigger = trigger

    def _set_evictor(self, evictor: Evictor) -> None:
        if not isinstance(evictor, Evictor):
            raise TypeError(f"evictor() needs an Evictor, got {evictor!r}")
        self._evictor = evictor

    def _set_allowed_lateness(self, lateness: int | datetime.timedelta) -> None:
        self._allowed_lateness = allowed_lateness_millis(lateness, repr(self._assigner))

    def _build(
        self, window_function: _CoGroupWindowFunction, output_type: OutputType
    ) -> DataStream:
        """Tag, union, key and window the inputs, then apply ``window_function``."""
        tagged1 = self._first.map(_Tagger(1))
        tagged2 = self._second.map(_Tagger(2))
        windowed = (
            tagged1.union(tagged2)
            .key_by(_UnionKeySelector(self._key1, self._key2))
            .window(self._assigner)
        )
        if self._trigger is not None:
            windowed.trigger(self._trigger)
        if self._evictor is not None:
            windowed.evictor(self._evictor)
        if self._allowed_lateness:
            windowed.allowed_lateness(self._allowed_lateness)
        return windowed.apply(window_function, output_type)


class JoinedStreams:
    """``a.join(b)``: continue with ``.where(key_a).equal_to(key_b).window(assigner)``.

    Example:
        >>> from flowkit import StreamExecutionEnvironment
        >>> from flowkit.eventtime.watermarks import WatermarkStrategy
        >>> from flowkit.window import TumblingEventTimeWindows
        >>> env = StreamExecutionEnvironment()
        >>> ts = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        ...     lambda e, _: e[1])
        >>> orders = env.from_collection([("a", 1, "o1"), ("b", 2, "o2")]
        ...     ).assign_timestamps_and_watermarks(ts)
        >>> payments = env.from_collection([("a", 5, "p1"), ("a", 12, "p2")]
        ...     ).assign_timestamps_and_watermarks(ts)
        >>> orders.join(payments).where(lambda o: o[0]).equal_to(lambda p: p[0]).window(
        ...     TumblingEventTimeWindows.of(10)).apply(lambda o, p: (o[2], p[2])
        ...     ).execute_and_collect()
        [('o1', 'p1')]
    """

    def __init__(self, first: DataStream, second: DataStream) -> None:
        self.first = first
        self.second = second

    def where(self, key_selector: Any, key_type: Any = None) -> JoinedStreams.Where:
        """The key of the first input's records (callable, KeySelector, or field)."""
        return JoinedStreams.Where(self, _selector(key_selector))

    class Where:
        """``join(...).where(key)``: continue with ``equal_to(key)``."""

        def __init__(self, streams: JoinedStreams, key1: Callable[[Any], Any]) -> None:
            self._streams = streams
            self._key1 = key1

        def equal_to(self, key_selector: Any, key_type: Any = None) -> JoinedStreams.EqualTo:
            """The key of the second input's records; pairs need equal keys."""
            return JoinedStreams.EqualTo(self._streams, self._key1, _selector(key_selector))

    class EqualTo:
        """``join(...).where(...).equal_to(...)``: continue with ``window(assigner)``."""

        def __init__(
            self, streams: JoinedStreams, key1: Callable[[Any], Any], key2: Callable[[Any], Any]
        ) -> None:
            self._streams = streams
            self._key1 = key1
            self._key2 = key2

        def window(self, assigner: WindowAssigner[Any]) -> JoinedStreams.WithWindow:
            """Join the elements of both inputs that share a key and a window."""
            s = self._streams
            return JoinedStreams.WithWindow(s.first, s.second, self._key1, self._key2, assigner)

    class WithWindow(_TwoInputWindowSpec):
        """A windowed join; finish it with ``apply(join_function)``."""

        def trigger(self, trigger: Trigger) -> JoinedStreams.WithWindow:
            """Replace the assigner's default trigger."""
            self._set_trigger(trigger)
            return self

        def evictor(self, evictor: Evictor) -> JoinedStreams.WithWindow:
            """Remove elements from a window before and/or after the join runs."""
            self._set_evictor(evictor)
            return self

        def allowed_lateness(self, lateness: int | datetime.timedelta) -> JoinedStreams.WithWindow:
            """Keep windows ``lateness`` ms past their end; late elements fire them again."""
            self._set_allowed_lateness(lateness)
            return self

        def apply(self, function: Any, output_type: OutputType = None) -> DataStream:
            """Emit ``function`` of every (first, second) pair of each fired window and key.

            ``function`` is a ``JoinFunction`` (``join(first, second)`` returns one output),
            a ``FlatJoinFunction`` (``join`` yields outputs) or a callable ``(first,
            second) -> output``. Results carry the window's ``max_timestamp()``.
            """
            wrapper: _CoGroupWindowFunction
            if isinstance(function, FlatJoinFunction):
                wrapper = _FlatJoinWindowFunction(function)
            elif not isinstance(function, (str, bytes)) and (
                callable(getattr(function, "join", None)) or callable(function)
            ):
                wrapper = _JoinWindowFunction(function)
            else:
                raise TypeError(
                    f"join apply() needs a JoinFunction, a FlatJoinFunction or a callable "
                    f"(first, second) -> value, got {type(function).__name__} {function!r}"
                )
            return self._build(wrapper, output_type)


class CoGroupedStreams:
    """``a.co_group(b)``: continue with ``.where(key_a).equal_to(key_b).window(assigner)``.

    The function sees, per key and fired window, all elements of each input (lists; one
    of them may be empty).
    """

    def __init__(self, first: DataStream, second: DataStream) -> None:
        self.first = first
        self.second = second

    def where(self, key_selector: Any, key_type: Any = None) -> CoGroupedStreams.Where:
        """The key of the first input's records (callable, KeySelector, or field)."""
        return CoGroupedStreams.Where(self, _selector(key_selector))

    class Where:
        """``co_group(...).where(key)``: continue with ``equal_to(key)``."""

        def __init__(self, streams: CoGroupedStreams, key1: Callable[[Any], Any]) -> None:
            self._streams = streams
            self._key1 = key1

        def equal_to(self, key_selector: Any, key_type: Any = None) -> CoGroupedStreams.EqualTo:
            """The key of the second input's records."""
            return CoGroupedStreams.EqualTo(self._streams, self._key1, _selector(key_selector))

    class EqualTo:
        """``co_group(...).where(...).equal_to(...)``: continue with ``window(assigner)``."""

        def __init__(
            self,
            streams: CoGroupedStreams,
            key1: Callable[[Any], Any],
            key2: Callable[[Any], Any],
        ) -> None:
            self._streams = streams
            self._key1 = key1
            self._key2 = key2

        def window(self, assigner: WindowAssigner[Any]) -> CoGroupedStreams.WithWindow:
            """Group the elements of both inputs by key and window."""
            s = self._streams
            return CoGroupedStreams.WithWindow(s.first, s.second, self._key1, self._key2, assigner)

    class WithWindow(_TwoInputWindowSpec):
        """A windowed co-group; finish it with ``apply(co_group_function)``."""

        def trigger(self, trigger: Trigger) -> CoGroupedStreams.WithWindow:
            """Replace the assigner's default trigger."""
            self._set_trigger(trigger)
            return self

        def evictor(self, evictor: Evictor) -> CoGroupedStreams.WithWindow:
            """Remove elements from a window before and/or after the function runs."""
            self._set_evictor(evictor)
            return self

        def allowed_lateness(
            self, lateness: int | datetime.timedelta
        ) -> CoGroupedStreams.WithWindow:
            """Keep windows ``lateness`` ms past their end; late elements fire them again."""
            self._set_allowed_lateness(lateness)
            return self

        def apply(self, function: Any, output_type: OutputType = None) -> DataStream:
            """Emit what ``function`` yields for each fired window and key.

            ``function`` is a ``CoGroupFunction`` (``co_group(first, second)``) or a
            callable ``(first, second) -> iterable``; ``first`` and ``second`` are lists.
            """
            if not (callable(getattr(function, "co_group", None)) or callable(function)):
                raise TypeError(
                    f"co_group apply() needs a CoGroupFunction or a callable (first, second) "
                    f"-> iterable, got {type(function).__name__} {function!r}"
                )
            return self._build(_CoGroupWindowFunction(function), output_type)


# ---------------------------------------------------------------------- interval joins
class IntervalJoin:
    """``left.interval_join(right)`` on keyed streams: continue with ``between(lower, upper)``.

    Example:
        >>> from flowkit import StreamExecutionEnvironment
        >>> from flowkit.eventtime.watermarks import WatermarkStrategy
        >>> env = StreamExecutionEnvironment()
        >>> ts = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        ...     lambda e, _: e[1])
        >>> clicks = env.from_collection([("u1", 10), ("u2", 20)]
        ...     ).assign_timestamps_and_watermarks(ts).key_by(lambda e: e[0])
        >>> views = env.from_collection([("u1", 7), ("u1", 9), ("u2", 30)]
        ...     ).assign_timestamps_and_watermarks(ts).key_by(lambda e: e[0])
        >>> sorted(clicks.interval_join(views).between(-5, 0).process(
        ...     lambda c, v: (c[0], c[1], v[1])).execute_and_collect())
        [('u1', 10, 7), ('u1', 10, 9)]
    """

    def __init__(self, left: KeyedStream, right: KeyedStream) -> None:
        self.left = left
        self.right = right

    def between(
        self,
        lower_bound: int | datetime.timedelta,
        upper_bound: int | datetime.timedelta,
    ) -> IntervalJoined:
        """Join a left element at ``t`` with right elements in ``[t + lower, t + upper]``.

        Raises:
            InvalidConfigurationError: ``lower_bound > upper_bound``, or a bound is not
                whole milliseconds (an int, or a ``timedelta`` of whole ms).
        """
        lower = whole_millis(lower_bound, "lower_bound", "interval_join(...).between()")
        upper = whole_millis(upper_bound, "upper_bound", "interval_join(...).between()")
        if lower > upper:
            raise InvalidConfigurationError(
                f"interval_join(...).between({lower}, {upper}): the lower bound must be <= the "
                f"upper bound"
            )
        return IntervalJoined(self.left, self.right, lower, upper)


class IntervalJoined:
    """An interval join with its bounds; finish it with ``process(function)``."""

    def __init__(self, left: KeyedStream, right: KeyedStream, lower: int, upper: int) -> None:
        self.left = left
        self.right = right
        self.lower_bound = lower
        self.upper_bound = upper
        self.lower_bound_inclusive = True
        self.upper_bound_inclusive = True
        self._left_late_tag: OutputTag | None = None
        self._right_late_tag: OutputTag | None = None

    def lower_bound_exclusive(self) -> IntervalJoined:
        """Do not join right elements at exactly ``t + lower``."""
        self.lower_bound_inclusive = False
        return self

    def upper_bound_exclusive(self) -> IntervalJoined:
        """Do not join right elements at exactly ``t + upper``."""
        self.upper_bound_inclusive = False
        return self

    def side_output_left_late_data(self, output_tag: OutputTag) -> IntervalJoined:
        """Send late left elements (timestamp below the watermark) to ``output_tag``."""
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"side_output_left_late_data() needs an OutputTag, got {output_tag!r}")
        self._left_late_tag = output_tag
        return self

    def side_output_right_late_data(self, output_tag: OutputTag) -> IntervalJoined:
        """Send late right elements (timestamp below the watermark) to ``output_tag``."""
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"side_output_right_late_data() needs an OutputTag, got {output_tag!r}")
        self._right_late_tag = output_tag
        return self

    def process(self, function: Any, output_type: OutputType = None) -> DataStream:
        """Run ``function`` on every joined pair.

        ``function`` is a ``ProcessJoinFunction`` (``process_element(left, right, ctx)``
        yields outputs; ``ctx.get_left_timestamp()``, ``get_right_timestamp()``,
        ``get_timestamp()``, ``output(tag, value)``) or a callable ``(left, right) ->
        output``. Results carry ``max(left timestamp, right timestamp)``.
        """
        from flowkit.api.datastream import DataStream, _check_function

        _check_function(
            function, "process_element", "interval join process()", "ProcessJoinFunction"
        )
        left, right = self.left, self.right
        key1, key2 = left.key_selector, right.key_selector
        lower, upper = self.lower_bound, self.upper_bound
        lower_inclusive, upper_inclusive = self.lower_bound_inclusive, self.upper_bound_inclusive
        left_tag, right_tag = self._left_late_tag, self._right_late_tag

        def make(name: str) -> IntervalJoinOperator:
            return IntervalJoinOperator(
                name,
                function,
                key1,
                key2,
                lower,
                upper,
                lower_bound_inclusive=lower_inclusive,
                upper_bound_inclusive=upper_inclusive,
                left_late_tag=left_tag,
                right_late_tag=right_tag,
            )

        make("IntervalJoin")  # validate now, before anything runs
        low = "(" if not lower_inclusive else "["
        high = ")" if not upper_inclusive else "]"
        t = left._add(
            "two_input",
            "IntervalJoin",
            make,
            output_type,
            inputs=[left.transformation, right.transformation],
            description=f"{low}{lower}, {upper}{high}, {_describe(function)}",
        )
        t.requires_watermarks = True
        return DataStream(left._env, t)
