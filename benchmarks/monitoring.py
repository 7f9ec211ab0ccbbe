"""Cost of watching a job: metrics reads, the web UI, and requests to it.

The keyed W2 job of throughput.py (``key_by(user) -> running sum``, parallelism 2) over N
events, run in five modes, best of R runs each:

- ``plain``: nothing reads the job;
- ``metrics-1hz``: ``client.metrics()`` once a second in the job's loop (what
  ``flowkit run`` does for its progress view);
- ``web-idle``: the web UI serves the job, nobody asks;
- ``web-1hz``: a client polls the dashboard's endpoints (job overview, checkpoints) once
  a second, as the dashboard does;
- ``web-20hz``: the same twenty times a second, plus ``/metrics`` (Prometheus).

The HTTP client is a child process, as a browser or Prometheus would be. Each run checks the job's
result (the last running sum per user) before it reports. Prints one JSON line per mode:
records/s, the slowdown against ``plain``, and the median and worst request times.

Run: ``python benchmarks/monitoring.py [--events N] [--repeat R]`` (needs the ``web``
extra for the web modes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import flowkit as fk

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from throughput import make_events

MODES = ("plain", "metrics-1hz", "web-idle", "web-1hz", "web-20hz")


#: The polling client, run as a child process: like a browser or Prometheus it is outside
#: the job's process (a thread would compete with the job for the interpreter lock and
#: measure that instead). It polls until the server closes with the job's end, then
#: prints its request times as JSON.
POLLER = """
import json, sys, time, urllib.request
url, interval, paths = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
times = []
try:
    while True:
        time.sleep(interval)
        for path in paths:
            start = time.perf_counter()
            with urllib.request.urlopen(url + path, timeout=10) as reply:
                reply.read()
            times.append((time.perf_counter() - start) * 1000)
except OSError:
    pass
print(json.dumps(times))
"""


class Poller:
    """GETs ``paths`` on ``url`` every ``interval`` seconds from a child process."""

    def __init__(self, url: str, paths: list[str], interval: float) -> None:
        self._child = subprocess.Popen(
            [sys.executable, "-c", POLLER, url, str(interval), *paths],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.times_ms: list[float] = []

    def stop(self) -> None:
        """After the job ended (its server closed): collect the child's timings."""
        out, _ = self._child.communicate(timeout=30)
        self.times_ms = json.loads(out)


async def run_once(events: list[dict[str, Any]], mode: str) -> tuple[float, dict[str, int], Any]:
    env = fk.StreamExecutionEnvironment(parallelism=2)
    if mode.startswith("web"):
        env.enable_web_ui(port=0)
    sink = fk.CollectSink()
    env.from_collection(events).key_by(lambda e: e["user"]).sum("value").sink_to(sink)
    start = time.perf_counter()
    client = await env.execute_async("W2")
    poller = None
    if mode in ("web-1hz", "web-20hz"):
        assert client.web_ui_url is not None
        paths = ["/api/jobs/current", "/api/jobs/current/checkpoints"]
        if mode == "web-20hz":
            paths.append("/metrics")
        poller = Poller(client.web_ui_url, paths, 1.0 if mode == "web-1hz" else 0.05)
    waiter = asyncio.ensure_future(client.wait())
    while not waiter.done():
        await asyncio.wait({waiter}, timeout=1.0)
        if mode == "metrics-1hz" and not waiter.done():
            client.metrics()
    await waiter
    elapsed = time.perf_counter() - start
    if poller is not None:
        # the server closes with its last job; then the poller's next request fails
        await fk.wait_until(lambda: env.web_ui_url is None, "the web UI to close", within=30)
        poller.stop()
    last: dict[str, int] = {}
    for e in sink.values:
        last[e["user"]] = e["value"]
    return elapsed, last, poller


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=MODES, action="append", help="run only these modes")
    args = parser.parse_args(argv)
    events = make_events(args.events)
    expected: dict[str, int] = {}
    for e in events:
        expected[e["user"]] = expected.get(e["user"], 0) + e["value"]
    baseline = None
    ok = True
    for mode in args.only or MODES:
        best = float("inf")
        request_ms: list[float] = []
        correct = True
        for _ in range(args.repeat):
            elapsed, last, poller = asyncio.run(run_once(events, mode))
            correct = correct and last == expected
            best = min(best, elapsed)
            if poller is not None:
                request_ms.extend(poller.times_ms)
        rate = args.events / best
        if mode == "plain":
            baseline = rate
        ok = ok and correct
        report: dict[str, Any] = {
            "mode": mode,
            "events": args.events,
            "records_per_s": round(rate),
            "vs_plain": None if baseline is None else round(rate / baseline, 3),
            "correct": correct,
        }
        if request_ms:
            report["requests"] = len(request_ms)
            report["request_ms_median"] = round(statistics.median(request_ms), 2)
            report["request_ms_max"] = round(max(request_ms), 2)
        print(json.dumps(report), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
