"""Page views per page in 1-second event-time windows: a job file for ``flowkit run``.

The file defines ``build(env, args)``, the job-file convention of the ``flowkit`` command
line: it describes the job on the environment it is given and leaves running it to the
caller. Page views arrive one at a time (paced, like a live stream), stamped with the
time they happened (1 ms of event time apart); the source sends a watermark after every
10 views; a keyed tumbling event-time window counts the views of each page per second.
With ``--out DIR`` the counts go to an exactly-once ``FileSink`` (committed on
checkpoints), else to stdout.

Run it with the command line (live progress view on a terminal, log lines elsewhere)::

    flowkit run examples/page_views.py --checkpoint-dir /tmp/pv-checkpoints --web \\
        -- --events 20000 --pause-ms 1 --out /tmp/pv-out
    flowkit savepoint /tmp/pv-sp-1           # from another terminal, while it runs
    flowkit stop --savepoint /tmp/pv-sp-2    # savepoint, commit, stop
    flowkit inspect /tmp/pv-sp-2
    flowkit run examples/page_views.py --restore-from /tmp/pv-sp-2 \\
        -- --events 20000 --pause-ms 1 --out /tmp/pv-out --start-ms START

where START is what the first run printed (``page_views: --start-ms START``): the
resumed run must make the same events.

or as a plain script, which runs 3,000 views without pauses and prints the totals::

    python examples/page_views.py

Expected output:
    windows: 3 x 5 pages
    views per page: {'about': 600, 'blog': 600, 'docs': 600, 'home': 600, 'pricing': 600}

A short run of the job file, without pauses, from event time 0 (one window, 20 views of
each page, printed as the window fires):

Output of ``flowkit run examples/page_views.py -- --events 100 --pause-ms 0 --start-ms 0``:
    {'page': 'home', 'start': 0, 'views': 20}
    {'page': 'docs', 'start': 0, 'views': 20}
    {'page': 'blog', 'start': 0, 'views': 20}
    {'page': 'pricing', 'start': 0, 'views': 20}
    {'page': 'about', 'start': 0, 'views': 20}
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import flowkit as fk
from flowkit.window import TumblingEventTimeWindows

PAGES = ("home", "docs", "blog", "pricing", "about")
#: Event time between two page views (the default pause, so event time keeps up with the
#: clock), and the window size, in milliseconds.
STEP_MS = 1
WINDOW_MS = 1000
#: 2026-01-01T00:00:00Z: the start the script uses, so that its output never changes.
SCRIPT_START_MS = 1_767_225_600_000


def page_views(count: int, start_ms: int) -> list[dict[str, Any]]:
    """``count`` views, one every millisecond of event time from ``start_ms``, cycling
    the pages.

    Example:
        >>> page_views(2, 0)
        [{'page': 'home', 'user': 0, 'ts': 0}, {'page': 'docs', 'user': 7, 'ts': 1}]
    """
    return [
        {"page": PAGES[i % len(PAGES)], "user": i * 7 % 100, "ts": start_ms + i * STEP_MS}
        for i in range(count)
    ]


class CountViews(fk.AggregateFunction):
    """Counts the views in a window."""

    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, accumulator: int) -> int:
        return accumulator + 1

    def get_result(self, accumulator: int) -> int:
        return accumulator

    def merge(self, acc_a: int, acc_b: int) -> int:
        return acc_a + acc_b


class WindowRow(fk.ProcessWindowFunction):
    """``{"page", "start", "views"}`` for each fired window."""

    def process(self, key: str, context: Any, elements: Iterable[int]) -> Iterable[Any]:
        (views,) = elements
        yield {"page": key, "start": context.window().start, "views": views}


def views_per_window(env: fk.StreamExecutionEnvironment, views: list[Any], pause_s: float) -> Any:
    """The job without its sink: paced views -> per-page counts per event-time second."""
    source = fk.PacedSource(
        views, pause_s=pause_s, timestamp=lambda view: view["ts"], watermark_every=10
    )
    return (
        env.from_source(source, source_name="Page Views")
        .uid("page-views")
        .key_by(lambda view: view["page"])
        .window(TumblingEventTimeWindows.of(WINDOW_MS))
        .aggregate(CountViews(), WindowRow())
        .name("Views per Page")
        .uid("views-per-page")
    )


def build(env: fk.StreamExecutionEnvironment, args: Sequence[str] = ()) -> None:
    """The job file's entry point for ``flowkit run`` (arguments come after ``--``)."""
    parser = argparse.ArgumentParser(prog="page_views.py")
    parser.add_argument("--events", type=int, default=5000, help="page views (default 5000)")
    parser.add_argument("--pause-ms", type=float, default=1.0, help="pause between views")
    parser.add_argument(
        "--start-ms",
        type=int,
        default=None,
        help="event time of the first view (default: now); give the same value on resume",
    )
    parser.add_argument("--out", help="directory for exactly-once JSON-lines part files")
    options = parser.parse_args(list(args))
    start = options.start_ms
    if start is None:
        start = time.time_ns() // 1_000_000 // WINDOW_MS * WINDOW_MS
        print(f"page_views: --start-ms {start} (give it again to resume)", file=sys.stderr)
    counts = views_per_window(env, page_views(options.events, start), options.pause_ms / 1000)
    if options.out:
        counts.sink_to(fk.FileSink.for_row_format(options.out, encoder="jsonl").build())
    else:
        counts.print()


def main() -> int:
    env = fk.StreamExecutionEnvironment(parallelism=2)
    sink = fk.CollectSink()
    views_per_window(env, page_views(3000, SCRIPT_START_MS), pause_s=0).sink_to(sink)
    env.execute("page views")
    totals: dict[str, int] = {}
    for row in sink.values:
        totals[row["page"]] = totals.get(row["page"], 0) + row["views"]
    windows = {row["start"] for row in sink.values}
    print(f"windows: {len(windows)} x {len(totals)} pages")
    print(f"views per page: {dict(sorted(totals.items()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
