"""Sessionization: group each user's clicks into sessions separated by 10 idle minutes.

A session is a run of clicks of one user in which no two consecutive clicks are more than
the *gap* (10 minutes) apart. Sessions have no fixed length, so they are event-time
**session windows**: ``EventTimeSessionWindows.with_gap(10 min)`` puts every click in its
own window ``[ts, ts + gap)`` and merges windows that overlap *or touch*. A click exactly
10 minutes after the previous one therefore continues the session (``carol``'s 09:20);
a click more than 10 minutes after it, even by a millisecond, starts a new one
(``alice``'s 09:40). A click that arrives out of order can fill a hole and merge two
sessions into one (``bob``'s 09:14).

A session is complete once the watermark reaches its last millisecond, the last click
plus the gap minus 1 ms. Then the ``ProcessWindowFunction`` ``SessionSummary`` gets all
clicks of the session and emits ``(user, session_start, session_end, clicks, pages)``,
where ``session_start`` is the first click's time, ``session_end`` the window end (last
click + gap) and ``pages`` the pages in click order.

The clicks come from a non-parallel ``CollectionSource`` that stamps them and makes bounded
out-of-orderness watermarks of 2 minutes (``from_source(source, watermark_strategy())``).
No click arrives more than 2 minutes out of order, so no click is ever late and no session
is closed before all its clicks arrived: the output does not depend on when the periodic
watermarks happen to be made.

Run it (from the repository root)::

    python examples/sessionization.py
    python examples/sessionization.py --parallelism 4   # same output

or as a job file of the command line, which prints each session as its window fires::

    flowkit run examples/sessionization.py

Expected output:
    alice 09:00:00 - 09:17:00  3 clicks: home > search > product
    alice 09:40:00 - 09:52:00  2 clicks: home > cart
    bob   09:05:00 - 09:35:30  4 clicks: home > reviews > product > cart
    carol 09:10:00 - 09:40:00  4 clicks: home > search > product > checkout
    dave  09:50:00 - 10:00:00  1 click: home

Output of ``flowkit run examples/sessionization.py``:
    alice 09:00:00 - 09:17:00  3 clicks: home > search > product
    bob   09:05:00 - 09:35:30  4 clicks: home > reviews > product > cart
    carol 09:10:00 - 09:40:00  4 clicks: home > search > product > checkout
    alice 09:40:00 - 09:52:00  2 clicks: home > cart
    dave  09:50:00 - 10:00:00  1 click: home
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from flowkit import (
    CollectSink,
    DataStream,
    ProcessWindowFunction,
    StreamExecutionEnvironment,
    WatermarkStrategy,
)
from flowkit.sources import CollectionSource
from flowkit.window import EventTimeSessionWindows

#: Inactivity that ends a session, and the bound on how late clicks arrive (ms).
SESSION_GAP_MS = 10 * 60_000
OUT_OF_ORDERNESS_MS = 2 * 60_000


def click(user: str, time: str, page: str) -> dict[str, Any]:
    """A click at ``time`` (``"HH:MM"`` or ``"HH:MM:SS"``, milliseconds since midnight).

    Example:
        >>> click("alice", "09:00:30", "home")
        {'user': 'alice', 'ts': 32430000, 'page': 'home'}
    """
    hours, minutes, *seconds = (int(part) for part in time.split(":"))
    ts = ((hours * 60 + minutes) * 60 + (seconds[0] if seconds else 0)) * 1000
    return {"user": user, "ts": ts, "page": page}


#: The clicks in the order they arrive.
CLICKS = [
    click("alice", "09:00", "home"),
    click("alice", "09:04", "search"),
    click("bob", "09:05", "home"),
    click("alice", "09:07", "product"),
    click("carol", "09:10", "home"),
    click("bob", "09:16", "product"),  # 11 min after bob's 09:05: a second session, for now
    click("bob", "09:14", "reviews"),  # 2 min out of order: bridges bob's two sessions
    click("carol", "09:20", "search"),  # exactly 10 min after 09:10: the sessions touch
    click("carol", "09:25", "product"),
    click("bob", "09:25:30", "cart"),
    click("carol", "09:30", "checkout"),
    click("alice", "09:40", "home"),  # 33 min after alice's 09:07: a new session
    click("alice", "09:42", "cart"),
    click("dave", "09:50", "home"),
]


def watermark_strategy() -> WatermarkStrategy:
    """Timestamps from the ``"ts"`` field; clicks arrive at most 2 minutes out of order."""
    return WatermarkStrategy.for_bounded_out_of_orderness(
        OUT_OF_ORDERNESS_MS
    ).with_timestamp_assigner(lambda event, record_timestamp: event["ts"])


class SessionSummary(ProcessWindowFunction):
    """Summarizes the clicks of one session window.

    Emits ``(user, session_start, session_end, clicks, pages)``: the window's start (the
    first click) and end (the last click + gap), the number of clicks and the pages in
    click order (ties by page name, so that the order never depends on arrival order).
    """

    def process(self, key: str, context: Any, elements: Iterable[Any]) -> Iterable[Any]:
        session = context.window()
        clicks = sorted(elements, key=lambda event: (event["ts"], event["page"]))
        yield (key, session.start, session.end, len(clicks), [c["page"] for c in clicks])


def sessions(clicks: DataStream, gap_ms: int = SESSION_GAP_MS) -> DataStream:
    """The sessions of ``clicks`` (dicts with ``"user"``, ``"ts"`` and ``"page"``).

    Args:
        clicks: clicks that already carry event timestamps and watermarks.
        gap_ms: inactivity that ends a session.

    Returns:
        ``(user, session_start, session_end, clicks, pages)`` tuples, one per session,
        timestamped ``session_end - 1``.
    """
    return (
        clicks.key_by(lambda event: event["user"])
        .window(EventTimeSessionWindows.with_gap(gap_ms))
        .process(SessionSummary())
        .name("Sessions")
    )


def build(env: StreamExecutionEnvironment) -> None:
    """The job file's entry point for ``flowkit run``: print each session as it closes."""
    timestamped = env.from_source(CollectionSource(CLICKS), watermark_strategy(), "Clicks")
    sessions(timestamped).map(describe).name("Format").print()


def run(clicks: Sequence[dict[str, Any]] = CLICKS, parallelism: int = 2) -> list[Any]:
    """Run the job over ``clicks``; return the sessions sorted by user and start."""
    env = StreamExecutionEnvironment(parallelism=parallelism)
    # Timestamps and watermarks are made in the source, as Flink recommends. The source is
    # non-parallel: each key's records reach its subtask through one channel, in order.
    timestamped = env.from_source(CollectionSource(clicks), watermark_strategy(), "Clicks")
    sink = CollectSink()
    sessions(timestamped).sink_to(sink)
    env.execute("sessionization")
    return sorted(sink.values, key=lambda session: (session[0], session[1]))


def clock(ms: int) -> str:
    """``HH:MM:SS`` of milliseconds since midnight.

    Example:
        >>> clock(click("bob", "09:25:30", "checkout")["ts"])
        '09:25:30'
    """
    seconds = ms // 1000
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def describe(session: Sequence[Any]) -> str:
    """One session as a line of text."""
    user, start, end, count, pages = session
    noun = "click" if count == 1 else "clicks"
    return f"{user:<5} {clock(start)} - {clock(end)}  {count} {noun}: {' > '.join(pages)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Group clicks into per-user sessions.")
    parser.add_argument(
        "--parallelism", type=int, default=2, help="subtasks per operator (default 2)"
    )
    args = parser.parse_args(argv)
    for session in run(parallelism=args.parallelism):
        print(describe(session))
    return 0


if __name__ == "__main__":
    sys.exit(main())
