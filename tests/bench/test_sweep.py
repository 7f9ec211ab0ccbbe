"""The buffer-size sweep: it runs end to end on a tiny grid, writes well-formed CSV and
JSON, keeps its invariants (exact counts, in-flight bytes within the channels' buffers,
low-load latency ordered by buffer timeout) and its command line works.

Nothing here asserts how fast anything is, except the low-load latency invariants.
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from flowkit.bench.__main__ import build_parser, format_table, parse_size, parse_timeout
from flowkit.bench.sweep import (
    COLUMNS,
    ProgressBar,
    SweepConfig,
    SweepPoint,
    _Collector,
    build_job,
    channel_count,
    grid,
    pareto_front,
    percentile,
    plot,
    read_json,
    run_sweep,
    run_sweep_async,
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
