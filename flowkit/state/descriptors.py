"""State descriptors: the name and kind of a piece of keyed state (immutable descriptions)."""

from __future__ import annotations

from typing import Any

from flowkit.state.ttl import StateTtlConfig

__all__ = [
    "AggregatingStateDescriptor",
    "ListStateDescriptor",
    "MapStateDescriptor",
    "ReducingStateDescriptor",
    "StateDescriptor",
    "ValueStateDescriptor",
]


class StateDescriptor:
    """Base: a state's name (unique per operator) and optional TTL configuration."""

    kind = "?"

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("a state descriptor needs a non-empty name")
        self.name = name
        self.ttl_config: StateTtlConfig | None = None

    def enable_time_to_live(self, ttl_config: StateTtlConfig) -> None:
        """Expire entries ``ttl_config.get_ttl()`` ms after they were last written (or read).

        With TTL the descriptor's default value is ignored: absent or expired state reads
        as None.

        Raises:
            TypeError: ``ttl_config`` is not a :class:`StateTtlConfig`.
        """
        if not isinstance(ttl_config, StateTtlConfig):
            raise TypeError(
                f"enable_time_to_live needs a StateTtlConfig "
                f"(StateTtlConfig.new_builder(ttl_ms).build()), got {ttl_config!r}"
            )
        self.ttl_config = ttl_config

    def get_ttl_config(self) -> StateTtlConfig | None:
        """The TTL configuration, or None."""
        return self.ttl_config

    @property
    def has_ttl(self) -> bool:
        """Whether entries of this state expire (a TTL config that is enabled)."""
        config = self.ttl_config
        return config is not None and config.is_enabled()

    def get_name(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ValueStateDescriptor(StateDescriptor):
    """One value per key: ``ValueStateDescriptor("count", default=0)``.

    ``value_type_info`` is accepted for PyFlink compatibility and ignored.
    """

    kind = "value"

    def __init__(self, name: str, value_type_info: Any = None, default: Any = None) -> None:
        super().__init__(name)
        self.default = default


class ListStateDescriptor(StateDescriptor):
    """A list per key."""

    kind = "list"

    def __init__(self, name: str, elem_type_info: Any = None) -> None:
        super().__init__(name)


class MapStateDescriptor(StateDescriptor):
    """A dict per key."""

    kind = "map"

    def __init__(self, name: str, key_type_info: Any = None, value_type_info: Any = None) -> None:
        super().__init__(name)


class ReducingStateDescriptor(StateDescriptor):
    """One value per key, folded with ``reduce_function`` on every ``add``."""

    kind = "reducing"

    def __init__(self, name: str, reduce_function: Any, type_info: Any = None) -> None:
        super().__init__(name)
        reduce = getattr(reduce_function, "reduce", reduce_function)
        if not callable(reduce):
            raise TypeError(
                f"ReducingStateDescriptor needs a reduce function, got {reduce_function!r}"
            )
        self.reduce_function = reduce


class AggregatingStateDescriptor(StateDescriptor):
    """An accumulator per key, updated with an ``AggregateFunction`` on every ``add``."""

    kind = "aggregating"

    def __init__(self, name: str, agg_function: Any, state_type_info: Any = None) -> None:
        super().__init__(name)
        for method in ("create_accumulator", "add", "get_result"):
            if not callable(getattr(agg_function, method, None)):
                raise TypeError(
                    f"AggregatingStateDescriptor needs an AggregateFunction, got {agg_function!r}"
                )
        self.agg_function = agg_function
