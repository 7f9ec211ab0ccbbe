"""The live table of ``flowkit run``: columns sized to their content, whatever the
terminal's width; names cut only when the table would not fit."""

from __future__ import annotations

import io

from flowkit.cli.progress import LiveView, progress_table
from flowkit.runtime.metrics import JobMetrics, OperatorMetrics, SubtaskMetrics

CHAIN = "Keyed Reduce -> Filter -> Print to Std. Out"
WATERMARK = 1_767_225_600_250  # 2026-01-01 00:00:00.250 UTC


def metrics() -> JobMetrics:
    source = SubtaskMetrics(
        "Paced Source", 0, 1, 120, 120, 0, 900, 0, 0.0, "RUNNING",
        output_watermark=WATERMARK, busy_ratio=0.25,
    )  # fmt: skip
    chain = SubtaskMetrics(
        CHAIN, 0, 1, 120, 0, 900, 0, 0, 0.0, "RUNNING",
        input_watermark=WATERMARK, watermark_lag_ms=15,
        operators=(
            OperatorMetrics("Keyed Reduce", 120, 120),
            OperatorMetrics("Filter", 120, 0),
            OperatorMetrics("Print to Std. Out", 0, 0),
        ),
    )  # fmt: skip
    return JobMetrics((source, chain), ((CHAIN, ("Keyed Reduce", "Filter", "Print to Std. Out")),))


#: The table at any width it fits into: the operator column as wide as the longest name.
TABLE = [
    "OPERATOR                                     PAR   IN  OUT  IN/s  OUT/s  BUSY  BACKPR     WATERMARK    LAG",
    "Paced Source                                   1  120  120     0      0   25%      ok  00:00:00.250      -",
    "Keyed Reduce -> Filter -> Print to Std. Out    1  120    0     0      0    0%      ok  00:00:00.250  15 ms",
    "  Keyed Reduce                                    120  120     0      0                           -",
    "  Filter                                          120    0     0      0                           -",
    "  Print to Std. Out                                 0    0     0      0                           -",
]  # fmt: skip


def test_a_wide_terminal_does_not_widen_the_table() -> None:
    for width in (106, 160, 250, 400):
        lines = progress_table("paced", 2.0, "RUNNING", metrics(), width=width)
        assert lines[0] == "flowkit · paced · RUNNING · 2.0 s"
        assert lines[1:-1] == TABLE, width
        assert lines[-1] == "checkpoints: off"
    # the operator column is as wide as the longest name, then two spaces
    assert TABLE[0].index("PAR") == len(CHAIN) + 2


def test_the_live_view_on_a_wide_terminal_draws_content_sized_lines() -> None:
    out = io.StringIO()
    LiveView(out, "paced", width=250).update(2.0, "RUNNING", metrics())
    lines = out.getvalue().splitlines()
    assert lines[1:-1] == TABLE
    assert max(len(line) for line in lines) == len(TABLE[0]) == 106


def test_names_are_cut_only_when_the_table_would_not_fit() -> None:
    lines = progress_table("paced", 2.0, "RUNNING", metrics(), width=90)[1:-1]
    # 90 columns leave 27 for names (63 for the other columns): the chain's is cut
    names = [line[:29] for line in lines]
    assert names == [
        name.ljust(29)
        for name in (
            "OPERATOR",
            "Paced Source",
            "Keyed Reduce -> Filter -> …",
            "  Keyed Reduce",
            "  Filter",
            "  Print to Std. Out",
        )
    ]
    assert max(len(line) for line in lines) == 90
    # however narrow the terminal, names keep 16 characters (the view cuts the lines)
    narrow = progress_table("paced", 2.0, "RUNNING", metrics(), width=40)[1:-1]
    assert narrow[2].startswith("Keyed Reduce ->…  ")
