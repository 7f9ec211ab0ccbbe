"""Benchmarks that come with flowkit: ``python -m flowkit.bench sweep`` (see
:mod:`flowkit.bench.sweep`)."""

from __future__ import annotations

from flowkit.bench.sweep import SweepConfig as SweepConfig
from flowkit.bench.sweep import SweepPoint as SweepPoint
from flowkit.bench.sweep import build_figure as build_figure
from flowkit.bench.sweep import plot as plot
from flowkit.bench.sweep import run_sweep as run_sweep
from flowkit.bench.sweep import run_sweep_async as run_sweep_async
from flowkit.bench.sweep import summarize as summarize
from flowkit.bench.sweep import write_csv as write_csv
from flowkit.bench.sweep import write_json as write_json

__all__ = [
    "SweepConfig",
    "SweepPoint",
    "build_figure",
    "plot",
    "run_sweep",
    "run_sweep_async",
    "summarize",
    "write_csv",
    "write_json",
]
