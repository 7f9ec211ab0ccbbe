"""``flowkit cluster start|stop`` and ``flowkit run --cluster URL``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from typing import Any

from flowkit.cli import remote

__all__ = ["cmd_cluster_start", "cmd_cluster_stop", "run_on_cluster"]

#: How often ``flowkit run --cluster`` (without ``--detach``) polls the job's state.
POLL_S = 0.5


def cmd_cluster_start(args: argparse.Namespace) -> int:
    """Run the Dispatcher in the foreground until ``flowkit cluster stop`` or Ctrl-C."""
    from flowkit.cluster.dispatcher import Dispatcher

    async def main() -> None:
        cluster = Dispatcher(
            args.dir,
            taskmanagers=args.taskmanagers,
            slots=args.slots,
            host=args.host,
            port=args.port,
            heartbeat_timeout=args.heartbeat_timeout,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, cluster.stopped.set)
        url = await cluster.start()
        print(f"flowkit cluster: {url} (directory {cluster.directory})", flush=True)
        try:
            await cluster.stopped.wait()
        finally:
            cluster.stopped.clear()
            await cluster.stop()
        print("flowkit cluster stopped", flush=True)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    return 0


def cmd_cluster_stop(args: argparse.Namespace) -> int:
    try:
        remote.request(args.cluster, "/cluster/stop", {})
    except remote.RestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"stopping the cluster at {args.cluster}")
    return 0


def run_on_cluster(args: argparse.Namespace) -> int:
    """Submit the job file to the cluster; without ``--detach``, follow it to its end."""
    try:
        with open(args.job) as f:
            source = f.read()
    except OSError as exc:
        print(f"error: cannot read the job file {args.job}: {exc}", file=sys.stderr)
        return 2
    body: dict[str, Any] = {
        "source": source,
        "filename": os.path.basename(args.job),
        "parallelism": args.parallelism,
        "args": list(args.job_args),
        "settings": list(args.set),
    }
    if getattr(args, "restore_from", None):
        body["restore_from"] = os.path.abspath(args.restore_from)
        body["allow_non_restored_state"] = bool(args.allow_non_restored_state)
    if getattr(args, "checkpoint_dir", None):
        body["checkpoint_dir"] = os.path.abspath(args.checkpoint_dir)
        body["checkpoint_interval_ms"] = args.checkpoint_interval
    try:
        reply = remote.request(args.cluster, "/jobs", body)
    except remote.RestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    job_id = reply["jobid"]
    print(f"submitted job {job_id} to {args.cluster}", flush=True)
    if args.detach:
        return 0
    shown = None
    while True:
        try:
            job = remote.request(args.cluster, f"/jobs/{job_id}")
        except remote.RestError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        state = job["state"]
        line = state + (f" (waiting for {job['waiting_for']})" if job.get("waiting_for") else "")
        if line != shown:
            print(f"job {job_id}: {line}", file=sys.stderr, flush=True)
            shown = line
        if state in ("FINISHED", "CANCELED", "FAILED"):
            if state == "FAILED":
                print(f"error: job {job_id} failed: {job.get('failure')}", file=sys.stderr)
                return 1
            return 0 if state == "FINISHED" else 1
        time.sleep(POLL_S)
