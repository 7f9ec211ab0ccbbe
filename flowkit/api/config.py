"""Job-wide settings in PyFlink's shape: ``RuntimeExecutionMode`` and ``env.get_config()``."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from flowkit.errors import InvalidConfigurationError

if TYPE_CHECKING:
    from flowkit.api.environment import StreamExecutionEnvironment
    from flowkit.checkpoint.restart import RestartStrategy

__all__ = ["ExecutionConfig", "RuntimeExecutionMode"]


class RuntimeExecutionMode(enum.Enum):
    """How a job runs (``env.set_runtime_mode(mode)``), as in Flink.

    * ``STREAMING`` (the default): results as records come; watermarks, timers and
      checkpoints as configured.
    * ``BATCH``: every source must be bounded; keyed rolling aggregations (``reduce``,
      ``sum``, ``min``...) emit one final result per key at the end of the input instead
      of every intermediate one; event-time windows and timers fire at the end of the
      input (sources make no watermarks before it); no checkpoints are taken.
    * ``AUTOMATIC``: ``BATCH`` when every source is bounded, else ``STREAMING``.
    """

    STREAMING = 0
    BATCH = 1
    AUTOMATIC = 2


class ExecutionConfig:
    """``env.get_config()``: PyFlink's view of the environment's settings.

    Changes go to the environment (the same settings as its own methods).

    Example:
        >>> from flowkit import StreamExecutionEnvironment
        >>> env = StreamExecutionEnvironment()
        >>> env.get_config().set_auto_watermark_interval(50).get_auto_watermark_interval()
        50
        >>> env.auto_watermark_interval_ms
        50
    """

    def __init__(self, env: StreamExecutionEnvironment) -> None:
        self._env = env
        self._object_reuse = False
        self._job_parameters: dict[str, str] = {}

    def set_auto_watermark_interval(self, interval: int) -> ExecutionConfig:
        """Generate periodic watermarks every ``interval`` ms (0 disables them)."""
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
            raise InvalidConfigurationError(
                f"the auto watermark interval must be an int >= 0 (ms), got {interval!r}"
            )
        self._env.auto_watermark_interval_ms = interval
        return self

    def get_auto_watermark_interval(self) -> int:
        return self._env.auto_watermark_interval_ms

    def set_parallelism(self, parallelism: int) -> ExecutionConfig:
        self._env.set_parallelism(parallelism)
        return self

    def get_parallelism(self) -> int:
        return self._env.get_parallelism()

    def set_max_parallelism(self, max_parallelism: int) -> ExecutionConfig:
        self._env.set_max_parallelism(max_parallelism)
        return self

    def get_max_parallelism(self) -> int | None:
        return self._env.get_max_parallelism()

    def set_latency_tracking_interval(self, interval: int) -> ExecutionConfig:
        """Send latency markers every ``interval`` ms (0 or less: off)."""
        self._env.latency_tracking_interval_ms = interval if interval > 0 else None
        return self

    def get_latency_tracking_interval(self) -> float | None:
        return self._env.latency_tracking_interval_ms

    def enable_object_reuse(self) -> ExecutionConfig:
        """Accepted: chained operators never copy records in flowkit anyway."""
        self._object_reuse = True
        return self

    def disable_object_reuse(self) -> ExecutionConfig:
        self._object_reuse = False
        return self

    def is_object_reuse_enabled(self) -> bool:
        return self._object_reuse

    def set_global_job_parameters(
        self, global_job_parameters_dict: dict[str, str]
    ) -> ExecutionConfig:
        """Parameters every function can read (``get_global_job_parameters()``)."""
        self._job_parameters = dict(global_job_parameters_dict)
        return self

    def get_global_job_parameters(self) -> dict[str, str]:
        return dict(self._job_parameters)

    def set_restart_strategy(self, restart_strategy: RestartStrategy | None) -> ExecutionConfig:
        """As ``env.set_restart_strategy``."""
        self._env.set_restart_strategy(restart_strategy)
        return self

    def get_restart_strategy(self) -> RestartStrategy | None:
        return self._env.restart_strategy

    def set_runtime_mode(self, mode: RuntimeExecutionMode) -> ExecutionConfig:
        """As ``env.set_runtime_mode``."""
        self._env.set_runtime_mode(mode)
        return self

    def __repr__(self) -> str:
        return f"ExecutionConfig(parallelism={self.get_parallelism()})"

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"ExecutionConfig has no {name!r}: flowkit's has the watermark interval, "
            f"parallelism, latency tracking, object reuse, job parameters, restart strategy "
            f"and runtime mode settings"
        )
