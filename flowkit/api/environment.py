"""StreamExecutionEnvironment: configure, add sources, explain, execute."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import AsyncIterable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flowkit.api.config import ExecutionConfig, RuntimeExecutionMode
from flowkit.api.datastream import DataStream
from flowkit.checkpoint.coordinator import CheckpointConfig, CheckpointingMode
from flowkit.checkpoint.restart import RestartStrategy
from flowkit.checkpoint.storage import CompletedCheckpoint, load_checkpoint
from flowkit.errors import InvalidConfigurationError
from flowkit.eventtime.clocks import Clock, ManualClock
from flowkit.eventtime.watermarks import WatermarkStrategy
from flowkit.gc_policy import tuned_gc
from flowkit.graph.explain import explain
from flowkit.graph.job_graph import JobGraph, build_job_graph
from flowkit.graph.transformations import Transformation
from flowkit.operators.source_sink import SourceOperator
from flowkit.runtime.client import JobClient, JobExecutionResult, remove_temporary_directory
from flowkit.runtime.debloat import BufferDebloatConfig
from flowkit.runtime.executor import ExecutionConfig as RuntimeConfig
from flowkit.runtime.executor import LocalExecutor
from flowkit.serialization import resolve_serializer
from flowkit.sources import (
    AsyncIterableSource,
    CollectionSource,
    FileSource,
    SequenceSource,
    SocketTextSource,
    Source,
)
from flowkit.state.key_groups import UPPER_BOUND_MAX_PARALLELISM
from flowkit.typeinfo import TypeInformation

if TYPE_CHECKING:
    from flowkit.web.server import WebUI

__all__ = ["StreamExecutionEnvironment"]

T = TypeVar("T")

_log = logging.getLogger("flowkit.api.environment")

#: How often ``execute()`` in a running loop looks for a cancellation of its caller.
_INTERRUPT_POLL_S = 0.05
#: How long an ``execute()`` interrupted inside ``Thread.start()`` waits for a worker that
#: may or may not have been launched (it ends at once, without running the job).
_LAUNCH_WAIT_S = 1.0


def _check_int(name: str, value: Any, low: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidConfigurationError(f"{name} must be an int >= {low} ({what}), got {value!r}")
    return value


class StreamExecutionEnvironment:
    """Where a job is described and from which it runs.

    Args:
        parallelism: default number of parallel subtasks per operator.
        max_parallelism: number of key groups (default: Flink's rule from parallelism,
            at least 128).
        buffer_size: bytes per network buffer (Flink's segment size, 32 KiB).
        buffers_per_channel: buffers each channel owns; a producer with none free waits.
        buffer_timeout_ms: longest time a partly filled buffer waits before it is handed
            over; 0 hands over after every step, None or -1 only when full.
        auto_watermark_interval_ms: period of watermark generation.
        clock: processing time in epoch milliseconds (tests pass a manual clock).
        use_uvloop: ``execute()`` runs on uvloop when it is installed.
        latency_tracking_interval_ms: sources send latency markers this often; each
            operator reports the latency from the sources in ``client.metrics()``.
        buffer_debloat: ``True`` or a ``BufferDebloatConfig`` (target time, period,
            samples, threshold): each consumer measures its throughput and announces the
            buffer size that drains the data in flight in about the target time.
        freeze_gc: ``execute()`` runs the job inside :func:`flowkit.tuned_gc`: the
            objects alive when the job starts and, as the job runs, those that survive
            the collector's middle generation are moved out of its sight
            (:func:`gc.freeze`), and its thresholds are raised, so that neither the
            batches of young records nor the job's state and results are scanned again
            and again, and a full collection does not stall the loop walking large
            keyed state. Everything is thawed when the job ends (cyclic garbage that
            grew old during the job is freed then). ``execute_async()`` never touches
            the collector: it belongs to the host program, which may use
            ``tuned_gc()`` itself.

    Raises:
        InvalidConfigurationError: for invalid values (before anything runs).

    Example:
        >>> env = StreamExecutionEnvironment(parallelism=2, buffer_size=4096)
        >>> sorted(env.from_sequence(1, 4).map(lambda x: x * x).execute_and_collect())
        [1, 4, 9, 16]
    """

    def __init__(
        self,
        parallelism: int = 1,
        max_parallelism: int | None = None,
        buffer_size: int = 32 * 1024,
        buffers_per_channel: int = 2,
        buffer_timeout_ms: float | None = 100,
        auto_watermark_interval_ms: int = 200,
        clock: Clock | None = None,
        use_uvloop: bool = True,
        latency_tracking_interval_ms: float | None = None,
        buffer_debloat: bool | BufferDebloatConfig = False,
        freeze_gc: bool = True,
    ) -> None:
        self._parallelism = _check_int("parallelism", parallelism, 1, "subtasks per operator")
        self._max_parallelism: int | None = None
        if max_parallelism is not None:
            self.set_max_parallelism(max_parallelism)
            if self._parallelism > max_parallelism:
                raise InvalidConfigurationError(
                    f"parallelism {parallelism} exceeds max_parallelism {max_parallelism}; "
                    f"raise max_parallelism or lower parallelism"
                )
        self.buffer_size = _check_int("buffer_size", buffer_size, 64, "bytes per network buffer")
        self.buffers_per_channel = _check_int(
            "buffers_per_channel", buffers_per_channel, 1, "network buffers per channel"
        )
        self.buffer_timeout_ms = self._check_timeout(buffer_timeout_ms)
        self.auto_watermark_interval_ms = _check_int(
            "auto_watermark_interval_ms",
            auto_watermark_interval_ms,
            0,
            "0 disables periodic watermarks",
        )
        self.clock = clock
        self.use_uvloop = use_uvloop
        self.freeze_gc = freeze_gc
        if latency_tracking_interval_ms is not None and latency_tracking_interval_ms <= 0:
            raise InvalidConfigurationError(
                f"latency_tracking_interval_ms must be > 0 (or None to switch latency "
                f"tracking off), got {latency_tracking_interval_ms!r}"
            )
        self.latency_tracking_interval_ms = latency_tracking_interval_ms
        if buffer_debloat is True:
            buffer_debloat = BufferDebloatConfig(enabled=True)
        if buffer_debloat is False:
            buffer_debloat = BufferDebloatConfig(enabled=False)
        if not isinstance(buffer_debloat, BufferDebloatConfig):
            raise InvalidConfigurationError(
                f"buffer_debloat must be True/False or a BufferDebloatConfig, got {buffer_debloat!r}"
            )
        if buffer_debloat.enabled and buffer_debloat.min_buffer_size < 64:
            raise InvalidConfigurationError(
                f"buffer debloating needs min_buffer_size >= 64, got {buffer_debloat.min_buffer_size}"
            )
        self.buffer_debloat = (
            buffer_debloat.resolve(self.buffer_size) if buffer_debloat.enabled else buffer_debloat
        )
        self.chaining_enabled = True
        self._transformations: list[Transformation] = []
        self.checkpoint_config: CheckpointConfig | None = None
        #: The checkpoint directory flowkit made for ``enable_checkpointing()`` without a
        #: directory. Until a job takes it (that job removes it when it ends; the next
        #: job gets a new one), the environment owns it: this finalizer removes it when
        #: the configuration is replaced, or the environment is collected or the
        #: interpreter exits before a job ran.
        self._temporary_checkpoint_dir: str | None = None
        self._unused_temporary_checkpoint_dir: weakref.finalize | None = None
        self.restart_strategy: RestartStrategy | None = None
        #: ``(host, port)`` of the web UI when :meth:`enable_web_ui` was called.
        self.web_ui_address: tuple[str, int] | None = None
        self._web_ui: WebUI | None = None
        #: Seconds the web UI keeps serving after its last job ended.
        self.web_ui_linger_s = 0.0
        self._runtime_mode = RuntimeExecutionMode.STREAMING
        self._config = ExecutionConfig(self)

    @classmethod
    def get_execution_environment(cls, **config: Any) -> StreamExecutionEnvironment:
        """PyFlink's way to get an environment."""
        return cls(**config)

    # ----------------------------------------------------------------- configuration
    @staticmethod
    def _check_timeout(value: float | None) -> float | None:
        if value is None or value == -1:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise InvalidConfigurationError(
                f"buffer_timeout_ms must be >= 0 (0 = after every step) or None/-1 (only when "
                f"full), got {value!r}"
            )
        return value

    def set_parallelism(self, parallelism: int) -> StreamExecutionEnvironment:
        self._parallelism = _check_int("parallelism", parallelism, 1, "subtasks per operator")
        return self

    def get_parallelism(self) -> int:
        return self._parallelism

    def set_max_parallelism(self, max_parallelism: int) -> StreamExecutionEnvironment:
        _check_int("max_parallelism", max_parallelism, 1, "number of key groups")
        if max_parallelism > UPPER_BOUND_MAX_PARALLELISM:
            raise InvalidConfigurationError(
                f"max_parallelism must be <= {UPPER_BOUND_MAX_PARALLELISM}, got {max_parallelism}"
            )
        self._max_parallelism = max_parallelism
        return self

    def get_max_parallelism(self) -> int | None:
        return self._max_parallelism

    def set_buffer_timeout(self, timeout_ms: float | None) -> StreamExecutionEnvironment:
        self.buffer_timeout_ms = self._check_timeout(timeout_ms)
        return self

    def get_buffer_timeout(self) -> float | None:
        return self.buffer_timeout_ms

    def enable_checkpointing(
        self,
        interval_ms: int,
        mode: CheckpointingMode | str | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
        retained: int = 1,
        timeout_ms: int = 600_000,
        min_pause_ms: int = 0,
        max_concurrent: int = 1,
        tolerable_failed_checkpoints: int = 0,
        snapshot_writer: str = "auto",
    ) -> StreamExecutionEnvironment:
        """Take a checkpoint every ``interval_ms`` into ``directory``; a failed job
        restarts from the latest one.

        Without ``directory``, each job gets a new temporary directory, which flowkit
        removes with its checkpoints when the job ends (finished, failed or cancelled),
        as Flink's checkpoints kept in the JobManager's memory end with the job (one that
        no job used goes with the environment); give a ``directory`` to keep them (to
        resume with ``restore_from``). flowkit has no option to retain checkpoints on
        cancellation: a directory you give stays (with its newest ``retained``
        checkpoints), one flowkit made never does.

        ``mode`` is PyFlink's second positional argument: ``CheckpointingMode.EXACTLY_ONCE``
        (barriers aligned, the default) or ``AT_LEAST_ONCE``, or their lower-case names.
        Every other setting goes by keyword.

        ``snapshot_writer`` chooses what snapshots, serializes and writes each subtask's
        state after its barrier (Flink's asynchronous snapshot phase): ``"fork"``, a
        child process forked at the barrier, whose memory is the subtask's as it was
        then; it snapshots the keyed state and timers and writes them on another core
        while the job's loop goes on (Linux only; elsewhere the loop); ``"loop"``, a
        copy-on-write snapshot at the barrier, serialized on the job's event loop in
        slices that take about a tenth of its time while records flow; ``"auto"`` (the
        default), a child process for a subtask holding 100,000 keyed state entries and
        timers or more, else the loop.

        Example:
            >>> env = StreamExecutionEnvironment()
            >>> _ = env.enable_checkpointing(30_000, CheckpointingMode.AT_LEAST_ONCE,
            ...                              directory="ckpt")
            >>> env.checkpoint_config.mode, env.checkpoint_config.directory
            ('at_least_once', 'ckpt')

        Raises:
            InvalidConfigurationError: for invalid values, e.g. a directory given as the
                second positional argument (the mode's place).
        """
        if isinstance(mode, CheckpointingMode):
            mode = mode.value
        elif mode is None:
            mode = CheckpointingMode.EXACTLY_ONCE.value
        elif not (isinstance(mode, str) and mode.lower() in ("exactly_once", "at_least_once")):
            raise InvalidConfigurationError(
                f"enable_checkpointing: the second argument is the checkpointing mode "
                f"(CheckpointingMode.EXACTLY_ONCE or AT_LEAST_ONCE), as in PyFlink, got "
                f"{mode!r}; pass the checkpoint directory by keyword: directory=..."
            )
        else:
            mode = mode.lower()
        temporary = None
        if directory is None:
            directory = temporary = _make_temporary_checkpoint_dir()
        try:
            config = CheckpointConfig(
                interval_ms=int(interval_ms),
                directory=os.fspath(directory),
                mode=mode,
                retained=retained,
                timeout_ms=timeout_ms,
                min_pause_ms=min_pause_ms,
                max_concurrent=max_concurrent,
                tolerable_failed_checkpoints=tolerable_failed_checkpoints,
                snapshot_writer=snapshot_writer,
            )
        except ValueError as exc:
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
            raise InvalidConfigurationError(f"enable_checkpointing: {exc}") from None
        if self._unused_temporary_checkpoint_dir is not None:
            self._unused_temporary_checkpoint_dir()  # the replaced configuration's: unused
        self.checkpoint_config = config
        self._own_temporary_checkpoint_dir(temporary)
        return self

    def _own_temporary_checkpoint_dir(self, temporary: str | None) -> None:
        self._temporary_checkpoint_dir = temporary
        self._unused_temporary_checkpoint_dir = (
            None if temporary is None else weakref.finalize(self, shutil.rmtree, temporary, True)
        )

    def _uses_temporary_checkpoint_dir(self) -> bool:
        config = self.checkpoint_config
        temporary = self._temporary_checkpoint_dir
        # a user may have replaced checkpoint_config with one of their own
        return config is not None and temporary is not None and config.directory == temporary

    def _take_temporary_checkpoint_dir(self) -> str | None:
        """The temporary checkpoint directory for the job about to start (a new one if an
        earlier job took the last one), or None when the checkpoint directory is the
        user's. The caller removes it when the job ends."""
        if not self._uses_temporary_checkpoint_dir():
            return None
        unused = self._unused_temporary_checkpoint_dir
        if unused is None:  # an earlier job took it
            assert self.checkpoint_config is not None
            temporary = _make_temporary_checkpoint_dir()
            self.checkpoint_config = dataclasses.replace(
                self.checkpoint_config, directory=temporary
            )
            self._temporary_checkpoint_dir = temporary
        else:
            unused.detach()
        self._unused_temporary_checkpoint_dir = None
        return self._temporary_checkpoint_dir

    def get_checkpoint_config(self) -> CheckpointConfig | None:
        return self.checkpoint_config

    def set_restart_strategy(self, strategy: RestartStrategy | None) -> StreamExecutionEnvironment:
        """How a failed job restarts (default: none without checkpointing, exponential
        delay with it, as in Flink). None (PyFlink's
        ``RestartStrategies.fall_back_restart()``) restores the default."""
        if strategy is not None and not isinstance(strategy, RestartStrategy):
            raise TypeError(f"set_restart_strategy() needs a RestartStrategy, got {strategy!r}")
        self.restart_strategy = strategy
        return self

    def get_restart_strategy(self) -> RestartStrategy | None:
        return self.restart_strategy

    def set_runtime_mode(self, execution_mode: RuntimeExecutionMode) -> StreamExecutionEnvironment:
        """Run the job as a stream (``STREAMING``, the default), as a batch over bounded
        input (``BATCH``: final results only, see :class:`RuntimeExecutionMode`), or
        whichever fits the sources (``AUTOMATIC``).

        Raises:
            TypeError: ``execution_mode`` is not a :class:`RuntimeExecutionMode`.
        """
        if not isinstance(execution_mode, RuntimeExecutionMode):
            raise TypeError(
                f"set_runtime_mode() needs a RuntimeExecutionMode (STREAMING, BATCH or "
                f"AUTOMATIC), got {execution_mode!r}"
            )
        self._runtime_mode = execution_mode
        return self

    def get_runtime_mode(self) -> RuntimeExecutionMode:
        return self._runtime_mode

    def get_config(self) -> ExecutionConfig:
        """PyFlink's ``ExecutionConfig`` view of this environment's settings."""
        return self._config

    # PyFlink ships Java and Python dependencies to a cluster; in flowkit the job runs in
    # this interpreter, which already has them.
    def add_jars(self, *jars_path: str) -> None:
        """Accepted: flowkit runs no Java, so there is nothing to add."""

    def add_classpaths(self, *classpaths: str) -> None:
        """Accepted: flowkit runs no Java, so there is nothing to add."""

    def add_python_file(self, file_path: str) -> None:
        """Accepted: the job runs in this interpreter, which imports what it needs."""

    def set_python_requirements(self, requirements_file_path: str, *args: Any) -> None:
        """Accepted: the job runs in this interpreter, with its installed packages."""

    def set_python_executable(self, python_exec: str) -> None:
        """Accepted: the job runs in this interpreter."""

    def enable_web_ui(
        self,
        port: int = 8081,
        host: str = "127.0.0.1",
        allow_remote: bool = False,
        linger_s: float = 0.0,
    ) -> StreamExecutionEnvironment:
        """Serve a REST API and a dashboard while this environment's jobs run.

        The server starts with the first job (``execute()`` or ``execute_async()``), runs
        in the job's event loop, serves every job of this environment that runs at the
        same time, and closes when the last of them has ended. Its address is
        :attr:`web_ui_url` (and ``client.web_ui_url``). Needs the extra ``web``
        (``pip install 'flowkit-streaming[web]'``).

        Args:
            port: TCP port; 0 picks a free one.
            host: the address to bind, the loopback interface by default.
            allow_remote: must be True to bind anything but a loopback address: the API
                can cancel jobs and write savepoints, and has no authentication.
            linger_s: keep serving this many seconds after the last job ended, so its
                final state can still be read (``execute()`` returns after that).

        Raises:
            InvalidConfigurationError: for a bad port, a non-loopback host without
                ``allow_remote=True``, or when aiohttp is not installed.

        Example:
            >>> env = StreamExecutionEnvironment().enable_web_ui(port=0)
            >>> env.web_ui_address
            ('127.0.0.1', 0)
        """
        from flowkit.web import is_loopback, require_aiohttp

        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidConfigurationError(
                f"enable_web_ui: port must be an int in 0..65535 (0 picks a free port), "
                f"got {port!r}"
            )
        if not isinstance(host, str) or not host:
            raise InvalidConfigurationError(f"enable_web_ui: host must be a string, got {host!r}")
        if not allow_remote and not is_loopback(host):
            raise InvalidConfigurationError(
                f"enable_web_ui: host {host!r} is not a loopback address; the web UI can "
                f"cancel jobs and write savepoints and has no authentication, so it binds "
                f"127.0.0.1 by default. Pass allow_remote=True to bind {host!r} anyway"
            )
        if (
            isinstance(linger_s, bool)
            or not isinstance(linger_s, (int, float))
            or not (0 <= linger_s < float("inf"))
        ):
            raise InvalidConfigurationError(
                f"enable_web_ui: linger_s must be a number of seconds >= 0, got {linger_s!r}"
            )
        require_aiohttp()
        # Import the server now: importing aiohttp takes about 0.2 s, which would stall
        # the event loop (and every task in it) when the first job starts.
        import flowkit.web.server  # noqa: F401

        self.web_ui_address = (host, port)
        self.web_ui_linger_s = float(linger_s)
        return self

    @property
    def web_ui_url(self) -> str | None:
        """The web UI's URL (``http://127.0.0.1:<port>``) while it serves, else None."""
        web_ui = self._web_ui
        return web_ui.url if web_ui is not None else None

    async def _serve_web_ui(self, client: JobClient) -> None:
        """Start the web UI (unless it already serves in this loop) and register ``client``."""
        if self.web_ui_address is None:
            return
        from flowkit.web.server import WebUI

        loop = asyncio.get_running_loop()
        closing = self._web_ui
        if closing is not None and not closing.serving and closing.loop is loop:
            await closing.wait_closed()  # let the last server free its port
        web_ui = self._web_ui
        if web_ui is None or not web_ui.serving or web_ui.loop is not loop:
            web_ui = WebUI(*self.web_ui_address, linger_s=self.web_ui_linger_s)
            try:
                await web_ui.start()
            except BaseException:
                await client.cancel()
                raise
            self._web_ui = web_ui
        web_ui.register(client)

    async def _web_ui_closed(self) -> None:
        """Wait until the web UI (if any serves in this loop) has closed."""
        web_ui = self._web_ui
        if web_ui is not None and web_ui.loop is asyncio.get_running_loop():
            await web_ui.wait_closed()

    def disable_operator_chaining(self) -> StreamExecutionEnvironment:
        """Run every operator in its own subtask (records cross channels everywhere)."""
        self.chaining_enabled = False
        return self

    def is_chaining_enabled(self) -> bool:
        return self.chaining_enabled

    # ----------------------------------------------------------------- sources
    def _register(self, t: Transformation) -> None:
        self._transformations.append(t)

    def from_source(
        self,
        source: Source,
        watermark_strategy: Any = None,
        source_name: str | None = None,
        type_info: Any = None,
        output_type: Any = None,
    ) -> DataStream:
        """A stream read from ``source`` (any :class:`~flowkit.sources.Source`).

        ``type_info`` (PyFlink's type information of the records, also accepted as
        ``output_type``) gives the stream its type: see :mod:`flowkit.typeinfo`.
        """
        if not isinstance(source, Source):
            raise TypeError(f"from_source() expects a flowkit Source, got {source!r}")
        if type_info is not None and output_type is not None:
            raise TypeError("from_source() takes type_info or output_type, not both")
        output_type = type_info if type_info is not None else output_type
        name = str(source_name or getattr(source, "name", None) or "Source")
        t = Transformation(
            kind="source",
            name=name,
            operator_max_parallelism=source.max_parallelism,
            serializer=resolve_serializer(output_type),
            type_info=output_type if isinstance(output_type, TypeInformation) else None,
            description=type(source).__qualname__
            + (f", {watermark_strategy!r}" if watermark_strategy is not None else ""),
            source=source,
        )
        if watermark_strategy is not None and not isinstance(watermark_strategy, WatermarkStrategy):
            raise TypeError(f"from_source() needs a WatermarkStrategy, got {watermark_strategy!r}")
        interval = self.auto_watermark_interval_ms
        t.operator_factory = lambda: SourceOperator(t.name, source, watermark_strategy, interval)
        t.emits_watermarks = bool(getattr(source, "emits_watermarks", False)) or (
            watermark_strategy is not None and watermark_strategy.emits_watermarks
        )
        self._register(t)
        return DataStream(self, t)

    add_source = from_source

    def from_collection(self, collection: Any, type_info: Any = None) -> DataStream:
        """The elements of ``collection`` in order (a non-parallel source).

        With ``type_info`` (PyFlink's ``Types``), the stream carries that type and its
        elements become records of it: with ``Types.ROW_NAMED(names, types)`` each tuple
        becomes a :class:`~flowkit.typeinfo.Row` whose fields are read by name.

        Example:
            >>> from flowkit.typeinfo import Types
            >>> env = StreamExecutionEnvironment()
            >>> rows = env.from_collection([(1, "a")], Types.ROW_NAMED(["id", "tag"],
            ...     [Types.INT(), Types.STRING()]))
            >>> rows.map(lambda row: row.tag * row.id).execute_and_collect()
            ['a']
        """
        if type_info is not None and not isinstance(type_info, TypeInformation):
            raise TypeError(
                f"from_collection() type_info must be type information (Types.INT(), ...), "
                f"got {type_info!r}"
            )
        if type_info is not None and type_info.needs_conversion():
            collection = [type_info.from_python(item) for item in collection]
        return self.from_source(
            CollectionSource(collection), source_name="Collection Source", type_info=type_info
        )

    def from_sequence(self, start: int, end: int) -> DataStream:
        """The integers ``start..end`` (inclusive), read in parallel ranges."""
        return self.from_source(SequenceSource(start, end), source_name="Sequence Source")

    def from_async_iterable(self, iterable: Any, bounded: bool = True) -> DataStream:
        """Records from an async iterable, an ``asyncio.Queue`` or a callable returning one.

        The job runs in the caller's event loop, so the iterable may await anything that
        loop serves. It cannot be replayed after a failure.
        """
        if not (isinstance(iterable, (AsyncIterable, asyncio.Queue)) or callable(iterable)):
            raise TypeError(
                f"from_async_iterable() expects an async iterable, an asyncio.Queue or a "
                f"callable returning one, got {type(iterable).__name__}"
            )
        return self.from_source(
            AsyncIterableSource(iterable, bounded), source_name="Async Iterable Source"
        )

    def socket_text_stream(self, host: str, port: int, delimiter: str = "\n") -> DataStream:
        """Lines read from a TCP connection until the peer closes it."""
        return self.from_source(
            SocketTextSource(host, port, delimiter), source_name="Socket Stream"
        )

    def read_text_file(self, file_path: str) -> DataStream:
        """The lines of a text file."""
        return self.from_source(FileSource(file_path), source_name="File Source")

    # ----------------------------------------------------------------- plans
    def is_batch(self) -> bool:
        """Whether the job described so far runs in BATCH mode: ``BATCH``, or
        ``AUTOMATIC`` with only bounded sources.

        Raises:
            InvalidConfigurationError: ``BATCH`` with an unbounded source (named).
        """
        sources = [t for t in self._transformations if t.kind == "source"]
        unbounded = [t for t in sources if not getattr(t.source, "bounded", True)]
        mode = self._runtime_mode
        if mode is RuntimeExecutionMode.AUTOMATIC:
            return not unbounded
        if mode is RuntimeExecutionMode.BATCH and unbounded:
            names = ", ".join(f"{t.name!r} ({type(t.source).__name__})" for t in unbounded)
            raise InvalidConfigurationError(
                f"RuntimeExecutionMode.BATCH needs bounded sources, but {names} "
                f"{'is' if len(unbounded) == 1 else 'are'} unbounded: run the job in "
                f"STREAMING (or AUTOMATIC) mode, or make the source bounded (e.g. "
                f"KafkaSource.builder().set_bounded(...))"
            )
        return mode is RuntimeExecutionMode.BATCH

    def _configure_execution_mode(self, batch: bool) -> None:
        """Have every operator built for the job run in BATCH (or STREAMING) mode."""
        for t in self._transformations:
            t.batch_execution = batch
            factory = t.operator_factory
            if factory is not None and not getattr(factory, "mode_aware", False):
                t.operator_factory = _mode_aware_factory(t, factory)

    def get_job_graph(self, job_name: str = "flowkit job") -> JobGraph:
        """Build (and validate) the job graph of everything described so far.

        Raises:
            InvalidConfigurationError: nothing to run, an invalid plan, or an unbounded
                source in BATCH mode.
        """
        if not self._transformations:
            raise InvalidConfigurationError(
                "no operators defined: add a source and a sink before executing"
            )
        self._configure_execution_mode(self.is_batch())
        return build_job_graph(
            job_name,
            self._transformations,
            self._parallelism,
            self._max_parallelism,
            self.chaining_enabled,
        )

    def explain(self, format: str = "text") -> str:
        """The plan as ``"text"`` (operators, chains, subtasks and channels), a
        ``"mermaid"`` flowchart or a Graphviz ``"dot"`` digraph.

        Example:
            >>> env = StreamExecutionEnvironment()
            >>> _ = env.from_collection([1]).map(abs).print()
            >>> env.explain("dot").splitlines()[0]
            'digraph "flowkit job" {'
        """
        return explain(self.get_job_graph(), format)

    def get_execution_plan(self) -> str:
        return self.explain("text")

    # ----------------------------------------------------------------- running
    def _executor(
        self,
        job_name: str,
        restore_from: CompletedCheckpoint | None = None,
        allow_non_restored_state: bool = False,
        fallback_to_older_checkpoint: bool = False,
    ) -> LocalExecutor:
        graph = self.get_job_graph(job_name)
        if (
            self._unused_temporary_checkpoint_dir is not None
            and self._uses_temporary_checkpoint_dir()
        ):
            # Run by another caller than execute_async() (a cluster's process): the
            # directory is that caller's now, which does not remove it.
            self._unused_temporary_checkpoint_dir.detach()
            self._unused_temporary_checkpoint_dir = None
        clock = self.clock
        if clock is None and any(
            getattr(t.source, "needs_manual_clock", False) for t in self._transformations
        ):
            # A TestStream that moves processing time drives a manual clock from 0.
            clock = ManualClock(0)
        buffer_timeout = self._job_buffer_timeout()
        checkpoint = self.checkpoint_config
        if checkpoint is not None and self.is_batch():
            _log.info(
                "job %r runs in BATCH mode: no checkpoints are taken (as in Flink); a "
                "failure restarts it from the beginning",
                job_name,
            )
            checkpoint = None
        self._transformations = []
        config = RuntimeConfig(
            buffer_size=self.buffer_size,
            buffers_per_channel=self.buffers_per_channel,
            buffer_timeout_ms=buffer_timeout,
            clock=clock,
            checkpoint=checkpoint,
            restart_strategy=self.restart_strategy,
            restore_from=restore_from,
            allow_non_restored_state=allow_non_restored_state,
            fallback_to_older_checkpoint=fallback_to_older_checkpoint,
            latency_tracking_interval_ms=self.latency_tracking_interval_ms,
            buffer_debloat=self.buffer_debloat,
        )
        return LocalExecutor(graph, config)

    def _job_buffer_timeout(self) -> float | None:
        """The job's buffer timeout: the smallest of the environment's and the operators'
        own (``set_buffer_timeout``), so no operator's data waits longer than it asked."""
        timeouts = [
            t.buffer_timeout_ms for t in self._transformations if t.buffer_timeout_ms is not None
        ]
        if self.buffer_timeout_ms is not None:
            timeouts.append(self.buffer_timeout_ms)
        return min(timeouts) if timeouts else None

    async def execute_async(
        self,
        job_name: str | None = None,
        restore_from: str | os.PathLike[str] | None = None,
        allow_non_restored_state: bool = False,
        fallback_to_older_checkpoint: bool = False,
    ) -> JobClient:
        """Start the job in the running event loop and return its :class:`JobClient`.

        Args:
            job_name: shown in logs, metrics and the web UI (default ``"flowkit job"``).
            restore_from: a ``chk-<id>`` directory, a savepoint directory, or a
                checkpoint root directory (then its newest complete checkpoint); operator
                state is matched by ``uid`` and may be restored at another parallelism.
            allow_non_restored_state: skip state of operators the job no longer has.
            fallback_to_older_checkpoint: when the newest checkpoint (of a root given as
                ``restore_from``, or the one a restart after a failure would use) is
                damaged, restore the newest intact older one instead of failing, and log
                a WARNING that names the damaged files, the checkpoint used and what may
                be repeated (output committed after it can be written again).

        Raises:
            CorruptCheckpointError: ``restore_from`` is damaged (each damaged file is
                named), unless the fallback applies.
            InvalidConfigurationError: the snapshot does not fit the job.

        Example:
            >>> async def resume(env):
            ...     client = await env.execute_async("job", restore_from="ckpt")
            ...     return await client.wait()
        """
        temporary = self._take_temporary_checkpoint_dir()
        try:
            snapshot = (
                await load_checkpoint(restore_from, fallback=fallback_to_older_checkpoint)
                if restore_from is not None
                else None
            )
            name = job_name or "flowkit job"
            executor = self._executor(
                name, snapshot, allow_non_restored_state, fallback_to_older_checkpoint
            )
            await executor.prepare_restore()  # a snapshot that does not fit fails here
        except BaseException:
            if temporary is not None:  # no job: nothing will remove it otherwise
                remove_temporary_directory(temporary)
            raise
        # From here on the client removes the temporary directory when the job ends.
        client = JobClient(name, executor, temporary_checkpoint_dir=temporary)
        await self._serve_web_ui(client)
        return client

    def execute(
        self,
        job_name: str | None = None,
        restore_from: str | os.PathLike[str] | None = None,
        allow_non_restored_state: bool = False,
        fallback_to_older_checkpoint: bool = False,
    ) -> JobExecutionResult:
        """Run the job to completion on a new event loop (uvloop when available).

        Takes the arguments of :meth:`execute_async`. Called where an event loop already
        runs (a Jupyter cell, an ``async def``), it runs the job on a private loop in a
        worker thread and blocks until the job ends (Ctrl-C or an interrupted cell cancels
        the job). Code that must keep its loop running, or whose sources and sinks belong
        to that loop (an ``asyncio.Queue``, a connection), uses ``await
        env.execute_async()`` instead.

        Raises:
            JobFailed: when the job fails.
            CorruptCheckpointError: when ``restore_from`` (or, on a restart, the newest
                checkpoint) is damaged and no fallback was asked for.

        Example:
            >>> env = StreamExecutionEnvironment()
            >>> _ = env.from_collection([1, 2]).print()
            >>> async def cell():  # e.g. a notebook cell: a loop is running
            ...     return env.execute("in a notebook").job_name
            >>> asyncio.run(cell())
            1
            2
            'in a notebook'
        """

        async def main() -> JobExecutionResult:
            client = await self.execute_async(
                job_name, restore_from, allow_non_restored_state, fallback_to_older_checkpoint
            )
            try:
                return await client.wait()
            except asyncio.CancelledError:
                # Interrupted (Ctrl-C): stop the job in order, its checkpoint writes and
                # clean-up included, before the loop closes.
                await client.cancel()
                raise
            finally:
                await self._web_ui_closed()

        with tuned_gc() if self.freeze_gc else contextlib.nullcontext():
            if _loop_is_running():
                return _run_in_worker_thread(main, self.use_uvloop)
            return _run(main(), self.use_uvloop)


def _make_temporary_checkpoint_dir() -> str:
    return tempfile.mkdtemp(prefix="flowkit-checkpoints-")


def _mode_aware_factory(t: Transformation, factory: Callable[[], Any]) -> Callable[[], Any]:
    """``factory``, configuring each operator it builds for BATCH execution when the
    transformation runs in BATCH mode (operators that differ have
    ``enable_batch_execution``)."""

    def make() -> Any:
        op = factory()
        if t.batch_execution:
            enable = getattr(op, "enable_batch_execution", None)
            if callable(enable):
                enable()
        return op

    make.mode_aware = True  # type: ignore[attr-defined]
    return make


def _loop_is_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_in_worker_thread(main: Callable[[], Coroutine[Any, Any, T]], use_uvloop: bool) -> T:
    """Run ``main()`` on a new event loop in a worker thread and wait for its result.

    The calling thread (whose own loop is running) blocks; an exception raised while it
    waits (``KeyboardInterrupt`` from an interrupted notebook cell) cancels ``main`` and
    waits for it to unwind before it propagates. The worker does not begin ``main`` before
    the caller has seen ``Thread.start()`` return: an interrupt that lands inside
    ``start()`` itself (it waits for the new thread, and may be kept waiting while the
    job starts) tells the worker to end without running it.
    """
    outcome: dict[str, Any] = {}
    launched = threading.Event()  # the worker thread runs
    go = threading.Event()  # set once the caller can cancel what the worker runs
    started = threading.Event()
    finished = threading.Event()

    async def runner() -> T:
        outcome["loop"] = asyncio.get_running_loop()
        task = asyncio.ensure_future(main())
        outcome["task"] = task
        started.set()
        return await task

    def target() -> None:
        launched.set()
        go.wait()
        try:
            if not outcome.get("abandoned"):
                outcome["result"] = _run(runner(), use_uvloop)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            started.set()
            finished.set()

    def cancel_and_wait() -> None:
        started.wait()
        loop, task = outcome.get("loop"), outcome.get("task")
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(task.cancel)
        finished.wait()
        worker.join()

    caller = asyncio.current_task()
    worker = threading.Thread(target=target, name="flowkit-execute", daemon=True)
    # Wait on an Event, not on Thread.join(): a KeyboardInterrupt that interrupts join()
    # can mark a thread that still runs as stopped (Python 3.11).
    try:
        worker.start()
        go.set()
        while not finished.wait(_INTERRUPT_POLL_S):
            if caller is not None and caller.cancelling():
                # asyncio.run() turns Ctrl-C into a cancellation of its main task, which
                # cannot reach this blocked task: cancel the job and let it through.
                cancel_and_wait()
                raise asyncio.CancelledError("env.execute() was cancelled")
    except BaseException:  # KeyboardInterrupt from an interrupted notebook cell
        if not go.is_set():
            # Interrupted inside start(): the job has not begun, and will not. The worker
            # ends at once; wait for it unless it never got going.
            outcome["abandoned"] = True
            go.set()
            if launched.wait(_LAUNCH_WAIT_S):
                finished.wait()
                worker.join()
        elif not finished.is_set():
            cancel_and_wait()
        else:
            worker.join()  # it ended meanwhile: nothing may run on once this raises
        raise
    worker.join()
    error = outcome.get("error")
    if error is not None:
        raise error
    return cast(T, outcome["result"])


def _run(coro: Any, use_uvloop: bool) -> Any:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)
