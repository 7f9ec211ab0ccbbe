"""examples/kafka_pipeline.py against the test broker: as a plain script (its documented
output) and as a job file of ``flowkit run`` (the window totals it commits)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

from test_examples import expected_output

from connectors.kafka.sink_fixtures import read_committed_log, unique_topic

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "kafka_pipeline.py"
SCRIPT = Path(sys.executable).with_name("flowkit")


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flowkit_example_kafka_pipeline", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kafka_pipeline_example_prints_its_documented_output(kafka_broker: str) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "default", str(EXAMPLE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "FLOWKIT_KAFKA_BOOTSTRAP": kafka_broker},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_output(EXAMPLE)
    assert "Traceback" not in result.stderr
    assert "Warning" not in result.stderr, result.stderr


def test_kafka_pipeline_example_runs_with_flowkit_run(kafka_broker: str, tmp_path: Path) -> None:
    example = load_example()
    input_topic, output_topic = unique_topic("orders"), unique_topic("shop-totals")
    asyncio.run(example.prepare(kafka_broker, input_topic, output_topic))
    command = [str(SCRIPT), "run", str(EXAMPLE), "--parallelism", "2"]
    command += ["--checkpoint-dir", str(tmp_path / "ck"), "--checkpoint-interval", "150"]
    command += ["--progress", "off", "--", "--input", input_topic, "--output", output_topic]
    command += ["--group", f"g-{output_topic}", "--bounded"]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "FLOWKIT_KAFKA_BOOTSTRAP": kafka_broker},
    )
    assert result.returncode == 0, result.stderr
    view = asyncio.run(read_committed_log(kafka_broker, output_topic))
    assert view.open == [] and view.aborted == []
    got = Counter(
        (row["shop"], row["start"], row["orders"], row["total"])
        for row in (json.loads(m.value or b"") for m in view.committed)
    )
    want: Counter[tuple[str, int, int, int]] = Counter()
    sums: dict[tuple[str, int], list[int]] = {}
    for timestamp, order in example.orders():
        start = timestamp - timestamp % example.WINDOW_MS
        entry = sums.setdefault((order["shop"], start), [0, 0])
        entry[0] += 1
        entry[1] += order["amount"]
    for (shop, start), (orders, total) in sums.items():
        want[(shop, start, orders, total)] += 1
    assert got == want
    assert all(m.key == json.loads(m.value or b"")["shop"].encode() for m in view.committed)
