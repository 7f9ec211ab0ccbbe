"""PyFlink compatibility: ``flowkit.pyflink`` module paths, type information and the
Java-style printing it selects, and the PyFlink names and behaviours a ported job uses."""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import pkgutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import flowkit
import flowkit.pyflink
from flowkit.pyflink.common import (
    Duration,
    Encoder,
    Row,
    RowKind,
    Time,
    Types,
    WatermarkStrategy,
)
from flowkit.pyflink.common.restart_strategy import RestartStrategies
from flowkit.pyflink.datastream import (
    AsyncDataStream,
    AsyncFunction,
    AsyncRetryStrategy,
    CheckpointingMode,
    KeyedProcessFunction,
    ProcessWindowFunction,
    RuntimeExecutionMode,
    StreamExecutionEnvironment,
    WindowFunction,
    async_retry_predicates,
)
from flowkit.pyflink.datastream.connectors import (
    FileSink,
    FileSource,
    OutputFileConfig,
    RollingPolicy,
    StreamFormat,
)
from flowkit.pyflink.datastream.functions import Partitioner
from flowkit.pyflink.datastream.state import ValueStateDescriptor
from flowkit.pyflink.datastream.window import CountWindow, TimeWindow, TumblingEventTimeWindows

# Importing flowkit.pyflink quiets the ``flowkit`` logger (see its docstring); the rest
# of the test session keeps the default.
logging.getLogger("flowkit").setLevel(logging.NOTSET)

COMPAT_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(flowkit.pyflink.__path__, "flowkit.pyflink.")
    if not info.name.endswith(".kafka")  # needs the kafka extra; checked below
)


def printed(env: StreamExecutionEnvironment, capsys: pytest.CaptureFixture[str]) -> list[str]:
    env.execute()
    return capsys.readouterr().out.splitlines()


def part_lines(directory: Path) -> list[str]:
    """The lines of the committed part files under ``directory`` (hidden files skipped)."""
    return [
        line
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


# ------------------------------------------------------------------------ module paths
@pytest.mark.parametrize(
    "path",
    [
        "flowkit.pyflink.common",
        "flowkit.pyflink.common.typeinfo",
        "flowkit.pyflink.common.types",
        "flowkit.pyflink.common.time",
        "flowkit.pyflink.common.serialization",
        "flowkit.pyflink.common.watermark_strategy",
        "flowkit.pyflink.common.restart_strategy",
        "flowkit.pyflink.datastream",
        "flowkit.pyflink.datastream.functions",
        "flowkit.pyflink.datastream.state",
        "flowkit.pyflink.datastream.window",
        "flowkit.pyflink.datastream.execution_mode",
        "flowkit.pyflink.datastream.checkpointing_mode",
        "flowkit.pyflink.datastream.connectors",
        "flowkit.pyflink.datastream.connectors.file_system",
        "flowkit.pyflink.datastream.async_retry_predicates",
    ],
)
def test_pyflinks_module_paths_exist(path: str) -> None:
    module = importlib.import_module(path)
    assert module.__all__


@pytest.mark.parametrize(
    "module_name", [*COMPAT_MODULES, "flowkit.pyflink.datastream.connectors.kafka"]
)
def test_compat_modules_only_re_export_flowkits_own_names(module_name: str) -> None:
    # Each name lives once in flowkit: the compat modules define nothing themselves.
    module = importlib.import_module(module_name)
    for name in module.__all__:
        value = getattr(module, name)
        origin = (
            value.__name__ if isinstance(value, type(sys)) else getattr(value, "__module__", "")
        )
        assert origin.startswith("flowkit."), (name, origin)
        assert not origin.startswith("flowkit.pyflink") or isinstance(value, type(sys)), name


def test_the_names_a_pyflink_job_imports_are_flowkits() -> None:
    assert Types is flowkit.Types and Row is flowkit.Row and Time is flowkit.Time
    assert StreamExecutionEnvironment is flowkit.StreamExecutionEnvironment
    assert WindowFunction is flowkit.WindowFunction and CountWindow is flowkit.CountWindow
    assert RuntimeExecutionMode is flowkit.RuntimeExecutionMode
    assert CheckpointingMode is flowkit.CheckpointingMode
    assert FileSink is flowkit.FileSink and FileSource is flowkit.FileSource


_LOGGING_JOB = """
import logging, sys
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
{before}
from flowkit.pyflink.datastream import StreamExecutionEnvironment
env = StreamExecutionEnvironment.get_execution_environment()
env.from_collection([1]).print()
env.execute()
"""


@pytest.mark.parametrize(
    ("before", "lifecycle_lines"),
    [("", False), ('logging.getLogger("flowkit").setLevel(logging.INFO)', True)],
    ids=["default", "flowkit-logger-set"],
)
def test_a_pyflink_job_logging_to_stdout_prints_only_its_results(
    before: str, lifecycle_lines: bool
) -> None:
    # PyFlink's runtime logs to its own files: a job that sends Python logging to stdout
    # at INFO prints its results only, unless it asks for flowkit's log lines.
    result = subprocess.run(
        [sys.executable, "-c", _LOGGING_JOB.format(before=before)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "1" in lines
    assert (lines != ["1"]) is lifecycle_lines, lines


# ------------------------------------------------------------------------ printing
def test_typed_records_print_as_java_and_untyped_ones_with_str(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    ds = env.from_collection([("hi", 0, 5, 4)])
    ds.print()  # no type information: Python's str
    ds.map(
        lambda v: v, Types.TUPLE([Types.STRING(), Types.INT(), Types.INT(), Types.INT()])
    ).print()
    ds.map(lambda v: Row(v[0], v[1]), Types.ROW([Types.STRING(), Types.INT()])).print()
    ds.map(lambda v: (v[0], v[1]), Types.ROW([Types.STRING(), Types.INT()])).print()
    ds.map(lambda v: v[0], Types.STRING()).print()
    ds.map(lambda v: v, Types.PICKLED_BYTE_ARRAY()).print()
    assert printed(env, capsys) == [
        "('hi', 0, 5, 4)",
        "(hi,0,5,4)",
        "+I[hi, 0]",
        "+I[hi, 0]",
        "hi",
        "('hi', 0, 5, 4)",
    ]


def test_java_forms_of_basic_and_nested_types() -> None:
    t = Types.TUPLE(
        [
            Types.BOOLEAN(),
            Types.DOUBLE(),
            Types.DOUBLE(),
            Types.FLOAT(),
            Types.LIST(Types.INT()),
            Types.MAP(Types.STRING(), Types.LONG()),
            Types.ROW_NAMED(["a"], [Types.STRING()]),
            Types.STRING(),
        ]
    )
    value = (True, 1e7, 0.1, 1.1, [1, 2], {"k": 3}, Row(a="x"), None)
    assert t.to_java_string(value) == "(true,1.0E7,0.1,1.1,[1, 2],{k=3},+I[x],null)"
    deleted = Row(1)
    deleted.set_row_kind(RowKind.DELETE)
    assert Types.ROW([Types.INT()]).to_java_string(deleted) == "-D[1]"
    assert [flowkit.typeinfo.java_double_string(v) for v in (100.0, 1e-3, 1.23e-4, -0.0)] == [
        "100.0",
        "0.001",
        "1.23E-4",
        "-0.0",
    ]


def test_type_information_follows_the_stream_through_filters_keys_and_reductions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    pairs = env.from_collection(
        [("a", 1), ("b", 2), ("a", 3)], type_info=Types.TUPLE([Types.STRING(), Types.INT()])
    )
    pairs.filter(lambda v: v[1] > 1).print("filtered")
    pairs.key_by(lambda v: v[0], key_type=Types.STRING()).reduce(
        lambda a, b: (a[0], a[1] + b[1])
    ).print("reduced")
    pairs.key_by(lambda v: v[0]).sum(1).rebalance().print("summed")
    assert sorted(printed(env, capsys)) == sorted(
        [
            "filtered> (b,2)",
            "filtered> (a,3)",
            "reduced> (a,1)",
            "reduced> (b,2)",
            "reduced> (a,4)",
            "summed> (a,1)",
            "summed> (b,2)",
            "summed> (a,4)",
        ]
    )


def test_print_prefixes_subtasks_when_parallel(capsys: pytest.CaptureFixture[str]) -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    env.from_collection([("k", 1)], type_info=Types.TUPLE([Types.STRING(), Types.INT()])).key_by(
        lambda v: v[0]
    ).reduce(lambda a, b: a).print("id")
    (line,) = printed(env, capsys)
    assert line in ("id:1> (k,1)", "id:2> (k,1)")


def test_file_sinks_write_typed_records_as_java_prints_them(tmp_path: Path) -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    typed = env.from_collection([("hi", 1)], type_info=Types.TUPLE([Types.STRING(), Types.INT()]))
    typed.sink_to(
        sink=FileSink.for_row_format(
            base_path=str(tmp_path / "typed"), encoder=Encoder.simple_string_encoder()
        )
        .with_output_file_config(
            OutputFileConfig.builder().with_part_prefix("prefix").with_part_suffix(".ext").build()
        )
        .with_rolling_policy(RollingPolicy.default_rolling_policy())
        .build()
    )
    untyped = env.from_collection([("hi", 1)])
    untyped.sink_to(
        FileSink.for_row_format(str(tmp_path / "untyped"), Encoder.simple_string_encoder()).build()
    )
    env.execute()
    assert part_lines(tmp_path / "typed") == ["(hi,1)"]
    assert [p.name for p in (tmp_path / "typed").iterdir()] == ["prefix-0-0.ext"]
    assert part_lines(tmp_path / "untyped") == ["('hi', 1)"]


# ------------------------------------------------------------------------ type information
def test_type_information_is_accepted_everywhere_and_never_required(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    rows = env.from_collection(
        [(1, "x"), (2, "y")],
        type_info=Types.ROW_NAMED(["id", "name"], [Types.INT(), Types.STRING()]),
    )
    rows.map(lambda r: f"{r.id}:{r.name}:{r['name']}:{r[0]}", output_type=Types.STRING()).print()
    rows.flat_map(lambda r: [r.id] * 2, Types.INT()).print()
    rows.map(lambda r: r.id).print()  # without type information: fine too
    assert printed(env, capsys) == ["1:x:x:1", "2:y:y:2", "1", "1", "2", "2", "1", "2"]


def test_rows_cross_channels_as_rows() -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    kinds = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.INT()])
    result = (
        env.from_collection([("a", 1), ("b", 2)], type_info=kinds)
        .key_by(lambda r: r.k)
        .map(lambda r: (r.k, r.v, r.get_field_names()), Types.TUPLE([Types.STRING()] * 3))
        .execute_and_collect()
    )
    assert sorted(result) == [("a", 1, ["k", "v"]), ("b", 2, ["k", "v"])]


def test_a_state_descriptor_takes_pyflinks_type_information() -> None:
    class Sum(KeyedProcessFunction):
        def open(self, runtime_context: Any) -> None:
            self.state = runtime_context.get_state(
                ValueStateDescriptor("state", Types.PICKLED_BYTE_ARRAY())
            )

        def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Any:
            current = (self.state.value() or 0) + value[1]
            self.state.update(current)
            yield value[0], current

    env = StreamExecutionEnvironment.get_execution_environment()
    out = (
        env.from_collection([("a", 1), ("a", 2)]).key_by(lambda v: v[0]).process(Sum())
    ).execute_and_collect()
    assert out == [("a", 1), ("a", 3)]


# ------------------------------------------------------------------------ names
def test_time_is_a_duration_everywhere() -> None:
    assert Time.milliseconds(5).to_milliseconds() == 5
    assert Time.seconds(2).to_milliseconds() == 2000 and Time.seconds(2).seconds == 2
    assert Time.minutes(1) == Duration.of_minutes(1)
    windows = TumblingEventTimeWindows.of(Time.milliseconds(5))
    assert windows.assign_windows("x", 7) == [TimeWindow(5, 10)]


def test_window_function_count_window_and_generic_window_functions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class SumWindowFunction(WindowFunction[tuple, tuple, str, CountWindow]):
        def apply(self, key: str, window: CountWindow, inputs: Iterable[tuple]) -> Any:
            return [(key, sum(i[0] for i in inputs))]

    class CountProcess(ProcessWindowFunction[tuple, tuple, str, TimeWindow]):
        def process(
            self,
            key: str,
            context: ProcessWindowFunction.Context[TimeWindow],
            elements: Iterable[tuple],
        ) -> Iterable[tuple]:
            return [(key, context.window().start, len(list(elements)))]

    env = StreamExecutionEnvironment.get_execution_environment()
    data = env.from_collection(
        [(1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a")],
        type_info=Types.TUPLE([Types.INT(), Types.STRING()]),
    )
    data.key_by(lambda x: x[1], key_type=Types.STRING()).count_window(2).apply(
        SumWindowFunction(), Types.TUPLE([Types.STRING(), Types.INT()])
    ).print()
    data.assign_timestamps_and_watermarks(
        WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda e, ts: e[0])
    ).key_by(lambda x: x[1]).window(TumblingEventTimeWindows.of(Time.milliseconds(3))).process(
        CountProcess(), Types.TUPLE([Types.STRING(), Types.LONG(), Types.INT()])
    ).print("w")
    lines = printed(env, capsys)
    assert [line for line in lines if not line.startswith("w>")] == ["(a,4)", "(b,6)"]
    assert sorted(line for line in lines if line.startswith("w>")) == [
        "w> (a,0,1)",
        "w> (a,3,2)",
        "w> (b,0,1)",
        "w> (b,3,1)",
    ]


def test_file_source_for_record_stream_format_reads_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a b\nc\n", encoding="utf-8")
    env = StreamExecutionEnvironment.get_execution_environment()
    source = (
        FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(path))
        .process_static_file_set()
        .build()
    )
    ds = env.from_source(
        source=source,
        watermark_strategy=WatermarkStrategy.for_monotonous_timestamps(),
        source_name="file_source",
    )
    assert ds.execute_and_collect() == ["a b", "c"]
    with pytest.raises(ValueError, match="one file"):
        FileSource.for_record_stream_format(StreamFormat.text_line_format(), "a", "b")


@pytest.mark.parametrize(
    "strategy",
    [
        WatermarkStrategy.for_monotonous_timestamps(),
        WatermarkStrategy.no_watermarks(),
        WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(1)),
    ],
    ids=["monotonous", "no_watermarks", "bounded"],
)
def test_records_without_timestamps_pass_a_strategy_without_assigner(
    strategy: WatermarkStrategy, tmp_path: Path
) -> None:
    # Flink runs such records without timestamps: the job must not fail.
    path = tmp_path / "in.txt"
    path.write_text("x\ny\n", encoding="utf-8")
    env = StreamExecutionEnvironment.get_execution_environment()
    ds = env.from_source(flowkit.FileSource(str(path)), strategy, "file")
    stamps = ds.assign_timestamps_and_watermarks(strategy).process(_Stamp()).execute_and_collect()
    assert stamps == [("x", None), ("y", None)]


class _Stamp(flowkit.ProcessFunction):
    def process_element(self, value: Any, ctx: Any) -> Any:
        yield value, ctx.timestamp()


def test_runtime_checkpointing_and_restart_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    monkeypatch.chdir(tmp_path)
    env.enable_checkpointing(30000, CheckpointingMode.EXACTLY_ONCE)
    assert env.checkpoint_config is not None
    assert env.checkpoint_config.mode == "exactly_once"
    assert Path(env.checkpoint_config.directory).name != "EXACTLY_ONCE"
    assert not (tmp_path / "EXACTLY_ONCE").exists()
    env.enable_checkpointing(1000, CheckpointingMode.AT_LEAST_ONCE, directory="ck")
    assert (env.checkpoint_config.mode, env.checkpoint_config.directory) == ("at_least_once", "ck")
    with pytest.raises(flowkit.InvalidConfigurationError, match="directory="):
        env.enable_checkpointing(1000, "some/dir")
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(3, Time.seconds(10)))
    assert env.get_restart_strategy() == flowkit.RestartStrategy.fixed_delay(3, 10_000)
    env.set_restart_strategy(RestartStrategies.fall_back_restart())
    assert env.get_restart_strategy() is None
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
    assert env.get_runtime_mode() is RuntimeExecutionMode.STREAMING


def test_get_config_changes_the_environment() -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    config = env.get_config()
    config.set_auto_watermark_interval(50).set_parallelism(3)
    config.set_global_job_parameters({"a": "1"})
    assert env.auto_watermark_interval_ms == 50 and env.get_parallelism() == 3
    assert config.get_global_job_parameters() == {"a": "1"}


def test_partition_custom_sends_records_where_the_partitioner_says() -> None:
    class ByParity(Partitioner):
        def partition(self, key: int, num_partitions: int) -> int:
            return key % num_partitions

    class Where(flowkit.MapFunction):
        def open(self, runtime_context: Any) -> None:
            self.index = runtime_context.get_index_of_this_subtask()

        def map(self, value: int) -> tuple[int, int]:
            return value, self.index

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    out = (
        env.from_collection(list(range(6)))
        .partition_custom(ByParity(), lambda v: v)
        .map(Where())
        .execute_and_collect()
    )
    assert sorted(out) == [(v, v % 2) for v in range(6)]
    env.from_collection([1]).partition_custom(lambda key, n: 7, lambda v: v).print()
    with pytest.raises(flowkit.JobFailed) as info:
        env.execute()
    assert "[0, 2)" in str(info.value.__cause__)


def test_set_buffer_timeout_lowers_the_jobs_timeout() -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    assert env.get_buffer_timeout() == 100
    ds = env.from_collection([1]).map(lambda v: v).set_buffer_timeout(5)
    assert ds.get_buffer_timeout() == 5
    ds.print()
    assert env._job_buffer_timeout() == 5
    assert ds.set_buffer_timeout(-1).get_buffer_timeout() is None
    with pytest.raises(flowkit.InvalidConfigurationError, match=">= 0"):
        ds.set_buffer_timeout(-5)


def test_execute_and_collect_is_a_closeable_iterator() -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    with env.from_collection([1, 2, 3]).execute_and_collect() as results:
        assert [r * 2 for r in results] == [2, 4, 6]
    results.close()
    assert env.from_collection([1, 2, 3]).execute_and_collect(limit=2) == [1, 2]


# ------------------------------------------------------------------------ async I/O
class Lookup(AsyncFunction):
    """Two results per value; fails twice for 3 (with TimeoutError), then succeeds."""

    def __init__(self) -> None:
        self.attempts: dict[int, int] = {}

    async def async_invoke(self, value: int) -> list[str]:
        await asyncio.sleep(0.001 * (5 - value))
        self.attempts[value] = self.attempts.get(value, 0) + 1
        if value == 3 and self.attempts[value] <= 2:
            raise TimeoutError("the service did not answer")
        return [f"{value}-a", f"{value}-b"]


def test_async_data_stream_flattens_the_results_of_an_async_function() -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    ds = env.from_collection([1, 2, 4])
    ordered = AsyncDataStream.ordered_wait(ds, Lookup(), Time.seconds(10), 10, Types.STRING())
    assert ordered.execute_and_collect() == ["1-a", "1-b", "2-a", "2-b", "4-a", "4-b"]
    unordered = AsyncDataStream.unordered_wait(env.from_collection([1, 2]), Lookup(), 10_000)
    assert sorted(unordered.execute_and_collect()) == ["1-a", "1-b", "2-a", "2-b"]


def test_async_retry_strategy_retries_what_its_predicate_selects() -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    strategy = AsyncRetryStrategy.fixed_delay(
        max_attempts=3,
        backoff_time_millis=1,
        exception_predicate=functools.partial(
            async_retry_predicates.exception_type_predicate, expected_error_type=TimeoutError
        ),
    )
    result = AsyncDataStream.unordered_wait_with_retry(
        env.from_collection([3]), Lookup(), Time.seconds(10), strategy
    ).execute_and_collect()
    assert result == ["3-a", "3-b"]
    no_retry = AsyncDataStream.ordered_wait(env.from_collection([3]), Lookup(), 10_000)
    no_retry.print()
    with pytest.raises(flowkit.JobFailed, match=r"did not answer|TimeoutError"):
        env.execute()


def test_map_async_takes_an_async_function_object() -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    assert env.from_collection([1]).map_async(Lookup()).execute_and_collect() == ["1-a", "1-b"]

    async def plain(value: int) -> list[int]:
        return [value, value]

    # a plain async function's return value is one record, as before
    assert env.from_collection([1]).map_async(plain).execute_and_collect() == [[1, 1]]

    class NotAList(AsyncFunction):
        async def async_invoke(self, value: Any) -> Any:
            return 5

    env.from_collection([1]).map_async(NotAList()).print()
    with pytest.raises(flowkit.JobFailed) as info:
        env.execute()
    assert "collection of results" in str(info.value.__cause__)
