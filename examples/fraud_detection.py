"""Fraud detection with keyed state and timers (Apache Flink's classic walkthrough).

A common trick of card fraudsters: test a stolen card with a tiny purchase, and if it
works, make a big one right away. The detector raises an alert for an account when a
**small** transaction (under 1.00) is followed by a **large** one (over 500.00) **within
one minute**. Any other transaction in between resets the pattern.

``FraudDetector`` is a :class:`~flowkit.functions.KeyedProcessFunction` applied after
``key_by(account)``, so every call sees one account and its own state:

* ``flag`` (a ``ValueState``) is set while the account's last transaction was small;
* ``timer`` (a ``ValueState``) holds the time at which that small transaction stops
  counting: its timestamp + one minute. A timer registered for that time clears both
  states, so that an account that never makes another transaction leaves no state behind.
  Whenever the flag is consumed the timer is deleted, so that it cannot clear a newer flag.

**Event time, not processing time.** Flink's walkthrough registers a *processing-time*
timer, "one minute from now on this machine's clock". Then whether an alert is raised
depends on how fast the job happens to run: replaying yesterday's transactions in a few
milliseconds would put every pair "within a minute". Here the minute is measured between
the transactions' own timestamps (``ctx.timestamp()``) with an *event-time* timer, so the
result is a function of the input alone, the same on every run, at any parallelism; and
the timer fires once the watermark shows the minute has passed. The detector also
compares the large transaction's timestamp with the stored deadline, so the rule is exact
even when the watermark has not yet caught up. The price of event time: state is cleaned up
only as fast as watermarks advance.

The detector reads each account's transactions in the order they arrive, so that order
must survive the trip: a non-parallel ``CollectionSource`` stamps the transactions and
makes bounded out-of-orderness watermarks of 5 seconds itself (``from_source(source,
watermark_strategy())``), and sends each account's transactions to its subtask through
one channel. (A parallel ``assign_timestamps_and_watermarks`` after the source would deal
them round-robin to several subtasks, where they could overtake one another.) They are in
timestamp order, so none is late and the output does not depend on when the periodic
watermarks are made.

Run it (from the repository root)::

    python examples/fraud_detection.py
    python examples/fraud_detection.py --parallelism 4   # same output

or as a job file of the command line, which prints each alert as it is raised::

    flowkit run examples/fraud_detection.py

Expected output:
    ALERT account 1: 725.00 at 10:00:40, 35 s after a transaction under 1.00
    ALERT account 5: 500.01 at 10:03:00, 60 s after a transaction under 1.00
    ALERT account 1: 1000.00 at 10:03:50, 40 s after a transaction under 1.00
    3 alerts in 14 transactions

Output of ``flowkit run examples/fraud_detection.py``:
    ALERT account 1: 725.00 at 10:00:40, 35 s after a transaction under 1.00
    ALERT account 5: 500.01 at 10:03:00, 60 s after a transaction under 1.00
    ALERT account 1: 1000.00 at 10:03:50, 40 s after a transaction under 1.00
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from flowkit import (
    CollectSink,
    DataStream,
    KeyedProcessFunction,
    StreamExecutionEnvironment,
    WatermarkStrategy,
)
from flowkit.sources import CollectionSource
from flowkit.state import ValueStateDescriptor

SMALL_AMOUNT = 1.00
LARGE_AMOUNT = 500.00
ONE_MINUTE_MS = 60_000
OUT_OF_ORDERNESS_MS = 5_000


def transaction(account: int, time: str, amount: float) -> dict[str, Any]:
    """A transaction at ``time`` (``"HH:MM:SS"``, milliseconds since midnight).

    Example:
        >>> transaction(7, "10:00:05", 0.5)
        {'account': 7, 'ts': 36005000, 'amount': 0.5}
    """
    hours, minutes, seconds = (int(part) for part in time.split(":"))
    return {
        "account": account,
        "ts": ((hours * 60 + minutes) * 60 + seconds) * 1000,
        "amount": amount,
    }


#: The transactions, in timestamp order.
TRANSACTIONS = [
    transaction(1, "10:00:05", 0.50),
    transaction(2, "10:00:10", 0.10),
    transaction(3, "10:00:20", 950.00),  # large, but no small one before: fine
    transaction(1, "10:00:40", 725.00),  # 35 s after account 1's 0.50: alert
    transaction(4, "10:01:00", 0.25),
    transaction(4, "10:01:10", 42.00),  # resets account 4's pattern
    transaction(4, "10:01:20", 510.00),  # not right after the small one: fine
    transaction(2, "10:01:30", 600.00),  # 80 s after account 2's 0.10: too late, fine
    transaction(5, "10:02:00", 0.99),
    transaction(3, "10:02:10", 1.00),  # not under 1.00
    transaction(5, "10:03:00", 500.01),  # exactly one minute later still counts: alert
    transaction(1, "10:03:10", 0.75),
    transaction(3, "10:03:20", 500.00),  # not over 500.00
    transaction(1, "10:03:50", 1000.00),  # alert
]


def watermark_strategy() -> WatermarkStrategy:
    """Timestamps from the ``"ts"`` field; watermarks trail the newest one by 5 seconds."""
    return WatermarkStrategy.for_bounded_out_of_orderness(
        OUT_OF_ORDERNESS_MS
    ).with_timestamp_assigner(lambda event, record_timestamp: event["ts"])


class FraudDetector(KeyedProcessFunction):
    """Alerts when a transaction under 1.00 is followed within a minute by one over 500.00.

    Emits ``{"account", "small_at", "large_at", "amount"}`` alerts (timestamps in ms).
    """

    def open(self, runtime_context: Any) -> None:
        # True while the account's last transaction was small (None otherwise).
        self.flag = runtime_context.get_state(ValueStateDescriptor("flag", default=None))
        # When that small transaction stops counting; an event-time timer is set for it.
        self.timer = runtime_context.get_state(ValueStateDescriptor("timer", default=None))

    def process_element(self, value: dict[str, Any], ctx: Any) -> Iterable[dict[str, Any]]:
        if self.flag.value():
            deadline = self.timer.value()
            if value["amount"] > LARGE_AMOUNT and ctx.timestamp() <= deadline:
                yield {
                    "account": ctx.get_current_key(),
                    "small_at": deadline - ONE_MINUTE_MS,
                    "large_at": ctx.timestamp(),
                    "amount": value["amount"],
                }
            # Whatever this transaction was, the small one is no longer the last one.
            self._clean_up(ctx)

        if value["amount"] < SMALL_AMOUNT:
            deadline = ctx.timestamp() + ONE_MINUTE_MS
            ctx.timer_service().register_event_time_timer(deadline)
            self.flag.update(True)
            self.timer.update(deadline)

    def on_timer(self, timestamp: int, ctx: Any) -> None:
        # A minute of event time passed since the small transaction: forget it.
        self.flag.clear()
        self.timer.clear()

    def _clean_up(self, ctx: Any) -> None:
        ctx.timer_service().delete_event_time_timer(self.timer.value())
        self.flag.clear()
        self.timer.clear()


def detect_fraud(transactions: DataStream, detector: FraudDetector | None = None) -> DataStream:
    """The alerts of ``transactions``, which must already carry event timestamps.

    Args:
        transactions: dicts with ``"account"``, ``"ts"`` and ``"amount"``.
        detector: the function to run (default: a new :class:`FraudDetector`).

    Returns:
        The alerts, each timestamped with its large transaction's timestamp.
    """
    return (
        transactions.key_by(lambda event: event["account"])
        .process(detector or FraudDetector())
        .name("Fraud Detector")
    )


def build(env: StreamExecutionEnvironment) -> None:
    """The job file's entry point for ``flowkit run``: print each alert as it is raised."""
    timestamped = env.from_source(
        CollectionSource(TRANSACTIONS), watermark_strategy(), "Transactions"
    )
    detect_fraud(timestamped).map(describe).name("Format").print()


def run(
    transactions: Sequence[dict[str, Any]] = TRANSACTIONS, parallelism: int = 2
) -> list[dict[str, Any]]:
    """Run the job over ``transactions``; return the alerts in time order."""
    env = StreamExecutionEnvironment(parallelism=parallelism)
    # Timestamps and watermarks are made in the source, as Flink recommends. The source is
    # non-parallel: each key's records reach its subtask through one channel, in order.
    timestamped = env.from_source(
        CollectionSource(transactions), watermark_strategy(), "Transactions"
    )
    sink = CollectSink()
    detect_fraud(timestamped).sink_to(sink)
    env.execute("fraud detection")
    return sorted(sink.values, key=lambda alert: (alert["large_at"], alert["account"]))


def clock(ms: int) -> str:
    """``HH:MM:SS`` of milliseconds since midnight.

    Example:
        >>> clock(transaction(1, "10:03:50", 1000.0)["ts"])
        '10:03:50'
    """
    seconds = ms // 1000
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def describe(alert: dict[str, Any]) -> str:
    """One alert as a line of text."""
    waited = (alert["large_at"] - alert["small_at"]) // 1000
    return (
        f"ALERT account {alert['account']}: {alert['amount']:.2f} at "
        f"{clock(alert['large_at'])}, {waited} s after a transaction under {SMALL_AMOUNT:.2f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Flag small-then-large transaction pairs.")
    parser.add_argument(
        "--parallelism", type=int, default=2, help="subtasks per operator (default 2)"
    )
    args = parser.parse_args(argv)
    alerts = run(parallelism=args.parallelism)
    for alert in alerts:
        print(describe(alert))
    print(f"{len(alerts)} alerts in {len(TRANSACTIONS)} transactions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
