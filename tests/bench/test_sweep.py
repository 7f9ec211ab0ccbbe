"""The buffer-size sweep: it runs end to end on a tiny grid, writes well-formed CSV and
JSON, keeps its invariants (exact counts, in-flight bytes within the channels' buffers,
low-load latency ordered by buffer timeout) and its command line works.

Nothing here asserts how fast anything is, except the low-load latency invariants.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import importlib.util
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flowkit.bench.__main__ import build_parser, format_table, parse_size, parse_timeout
from flowkit.bench.sweep import (
    COLUMNS,
    SPREAD_FIELDS,
    ProgressBar,
    SweepConfig,
    SweepPoint,
    _Collector,
    build_figure,
    build_job,
    channel_count,
    grid,
    pareto_front,
    percentile,
    plain_number,
    plot,
    read_json,
    read_json_meta,
    run_sweep,
    run_sweep_async,
    summarize,
    write_csv,
    write_json,
)

TIMEOUT = 30
#: Columns that are empty in the CSV when the parameter is not set.
OPTIONAL = {"buffer_timeout_ms", "slow_sink_us", "rate", "announced_buffer_size"}
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def check_counts(point: SweepPoint) -> None:
    assert point.received == point.records
    assert point.distinct_keys == min(point.keys, point.records)
    assert point.correct


def check_in_flight(point: SweepPoint) -> None:
    # source -key_by-> map -rebalance-> sink: two all-to-all edges of P x P channels.
    channels = 2 * point.parallelism**2
    assert point.channels == channels
    assert point.capacity_buffers == channels * point.buffers_per_channel
    assert point.samples >= 1
    assert 0 <= point.peak_buffers <= channels * point.buffers_per_channel
    assert point.peak_in_flight_bytes == point.peak_buffers * point.buffer_size
    assert point.peak_in_flight_bytes <= channels * point.buffers_per_channel * point.buffer_size
    assert 0.0 <= point.source_wait_share <= 1.0
    assert 0.0 <= point.producer_wait_share <= 1.0


# ---------------------------------------------------------------------------- end to end
def test_tiny_sweep_writes_one_well_formed_row_per_point(tmp_path: Path) -> None:
    points = run_sweep([512, 4096], [2], [0, None], records=3000, keys=50, progress=False)

    grid = [(p.buffer_size, p.buffers_per_channel, p.buffer_timeout_ms) for p in points]
    assert grid == [(512, 2, 0), (512, 2, None), (4096, 2, 0), (4096, 2, None)]
    for p in points:
        check_counts(p)
        check_in_flight(p)
        assert p.records_per_s > 0 and p.mb_per_s > 0 and p.wire_bytes_per_record > 0
        assert 0 <= p.latency_p50_ms <= p.latency_p90_ms <= p.latency_p99_ms <= p.latency_max_ms

    csv_path = write_csv(points, tmp_path / "sweep.csv")
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        rows = list(reader)
    assert len(rows) == len(points)
    for row, point in zip(rows, points):
        for name in COLUMNS:
            cell = row[name]
            if name == "correct":
                assert cell == "true"
            elif name == "debloat":
                assert cell == "false"
            elif name in OPTIONAL and getattr(point, name) is None:
                assert cell == ""
            else:
                assert math.isfinite(float(cell)), (name, cell)
                assert float(cell) == pytest.approx(float(getattr(point, name)), rel=1e-5)

    json_path = write_json(points, tmp_path / "sweep.json")
    document = json.loads(json_path.read_text())
    assert document["columns"] == list(COLUMNS)
    assert {"python", "platform", "cpu_count", "created"} <= set(document["meta"])
    assert len(document["points"]) == len(points)
    for entry, point in zip(document["points"], points):
        assert list(entry) == list(COLUMNS)
        assert entry["buffer_size"] == point.buffer_size
        assert entry["buffer_timeout_ms"] == point.buffer_timeout_ms
        assert entry["received"] == 3000
        assert entry["correct"] is True
    assert read_json(json_path) == points


async def test_in_flight_bytes_stay_within_the_channels_buffers_under_backpressure() -> None:
    # A slow sink (50 us per record) backs the job up, so buffers fill everywhere.
    points = await run_sweep_async(
        [256],
        [1, 3],
        [1],
        records=2000,
        keys=20,
        slow_sink_us=50,
        progress=False,
    )
    assert [p.buffers_per_channel for p in points] == [1, 3]
    for p in points:
        check_counts(p)
        check_in_flight(p)
        assert p.peak_buffers >= 1  # the sampler saw buffers in use


async def test_the_debloating_series_queues_less_under_backpressure() -> None:
    # A slow sink: each consumer drains about 20,000 records/s, so 20 ms of data is a
    # few KiB, far below the 32 KiB buffers; debloating announces smaller buffers and
    # what sits in the queues drops, while every record still arrives exactly once.
    plain, debloated = await asyncio.wait_for(
        run_sweep_async(
            [32768],
            [4],
            [None],
            records=20_000,
            keys=20,
            slow_sink_us=50,
            debloat=(False, True),
            debloat_target_ms=20,
            progress=False,
        ),
        TIMEOUT,
    )
    assert (plain.debloat, debloated.debloat) == (False, True)
    for p in (plain, debloated):
        check_counts(p)
        check_in_flight(p)
        assert 0 < p.mean_queued_bytes <= p.peak_queued_bytes <= p.peak_in_flight_bytes
    assert plain.announced_buffer_size is None
    assert debloated.announced_buffer_size is not None
    assert 256 <= debloated.announced_buffer_size < 32768
    assert debloated.mean_queued_bytes < plain.mean_queued_bytes


async def test_low_load_latency_with_timeout_zero_is_below_timeout_100ms() -> None:
    # 200 records/s for 0.5 s: buffers never fill, so only the timeout sends them on.
    points = await asyncio.wait_for(
        run_sweep_async([1024], [2], [0, 100], records=100, keys=10, rate=200, progress=False),
        TIMEOUT,
    )
    immediate, delayed = points
    for p in points:
        check_counts(p)
        check_in_flight(p)
    assert immediate.latency_p50_ms < delayed.latency_p50_ms
    # Each record waits for the 100 ms flush at least once on its way.
    assert delayed.latency_p50_ms >= 50


@pytest.mark.parametrize("parallelism", [1, 2, 3])
def test_channel_count_follows_the_topology(parallelism: int) -> None:
    config = SweepConfig(1024, 2, 10, records=10, keys=2, parallelism=parallelism)
    env, _ = build_job(config, _Collector(config.records, config.keys))
    assert channel_count(env.get_job_graph()) == 2 * parallelism**2


def test_the_command_line_writes_csv_and_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowkit.bench",
            "sweep",
            "--buffer-sizes",
            "1k,4k",
            "--buffers-per-channel",
            "1",
            "--timeouts",
            "0,none",
            "--records",
            "2000",
            "--keys",
            "20",
            "--out",
            str(out),
            "--plot",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with (out / "sweep.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["buffer_size"], r["buffer_timeout_ms"]) for r in rows] == [
        ("1024", "0"),
        ("1024", ""),
        ("4096", "0"),
        ("4096", ""),
    ]
    assert all(r["received"] == "2000" and r["correct"] == "true" for r in rows)
    assert len(json.loads((out / "sweep.json").read_text())["points"]) == 4
    assert "records/s" in done.stdout and f"wrote {out / 'sweep.csv'}" in done.stdout
    if HAS_MATPLOTLIB:
        assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not (out / "sweep.png").exists()
        assert "matplotlib" in done.stderr


def test_the_command_line_rejects_bad_values() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flowkit.bench", "sweep", "--timeouts", "0,soon"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "not a buffer timeout: 'soon'" in done.stderr


# ---------------------------------------------------------------------------- pieces
def test_the_output_check_notices_lost_and_duplicated_records() -> None:
    def record(seq: int) -> tuple[int, int, int, bytes]:
        return (seq % 3, seq, 0, b"")

    complete = _Collector(records=4, keys=3)
    complete.observe([record(0), record(1)])
    complete.observe([record(2), record(3)])
    assert complete.correct and complete.distinct_keys == 3

    lost = _Collector(records=4, keys=3)
    lost.observe([record(0), record(1), record(2)])
    assert not lost.correct

    duplicated = _Collector(records=4, keys=3)
    duplicated.observe([record(0), record(1), record(2), record(2)])
    assert duplicated.received == 4 and not duplicated.correct

    missing_key = _Collector(records=2, keys=3)
    missing_key.observe([record(0), record(1)])
    assert missing_key.correct  # only 2 records: keys 0 and 1 are all there can be
    assert missing_key.distinct_keys == 2


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert [percentile(values, q) for q in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert percentile([7], 50) == 7


def test_the_debloat_option_adds_a_series_per_grid_point() -> None:
    parser = build_parser()
    args = parser.parse_args(["sweep", "--debloat", "both", "--debloat-target-ms", "30"])
    assert (args.debloat, args.debloat_target_ms) == ("both", 30)
    assert parser.parse_args(["sweep"]).debloat == "off"
    configs = grid([1024, 4096], [2], [None], debloat=(False, True), debloat_target_ms=30)
    assert [(c.buffer_size, c.debloat) for c in configs] == [
        (1024, False),
        (1024, True),
        (4096, False),
        (4096, True),
    ]
    assert configs[1].label().endswith(" debloat")
    with pytest.raises(ValueError, match="debloat_target_ms"):
        SweepConfig(1024, 2, None, debloat_target_ms=0)


def test_progress_bar_draws_only_on_a_terminal() -> None:
    quiet = io.StringIO()
    bar = ProgressBar(10, quiet)
    bar.update(5, "buffer_size=4096")
    bar.close()
    assert quiet.getvalue() == ""  # not a terminal

    drawn = io.StringIO()
    bar = ProgressBar(10, drawn, width=10, force=True)
    bar.update(5, "buffer_size=4096")
    bar.update(10)
    bar.close()
    assert drawn.getvalue().split("\r")[1:] == [
        "[#####.....] 5/10 buffer_size=4096",
        "[##########] 10/10" + " " * 16 + "\n",
    ]
    assert ProgressBar(10, io.StringIO(), enabled=False, force=True).enabled is False


async def test_a_sweep_reports_its_progress() -> None:
    stream = io.StringIO()
    bar = ProgressBar(2, stream, force=True)
    points = await run_sweep_async([1024], [1], [0, None], records=500, keys=5, progress=bar)
    assert len(points) == 2
    lines = stream.getvalue().split("\r")
    assert lines[1].startswith("[" + "." * 20 + "] 0/2 buffer_size=1024 buffers=1 timeout=0ms")
    assert lines[-1].startswith("[" + "#" * 20 + "] 2/2 buffer_size=1024 buffers=1 timeout=none")
    assert lines[-1].endswith("\n")


def test_command_line_values_parse() -> None:
    assert [parse_size(s) for s in ("256", "4k", "4KiB", "1M", "1mib", "64 kb")] == [
        256,
        4096,
        4096,
        1 << 20,
        1 << 20,
        65536,
    ]
    assert [parse_timeout(s) for s in ("0", "2.5", "100", "none", "off", "-1")] == [
        0,
        2.5,
        100,
        None,
        None,
        None,
    ]


def point(size: int, throughput: float, p99: float, debloat: bool = False) -> SweepPoint:
    return SweepPoint(
        buffer_size=size,
        buffers_per_channel=2,
        buffer_timeout_ms=None,
        records=10,
        record_size=100,
        keys=2,
        parallelism=2,
        slow_sink_us=None,
        rate=None,
        debloat=debloat,
        debloat_target_ms=50,
        elapsed_s=1.0,
        job_s=1.0,
        records_per_s=throughput,
        mb_per_s=1.0,
        wire_bytes_per_record=100.0,
        latency_p50_ms=p99 / 2,
        latency_p90_ms=p99,
        latency_p99_ms=p99,
        latency_max_ms=p99,
        channels=8,
        capacity_buffers=16,
        peak_buffers=4,
        peak_in_flight_bytes=4 * size,
        peak_queued_bytes=3 * size,
        mean_queued_bytes=2.5 * size,
        announced_buffer_size=size // 2 if debloat else None,
        samples=3,
        source_wait_share=0.5,
        producer_wait_share=0.5,
        received=10,
        distinct_keys=2,
        correct=True,
    )


def test_pareto_front_keeps_the_best_trade_offs_and_the_table_shows_them() -> None:
    a, b, c, d = (
        point(1024, 100, 1.0),
        point(1024, 200, 5.0),
        point(1024, 150, 6.0),
        point(1024, 300, 4.0),
    )
    # c is beaten by b (more throughput, less latency); b by d.
    assert pareto_front([a, b, c, d]) == [a, d]
    table = format_table([a, d]).splitlines()
    assert table[0].split()[:4] == ["buffer_size", "buffers", "timeout_ms", "records/s"]
    assert table[2].split()[:4] == ["1024", "2", "none", "300"]
    assert table[0].split()[-2:] == ["debloat", "ok"]
    assert table[2].split()[-2:] == ["off", "yes"]


def test_plot_draws_a_png_or_says_what_is_missing(tmp_path: Path) -> None:
    points = [
        point(1024, 100, 1.0),
        point(1024, 300, 4.0),
        point(65536, 500, 9.0),
        point(65536, 450, 7.0, debloat=True),
    ]
    target = tmp_path / "sweep.png"
    if HAS_MATPLOTLIB:
        plot(points, target)
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        with pytest.raises(ImportError, match="pip install matplotlib"):
            plot(points, target)
        assert not target.exists()


# ---------------------------------------------------------------------------- output folder
def test_the_command_line_writes_into_sweep_results_by_default(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowkit.bench",
            "sweep",
            "--buffer-sizes",
            "1k",
            "--buffers-per-channel",
            "1",
            "--timeouts",
            "0",
            "--records",
            "500",
            "--keys",
            "5",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # nothing lands in the current directory itself: one folder, created by the command
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep-results"]
    assert sorted(p.name for p in (tmp_path / "sweep-results").iterdir()) == [
        "sweep.csv",
        "sweep.json",
    ]
    assert f"wrote {Path('sweep-results') / 'sweep.csv'}" in done.stdout


def test_sweep_results_is_ignored_by_git() -> None:
    ignored = (Path(__file__).parents[2] / ".gitignore").read_text().splitlines()
    assert "sweep-results/" in ignored


def test_the_help_shows_every_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # no line wrapping inside a default
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("sweep", "plot"):
        command = commands.choices[name]
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            shown = (action.help or "") % vars(action)
            assert "(default: " in shown, (name, action.option_strings, shown)
    text = " ".join(commands.choices["sweep"].format_help().split())
    for expected in (
        "--records N records per run (default: 100000)",
        "--out DIR output folder, created if missing (default: sweep-results)",
        "--repeat N runs per configuration; each point reports the median and the min-max "
        "spread of its runs (default: 1)",
        "(default: 256,1k,4k,16k,64k,256k,1M)",
        "(default: 1,2,4,16)",
        "(default: 0,1,10,100,none)",
        "--parallelism P subtasks per stage (default: 2)",
        "--keys K distinct keys (default: 1000)",
        "--record-size B bytes per record, about (default: 100)",
    ):
        assert expected in text
    args = parser.parse_args(["sweep"])
    assert (args.out, args.records, args.repeat) == (Path("sweep-results"), 100_000, 1)


# ---------------------------------------------------------------------------- repeats
SPREAD_COLUMNS = [f"{name}_{end}" for name in SPREAD_FIELDS for end in ("min", "max")]


def test_repeated_runs_report_the_median_and_the_spread_with_the_load(tmp_path: Path) -> None:
    points = run_sweep([1024], [2], [0, None], records=2000, keys=20, repeat=3, progress=False)
    assert [(p.buffer_timeout_ms, p.repeats) for p in points] == [(0, 3), (None, 3)]
    for p in points:
        check_counts(p)
        check_in_flight(p)
        for name in SPREAD_FIELDS:
            low, high = p.spread(name)
            assert low <= getattr(p, name) <= high, name
        assert p.cpu_count == os.cpu_count()
        assert p.load_1m_start is not None and p.load_1m_start >= 0
        assert p.load_1m_end is not None and p.load_1m_end >= 0
    # three separate runs measure three different throughputs: the spread is real
    assert any(p.spread("records_per_s")[0] < p.spread("records_per_s")[1] for p in points)

    with write_csv(points, tmp_path / "sweep.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row, p in zip(rows, points):
        assert row["repeats"] == "3"
        assert float(row["records_per_s"]) == pytest.approx(p.records_per_s)
        for column in SPREAD_COLUMNS:
            assert float(row[column]) == pytest.approx(float(getattr(p, column))), column
        assert float(row["load_1m_start"]) == pytest.approx(p.load_1m_start)
        assert float(row["load_1m_end"]) == pytest.approx(p.load_1m_end)
        assert int(row["cpu_count"]) == os.cpu_count()
    document = json.loads(write_json(points, tmp_path / "sweep.json").read_text())
    for entry, p in zip(document["points"], points):
        assert entry["repeats"] == 3
        assert entry["records_per_s_min"] <= entry["records_per_s"] <= entry["records_per_s_max"]
        assert entry["latency_p99_ms_min"] <= entry["latency_p99_ms"]
        assert entry["latency_p99_ms"] <= entry["latency_p99_ms_max"]
        assert (entry["load_1m_start"], entry["load_1m_end"]) == (p.load_1m_start, p.load_1m_end)
        assert entry["cpu_count"] == os.cpu_count()
    assert read_json(tmp_path / "sweep.json") == points


def test_summarize_takes_medians_and_the_range_of_each_measurement() -> None:
    runs = [
        dataclasses.replace(
            point(1024, throughput, p99), load_1m_start=load, load_1m_end=load + 0.5, cpu_count=2
        )
        for throughput, p99, load in ((300.0, 4.0, 0.25), (100.0, 9.0, 0.5), (200.0, 1.0, 1.0))
    ]
    runs[1] = dataclasses.replace(
        runs[1],
        peak_buffers=9,
        peak_in_flight_bytes=9 * 1024,
        peak_in_flight_bytes_min=None,  # None: the value itself
        peak_in_flight_bytes_max=None,
    )
    runs[2] = dataclasses.replace(runs[2], received=9, correct=False)
    summary = summarize(runs)
    assert summary.repeats == 3
    assert summary.records_per_s == 200.0
    assert summary.spread("records_per_s") == (100.0, 300.0)
    assert summary.latency_p99_ms == 4.0
    assert summary.spread("latency_p99_ms") == (1.0, 9.0)
    assert summary.peak_buffers == 4 and summary.peak_in_flight_bytes == 4 * 1024
    assert summary.spread("peak_in_flight_bytes") == (4 * 1024, 9 * 1024)
    # one run lost a record: the point says so
    assert summary.received == 9 and summary.correct is False
    # load before the first run and after the last
    assert (summary.load_1m_start, summary.load_1m_end, summary.cpu_count) == (0.25, 1.5, 2)
    with pytest.raises(ValueError, match="buffer_size is 1024 in the first run and 4096"):
        summarize([runs[0], point(4096, 1.0, 1.0)])
    with pytest.raises(ValueError, match="at least one run"):
        summarize([])


def test_the_command_line_repeats_each_point(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowkit.bench",
            "sweep",
            "--buffer-sizes",
            "4k",
            "--buffers-per-channel",
            "2",
            "--timeouts",
            "0",
            "--records",
            "1000",
            "--keys",
            "10",
            "--repeat",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with (out / "sweep.csv").open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["repeats"] == "2" and row["correct"] == "true"
    assert set(SPREAD_COLUMNS) | {"load_1m_start", "load_1m_end", "cpu_count"} <= set(row)
    assert json.loads((out / "sweep.json").read_text())["meta"]["repeat"] == 2
    header, line = done.stdout.splitlines()[:2]
    assert header.split()[-5:] == ["src_wait", "runs", "load", "debloat", "ok"]
    assert line.split()[-4] == "2"
    assert re.fullmatch(r"\d+\.\d\d>\d+\.\d\d", line.split()[-3])


def test_a_json_file_from_before_repeats_still_reads(tmp_path: Path) -> None:
    old = point(1024, 100, 1.0)
    document = json.loads(write_json([old], tmp_path / "sweep.json").read_text())
    new_columns = {"repeats", "load_1m_start", "load_1m_end", "cpu_count", *SPREAD_COLUMNS}
    for entry in document["points"]:
        for column in new_columns:
            del entry[column]
    (tmp_path / "old.json").write_text(json.dumps(document))
    (read,) = read_json(tmp_path / "old.json")
    assert read.repeats == 1 and read.load_1m_start is None
    assert read.spread("records_per_s") == (100, 100)


# ---------------------------------------------------------------------------- the figure
def test_every_visual_encoding_has_a_legend_and_axes_show_plain_numbers() -> None:
    points = [
        dataclasses.replace(point(1024, 100, 1.0), buffers_per_channel=1, buffer_timeout_ms=0),
        dataclasses.replace(point(1024, 300, 4.0), buffers_per_channel=4, buffer_timeout_ms=10),
        dataclasses.replace(point(65536, 500, 9.0), buffers_per_channel=1),
        dataclasses.replace(point(65536, 450, 7.0, debloat=True), buffers_per_channel=4),
    ]
    points = [
        dataclasses.replace(
            p,
            repeats=3,
            records_per_s_min=p.records_per_s * 0.9,
            records_per_s_max=p.records_per_s * 1.2,
            latency_p99_ms_min=p.latency_p99_ms / 2,
            latency_p99_ms_max=p.latency_p99_ms * 1.5,
            load_1m_start=0.25,
            load_1m_end=1.5,
            cpu_count=2,
        )
        for p in points
    ]
    fig = build_figure(points, {"platform": "Linux-test", "python": "3.11.7"})
    fig.canvas.draw()

    legends = {
        legend.get_title().get_text(): [t.get_text() for t in legend.get_texts()]
        for legend in fig.legends
    }
    assert legends == {
        "buffer size (colour)": ["1 KiB", "64 KiB"],
        "buffer timeout (marker)": ["0 ms", "10 ms", "off (only when full)"],
        "buffers per channel (marker size)": ["1", "4"],
        "other": [
            "best trade-offs of a buffer size (left)",
            "buffer debloating on (hollow)",
            "min-max over 3 runs (bars)",
        ],
    }
    # the marker-size legend draws its markers at the sizes the points have
    (size_legend,) = [g for g in fig.legends if g.get_title().get_text().startswith("buffers")]
    sizes = [h.get_markersize() for h in size_legend.legend_handles]
    assert sizes[0] < sizes[1]
    left, right = fig.axes[:2]
    scatters = [c for c in left.collections if c.__class__.__name__ == "PathCollection"]
    assert [c.get_sizes()[0] for c in scatters][:2] == [
        pytest.approx(sizes[0] ** 2),
        pytest.approx(sizes[1] ** 2),
    ]
    # the machine and its load are in the title
    title = fig._suptitle.get_text()
    assert "Linux-test, Python 3.11.7, 2 CPUs, 1-min load 0.25-1.50 during the sweep" in title
    assert "median of 3 runs, bars: min-max" in title

    # error bars span each point's min-max
    bars = [c for c in left.containers if c.__class__.__name__ == "ErrorbarContainer"]
    assert len(bars) == 4
    x_bars, y_bars = bars[0].lines[2]
    (x_segment,) = x_bars.get_segments()
    (y_segment,) = y_bars.get_segments()
    assert [x for x, _ in x_segment] == pytest.approx([90.0, 120.0])
    assert [y for _, y in y_segment] == pytest.approx([0.5, 1.5])

    number = re.compile(r"^\d{1,3}(,\d{3})*(\.\d+)?$")
    for ax in (left, right):
        for axis, expected in ((ax.xaxis, {"100", "200", "300"}), (ax.yaxis, set())):
            labels = [
                t.get_text()
                for t in axis.get_majorticklabels() + axis.get_minorticklabels()
                if t.get_text()
            ]
            assert labels, axis
            assert all(number.match(label) for label in labels), labels
            assert expected <= set(labels), labels
    y_labels = {t.get_text() for t in left.yaxis.get_majorticklabels() if t.get_text()}
    assert {"1", "10"} <= y_labels
    right_y = {t.get_text() for t in right.yaxis.get_majorticklabels() if t.get_text()}
    assert {"1,000", "100"} <= right_y


def test_plain_numbers() -> None:
    assert [plain_number(v) for v in (20, 2000, 250_000, 1e6, 0.5, 0.02, 1.5, 0)] == [
        "20",
        "2,000",
        "250,000",
        "1,000,000",
        "0.5",
        "0.02",
        "1.5",
        "0",
    ]


def test_the_readme_figure_comes_from_a_repeated_run_and_states_its_machine_and_load() -> None:
    root = Path(__file__).parents[2]
    points = read_json(root / "docs" / "buffer-sweep.json")
    meta = read_json_meta(root / "docs" / "buffer-sweep.json")
    assert meta["repeat"] == 3 and "--repeat" in meta["arguments"]
    assert all(p.repeats == 3 and p.correct for p in points)
    loads = [x for p in points for x in (p.load_1m_start, p.load_1m_end) if x is not None]
    assert len(loads) == 2 * len(points)
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Benchmarks: buffer sizes") :]
    section = section[: section.index("\n## ")]
    assert "](docs/buffer-sweep.png)" in section
    assert (root / "docs" / "buffer-sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"1-minute load average went from {min(loads):.2f} to {max(loads):.2f}" in section
    assert f"{meta['cpu_count']} CPUs" in section
    # the table's rows are the JSON's medians and ranges
    for p in points:
        if p.buffers_per_channel == 2 and p.buffer_timeout_ms in (0, None):
            low, high = p.spread("records_per_s")
            assert f"| {p.records_per_s:,.0f} ({low:,.0f}-{high:,.0f}) |" in section
