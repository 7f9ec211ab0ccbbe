"""Helpers of the Redis Streams tests: fill a stream, inspect a group."""

from __future__ import annotations

from typing import Any

import redis


def fill(client: redis.Redis, stream: str, records: list[dict[str, Any]]) -> list[bytes]:
    """XADD every record (a field dict) to ``stream``; their entry IDs."""
    ids: list[bytes] = []
    for start in range(0, len(records), 1000):
        pipe = client.pipeline(transaction=False)
        for record in records[start : start + 1000]:
            pipe.xadd(stream, record)
        ids.extend(pipe.execute())
    return ids


def pending(client: redis.Redis, stream: str, group: str) -> int:
    """Entries of ``stream`` delivered to ``group`` and not acknowledged (XPENDING)."""
    return int(client.xpending(stream, group)["pending"])


def consumers(client: redis.Redis, stream: str, group: str) -> dict[str, int]:
    """The group's consumers and their pending entries."""
    return {
        info["name"].decode(): int(info["pending"])
        for info in client.xinfo_consumers(stream, group)
    }
