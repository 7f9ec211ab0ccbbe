"""What ``flowkit run`` shows while a job runs (on standard error): a live table on a
terminal, log lines elsewhere.

Both views read the same :class:`~flowkit.runtime.client.JobMetrics` (per vertex: records
in and out, rates, busy and backpressure ratios, watermarks and their lag; per operator of
a chain: records in and out; the job's checkpoints and restarts) and format it with the
small functions below, which are pure and tested on their own.
"""

from __future__ import annotations

import datetime
import shutil
import threading
from typing import Any, Protocol, TextIO

from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK
from flowkit.runtime.client import JobMetrics

__all__ = [
    "LinesView",
    "LiveView",
    "ProgressView",
    "checkpoint_summary",
    "format_bytes",
    "format_count",
    "format_duration_ms",
    "format_watermark",
    "progress_line",
    "progress_table",
]

#: Watermarks at or above this many milliseconds are read as epoch time (after 1973).
_EPOCH_THRESHOLD = 10**11


def format_watermark(timestamp: int | None) -> str:
    """A watermark for people: ``-`` for none, ``MAX`` at the end of input, a UTC time of
    day for epoch milliseconds, else the number of milliseconds.

    Example:
        >>> format_watermark(None), format_watermark(1500), format_watermark(MAX_WATERMARK)
        ('-', '1500', 'MAX')
        >>> format_watermark(1_767_225_600_250)
        '00:00:00.250'
    """
    if timestamp is None or timestamp <= MIN_WATERMARK:
        return "-"
    if timestamp >= MAX_WATERMARK:
        return "MAX"
    if timestamp >= _EPOCH_THRESHOLD:
        moment = datetime.datetime.fromtimestamp(timestamp / 1000, tz=datetime.UTC)
        return moment.strftime("%H:%M:%S.") + f"{timestamp % 1000:03d}"
    return str(timestamp)


def format_duration_ms(ms: float | None) -> str:
    """``-``, ``850 ms``, ``1.5 s``, ``2.0 min``, ``3.0 h`` or ``4.0 d``.

    Example:
        >>> [format_duration_ms(v) for v in (None, 850, 1500, 120_000, 86_400_000 * 4)]
        ['-', '850 ms', '1.5 s', '2.0 min', '4.0 d']
    """
    if ms is None:
        return "-"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if abs(ms) >= size:
            return f"{ms / size:.1f} {unit}"
    return f"{ms:.0f} ms"


def format_bytes(size: float) -> str:
    """``512 B``, ``4.0 KiB``, ``1.5 MiB``...

    Example:
        >>> format_bytes(512), format_bytes(4096), format_bytes(3 * 2**29)
        ('512 B', '4.0 KiB', '1.5 GiB')
    """
    if size < 1024:
        return f"{size:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def format_count(value: float) -> str:
    """A count or rate in at most 6 characters: ``987``, ``12.3k``, ``4.56M``.

    Example:
        >>> format_count(987), format_count(12_345), format_count(4_560_000), format_count(2.5)
        ('987', '12.3k', '4.56M', '2.5')
    """
    if value >= 1e9:
        return f"{value / 1e9:.2f}G"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.1f}k"
    if value == int(value):
        return f"{int(value)}"
    return f"{value:.1f}"


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.0f}%"


def checkpoint_summary(metrics: JobMetrics) -> str:
    """One line about the job's checkpoints, e.g. ``checkpoints: 3 completed, 0 failed;
    last #3 took 12 ms, 4.1 KiB, alignment 0 ms``."""
    checkpoints = metrics.checkpoints
    if not checkpoints.enabled:
        return "checkpoints: off"
    text = f"checkpoints: {checkpoints.completed} completed, {checkpoints.failed} failed"
    if checkpoints.in_progress:
        text += f", {checkpoints.in_progress} in progress"
    latest = checkpoints.latest
    if latest is not None:
        text += (
            f"; last #{latest.checkpoint_id} took {format_duration_ms(latest.duration_ms)}, "
            f"{format_bytes(latest.state_size)}, "
            f"alignment {format_duration_ms(latest.alignment_ms)}"
        )
    return text


def _rate(vertex: Any) -> float:
    """Records per second a vertex handles: records in (sources: records read)."""
    return float(vertex.records_in_per_second or vertex.records_out_per_second)


def progress_line(elapsed_s: float, status: str, metrics: JobMetrics) -> str:
    """One log line: elapsed time, status, then per vertex its counts, rate, busy and
    backpressure, and watermark with lag; the last checkpoint at the end.

    Example output::

        [   2.0s] RUNNING | Paced Source: in=194 out=194 (97 rec/s, busy 1%, bp ok)
        | Keyed Reduce: in=194 out=194 (97 rec/s, busy 2%, bp ok, wm 12:00:01.234,
        lag 15 ms) | checkpoints: 2 completed, 0 failed; last #2 took 3 ms, 1.2 KiB, ...
    """
    parts = []
    for v in metrics.vertices():
        details = [
            f"{_rate(v):.0f} rec/s",
            f"busy {_percent(v.busy_ratio)}",
            f"bp {v.backpressure_level}",
        ]
        watermark = v.input_watermark if v.input_watermark is not None else v.output_watermark
        if watermark is not None:
            details.append(f"wm {format_watermark(watermark)}")
        if v.watermark_lag_ms is not None:
            details.append(f"lag {format_duration_ms(v.watermark_lag_ms)}")
        if v.late_records_dropped:
            details.append(f"late dropped {v.late_records_dropped}")
        parts.append(f"{v.name}: in={v.records_in} out={v.records_out} ({', '.join(details)})")
    if metrics.restarts:
        parts.append(f"restarts: {metrics.restarts}")
    if metrics.checkpoints.enabled:
        parts.append(checkpoint_summary(metrics))
    return f"[{elapsed_s:6.1f}s] {status} | " + " | ".join(parts)


#: Titles of the columns after the operator name.
_COLUMNS = ("PAR", "IN", "OUT", "IN/s", "OUT/s", "BUSY", "BACKPR", "WATERMARK", "LAG")
#: The operator column never gets narrower than this when names must be cut to fit.
_MIN_NAME_WIDTH = 16


def _layout(rows: list[tuple[str, list[str]]], width: int) -> list[str]:
    """Rows of (name, cells) as aligned lines: every column as wide as its widest entry
    (title included), names left-aligned, cells right-aligned, two spaces apart.

    The name column is as wide as the longest name, not as the terminal: only when the
    table would not fit into ``width`` are long names cut (with ``…``), down to
    ``_MIN_NAME_WIDTH`` characters.
    """
    widths = [max(len(cells[i]) for _, cells in rows) for i in range(len(_COLUMNS))]
    fixed = sum(w + 2 for w in widths)
    name_width = max(len(name) for name, _ in rows)
    if name_width + fixed > width:
        name_width = max(_MIN_NAME_WIDTH, width - fixed)
    lines = []
    for name, cells in rows:
        if len(name) > name_width:
            name = name[: name_width - 1] + "…"
        text = name.ljust(name_width)
        for cell, cell_width in zip(cells, widths):
            text += "  " + cell.rjust(cell_width)
        lines.append(text.rstrip())
    return lines


def progress_table(
    job_name: str, elapsed_s: float, status: str, metrics: JobMetrics, width: int = 120
) -> list[str]:
    """The live view: a header, one row per vertex (summed over its subtasks) with one
    indented row per operator of a chain (its records and rates in and out, and the
    watermark it received), and a line about checkpoints.

    Columns are as wide as their content; ``width`` (the terminal's) only limits how long
    operator names may get before they are cut.

    Example:
        >>> from flowkit.runtime.metrics import SubtaskMetrics
        >>> m = JobMetrics((SubtaskMetrics("Map", 0, 1, 10, 10, 80, 0, 0, 0.0, "RUNNING"),))
        >>> for line in progress_table("job", 1.0, "RUNNING", m, width=200):
        ...     print(line)
        flowkit · job · RUNNING · 1.0 s
        OPERATOR  PAR  IN  OUT  IN/s  OUT/s  BUSY  BACKPR  WATERMARK  LAG
        Map         1  10   10     0      0    0%      ok          -    -
        checkpoints: off
    """
    header = f"flowkit · {job_name} · {status} · {elapsed_s:.1f} s"
    if metrics.restarts:
        header += f" · restarts {metrics.restarts}"
    rows: list[tuple[str, list[str]]] = [("OPERATOR", list(_COLUMNS))]
    for v in metrics.vertices():
        watermark = v.input_watermark if v.input_watermark is not None else v.output_watermark
        rows.append(
            (
                v.name,
                [
                    str(v.parallelism),
                    format_count(v.records_in),
                    format_count(v.records_out),
                    format_count(round(v.records_in_per_second, 1)),
                    format_count(round(v.records_out_per_second, 1)),
                    _percent(v.busy_ratio),
                    v.backpressure_level,
                    format_watermark(watermark),
                    format_duration_ms(v.watermark_lag_ms),
                ],
            )
        )
        if len(v.operators) > 1:
            for op in v.operators:
                rows.append(
                    (
                        "  " + op.name,
                        [
                            "",
                            format_count(op.records_in),
                            format_count(op.records_out),
                            format_count(round(op.records_in_per_second, 1)),
                            format_count(round(op.records_out_per_second, 1)),
                            "",
                            "",
                            format_watermark(
                                op.input_watermark
                                if op.input_watermark is not None
                                else op.output_watermark
                            ),
                            "",
                        ],
                    )
                )
    return [header, *_layout(rows, width), checkpoint_summary(metrics)]


class ProgressView(Protocol):
    """Shows a running job's progress; ``update`` is called about once per interval."""

    def update(self, elapsed_s: float, status: str, metrics: JobMetrics) -> None: ...


class LinesView:
    """Plain log lines, one per update (for files, pipes and CI logs)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def update(self, elapsed_s: float, status: str, metrics: JobMetrics) -> None:
        print(progress_line(elapsed_s, status, metrics), file=self.out, flush=True)


class LiveView:
    """A table redrawn in place on a terminal (ANSI cursor movement), sized to its width.

    Other lines meant for the same terminal (log lines) go through :meth:`write_above`,
    which puts them above the table and draws the table again below them, so they neither
    garble the table nor get overwritten by its next drawing.

    Example:
        >>> import io
        >>> view = LiveView(io.StringIO(), "job", width=80)
        >>> view.write_above("a line before any table")
        >>> view.out.getvalue()
        'a line before any table\\n'
    """

    def __init__(self, out: TextIO, job_name: str, width: int | None = None) -> None:
        self.out = out
        self.job_name = job_name
        self.width = width
        self._lines: list[str] = []  # the table as last drawn
        self._lock = threading.Lock()  # log lines may come from other threads

    def update(self, elapsed_s: float, status: str, metrics: JobMetrics) -> None:
        width = self.width or shutil.get_terminal_size((120, 24)).columns
        lines = [
            line[:width]
            for line in progress_table(self.job_name, elapsed_s, status, metrics, width)
        ]
        with self._lock:
            self.out.write(self._erase() + _block(lines))
            self.out.flush()
            self._lines = lines

    def write_above(self, text: str) -> None:
        """Write ``text`` (one or more lines) above the table, then draw the table again."""
        with self._lock:
            self.out.write(self._erase() + _block(text.splitlines() or [""]) + _block(self._lines))
            self.out.flush()

    def _erase(self) -> str:
        """Back to the first line of the table as drawn, and clear to the end of the screen."""
        return f"\x1b[{len(self._lines)}F\x1b[J" if self._lines else ""


def _block(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)
