"""Public test helpers for flowkit jobs (like trio.testing).

Sits on top of every other layer.
"""

from __future__ import annotations

from flowkit.elements import StreamRecord as StreamRecord
from flowkit.elements import Watermark as Watermark
from flowkit.eventtime.clocks import ManualClock as ManualClock
from flowkit.sinks import CollectSink as CollectSink
from flowkit.testing.harness import HarnessSnapshot as HarnessSnapshot
from flowkit.testing.harness import KeyedProcessFunctionHarness as KeyedProcessFunctionHarness
from flowkit.testing.harness import OneInputOperatorHarness as OneInputOperatorHarness
from flowkit.testing.harness import ProcessFunctionHarness as ProcessFunctionHarness
from flowkit.testing.harness import WindowOperatorHarness as WindowOperatorHarness
from flowkit.testing.sources import PacedSource as PacedSource
from flowkit.testing.test_stream import TestStream as TestStream
from flowkit.testing.waiting import loop_gaps_while as loop_gaps_while
from flowkit.testing.waiting import wait_until as wait_until

__all__ = [
    "CollectSink",
    "HarnessSnapshot",
    "KeyedProcessFunctionHarness",
    "ManualClock",
    "OneInputOperatorHarness",
    "PacedSource",
    "ProcessFunctionHarness",
    "StreamRecord",
    "TestStream",
    "Watermark",
    "WindowOperatorHarness",
    "loop_gaps_while",
    "wait_until",
]
