"""Command line of flowkit's benchmarks: ``python -m flowkit.bench sweep [options]``.

Example:
    python -m flowkit.bench sweep --buffer-sizes 1k,32k --buffers-per-channel 2 \\
        --timeouts 0,100,none --records 50000 --repeat 3 --out results --plot

Results go to ``sweep-results/`` unless ``--out`` names another folder; ``--help`` shows
every default.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from flowkit.bench.sweep import (
    DEFAULT_BUFFER_SIZES,
    DEFAULT_BUFFERS_PER_CHANNEL,
    DEFAULT_TIMEOUTS,
    SweepPoint,
    plot,
    read_json,
    read_json_meta,
    run_sweep,
    write_csv,
    write_json,
)

T = TypeVar("T")

_SIZE = re.compile(r"^(?P<number>\d+)\s*(?P<unit>|b|k|kb|kib|m|mb|mib)$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10}
_UNITS.update({"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20})
_NO_TIMEOUT = ("none", "off", "disabled", "-1")

#: Where the sweep writes its files unless ``--out`` says otherwise.
DEFAULT_OUT = Path("sweep-results")


def parse_size(text: str) -> int:
    """``"256"`` -> 256, ``"4k"``/``"4KiB"`` -> 4096, ``"1M"``/``"1MiB"`` -> 1048576.

    Raises:
        argparse.ArgumentTypeError: for anything else.
    """
    match = _SIZE.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (e.g. 256, 4k, 1M)")
    return int(match["number"]) * _UNITS[match["unit"].lower()]


def parse_timeout(text: str) -> float | None:
    """Milliseconds (``"0"``, ``"2.5"``) or ``"none"``/``"off"``/``"disabled"``/``"-1"``
    for "only when full".

    Raises:
        argparse.ArgumentTypeError: for anything else.
    """
    value = text.strip().lower()
    if value in _NO_TIMEOUT:
        return None
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a buffer timeout: {text!r} (milliseconds >= 0, or none)"
        ) from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"buffer timeout must be >= 0 or none, got {text!r}")
    return int(number) if number.is_integer() else number


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _list_of(parse: Callable[[str], T]) -> Callable[[str], list[T]]:
    def parse_list(text: str) -> list[T]:
        items = [item for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError("needs at least one value")
        return [parse(item) for item in items]

    return parse_list


def _format_timeouts(values: Sequence[float | None]) -> str:
    return ",".join("none" if v is None else f"{v:g}" for v in values)


def _format_sizes(values: Sequence[int]) -> str:
    def one(size: int) -> str:
        if size >= 1 << 20 and size % (1 << 20) == 0:
            return f"{size >> 20}M"
        if size >= 1 << 10 and size % (1 << 10) == 0:
            return f"{size >> 10}k"
        return str(size)

    return ",".join(one(v) for v in values)


#: ``--debloat`` choices: the debloating settings each grid point is run with.
_DEBLOAT: dict[str, tuple[bool, ...]] = {"off": (False,), "on": (True,), "both": (False, True)}


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option's help ends in ``(default: ...)``."""
    parser = argparse.ArgumentParser(
        prog="python -m flowkit.bench", description="flowkit's benchmarks."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser(
        "sweep",
        help="sweep buffer size, buffers per channel and buffer timeout",
        description=(
            "Run one job per combination of buffer size, buffers per channel and buffer "
            "timeout (source -> key_by -> map -> rebalance -> sink, every stage at the given "
            "parallelism) and measure throughput, end-to-end latency, peak memory in flight "
            "and the time producers waited for buffers. Writes sweep.csv and sweep.json "
            "(and sweep.png with --plot) into the --out folder, created if missing."
        ),
    )
    sweep.add_argument(
        "--buffer-sizes",
        type=_list_of(parse_size),
        default=list(DEFAULT_BUFFER_SIZES),
        metavar="LIST",
        help=(
            "bytes per buffer, comma separated; k and M suffixes "
            f"(default: {_format_sizes(DEFAULT_BUFFER_SIZES)})"
        ),
    )
    sweep.add_argument(
        "--buffers-per-channel",
        type=_list_of(_positive_int),
        default=list(DEFAULT_BUFFERS_PER_CHANNEL),
        metavar="LIST",
        help=(
            "buffers per channel, comma separated "
            f"(default: {','.join(map(str, DEFAULT_BUFFERS_PER_CHANNEL))})"
        ),
    )
    sweep.add_argument(
        "--timeouts",
        type=_list_of(parse_timeout),
        default=list(DEFAULT_TIMEOUTS),
        metavar="LIST",
        help=(
            "buffer timeouts in ms, comma separated; none = only when full "
            f"(default: {_format_timeouts(DEFAULT_TIMEOUTS)})"
        ),
    )
    sweep.add_argument(
        "--records",
        type=_positive_int,
        default=100_000,
        metavar="N",
        help="records per run (default: %(default)s)",
    )
    sweep.add_argument(
        "--record-size",
        type=_positive_int,
        default=100,
        metavar="B",
        help="bytes per record, about (default: %(default)s)",
    )
    sweep.add_argument(
        "--keys",
        type=_positive_int,
        default=1000,
        metavar="K",
        help="distinct keys (default: %(default)s)",
    )
    sweep.add_argument(
        "--parallelism",
        type=_positive_int,
        default=2,
        metavar="P",
        help="subtasks per stage (default: %(default)s)",
    )
    sweep.add_argument(
        "--repeat",
        type=_positive_int,
        default=1,
        metavar="N",
        help=(
            "runs per configuration; each point reports the median and the min-max spread "
            "of its runs (default: %(default)s)"
        ),
    )
    sweep.add_argument(
        "--taskmanagers",
        type=int,
        default=0,
        metavar="N",
        help=(
            "0 runs every job in this process; N runs them on a local cluster of N "
            "TaskManager processes, where channels cross processes (default: %(default)s)"
        ),
    )
    sweep.add_argument(
        "--slow-sink-us",
        type=_positive_float,
        default=None,
        metavar="U",
        help="the sink spends U microseconds per record, creating backpressure "
        "(default: a fast sink)",
    )
    sweep.add_argument(
        "--rate",
        type=_positive_float,
        default=None,
        metavar="R",
        help="offer R records/s (default: as fast as the job takes them)",
    )
    sweep.add_argument(
        "--debloat",
        choices=sorted(_DEBLOAT),
        default="off",
        help="buffer debloating: off, on, or both (an extra series of points with it on) "
        "(default: %(default)s)",
    )
    sweep.add_argument(
        "--debloat-target-ms",
        type=_positive_int,
        default=50,
        metavar="MS",
        help="with debloating: keep about MS milliseconds of data queued per consumer "
        "(default: %(default)s)",
    )
    sweep.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help="output folder, created if missing (default: %(default)s)",
    )
    sweep.add_argument(
        "--plot",
        action="store_true",
        help="also draw sweep.png; needs matplotlib (default: no plot)",
    )
    sweep.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (default: a progress bar when stderr is a terminal)",
    )
    redraw = commands.add_parser(
        "plot",
        help="draw the plot of a sweep.json (e.g. one made on another machine)",
        description="Draw throughput-vs-latency curves of a sweep.json into a PNG.",
    )
    redraw.add_argument("json", type=Path, help="a sweep.json written by the sweep command")
    redraw.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PNG",
        help="PNG to write (default: next to the JSON, with the suffix .png)",
    )
    return parser


def _format_load(point: SweepPoint) -> str:
    """``0.52>0.61``: the 1-minute load before and after the point's runs."""
    if point.load_1m_start is None or point.load_1m_end is None:
        return "-"
    return f"{point.load_1m_start:.2f}>{point.load_1m_end:.2f}"


def format_table(points: Sequence[SweepPoint]) -> str:
    """The main columns of ``points`` as an aligned text table: medians, with the min-max
    range of records/s and p99 latency when a point ran more than once, and the machine's
    1-minute load before and after each point."""
    header = (
        "buffer_size",
        "buffers",
        "timeout_ms",
        "records/s",
        "rec/s_range",
        "MB/s",
        "p50_ms",
        "p99_ms",
        "p99_range",
        "max_ms",
        "peak_buf",
        "peak_KiB",
        "avg_queued_KiB",
        "src_wait",
        "runs",
        "load",
        "debloat",
        "ok",
    )
    rows = [header]
    for p in points:
        repeated = p.repeats > 1
        rate_low, rate_high = p.spread("records_per_s")
        p99_low, p99_high = p.spread("latency_p99_ms")
        rows.append(
            (
                str(p.buffer_size),
                str(p.buffers_per_channel),
                "none" if p.buffer_timeout_ms is None else f"{p.buffer_timeout_ms:g}",
                f"{p.records_per_s:,.0f}",
                f"{rate_low:,.0f}-{rate_high:,.0f}" if repeated else "-",
                f"{p.mb_per_s:.2f}",
                f"{p.latency_p50_ms:.2f}",
                f"{p.latency_p99_ms:.2f}",
                f"{p99_low:.2f}-{p99_high:.2f}" if repeated else "-",
                f"{p.latency_max_ms:.2f}",
                f"{p.peak_buffers}/{p.capacity_buffers}",
                f"{p.peak_in_flight_bytes / 1024:.1f}",
                f"{p.mean_queued_bytes / 1024:.1f}",
                f"{p.source_wait_share:.0%}",
                str(p.repeats),
                _format_load(p),
                "on" if p.debloat else "off",
                "yes" if p.correct else "NO",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows)


def sweep_command(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    out: Path = args.out
    if args.taskmanagers < 0:
        print(f"error: --taskmanagers must be >= 0, got {args.taskmanagers}", file=sys.stderr)
        return 2
    if args.taskmanagers and args.debloat != "off":
        print("error: --debloat is not part of the sweep across processes", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    points = run_sweep(
        args.buffer_sizes,
        args.buffers_per_channel,
        args.timeouts,
        records=args.records,
        record_size=args.record_size,
        keys=args.keys,
        parallelism=args.parallelism,
        slow_sink_us=args.slow_sink_us,
        rate=args.rate,
        debloat=_DEBLOAT[args.debloat],
        debloat_target_ms=args.debloat_target_ms,
        progress=not args.no_progress,
        repeat=args.repeat,
        taskmanagers=args.taskmanagers,
    )
    meta = {"repeat": args.repeat, "arguments": sys.argv[1:] if argv is None else list(argv)}
    written = [write_csv(points, out / "sweep.csv"), write_json(points, out / "sweep.json", meta)]
    if args.plot:
        try:
            written.append(plot(points, out / "sweep.png"))
        except ImportError as exc:
            print(f"no plot: {exc}", file=sys.stderr)
    print(format_table(points))
    for path in written:
        print(f"wrote {path}")
    wrong = [p for p in points if not p.correct]
    if wrong:
        print(
            f"{len(wrong)} point(s) lost, duplicated or missed records: the results are invalid",
            file=sys.stderr,
        )
        return 1
    return 0


def plot_command(args: argparse.Namespace) -> int:
    source: Path = args.json
    target: Path = args.out if args.out is not None else source.with_suffix(".png")
    try:
        points = read_json(source)
        plot(points, target, read_json_meta(source))
    except (OSError, ValueError, ImportError) as exc:
        print(f"cannot plot {source}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {target}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "sweep":
        return sweep_command(args, argv)
    if args.command == "plot":
        return plot_command(args)
    raise AssertionError(f"unknown command {args.command!r}")  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
