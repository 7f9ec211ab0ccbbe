"""Helpers of the JetStream connector tests: streams, publishing, reading back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson


async def make_stream(js: Any, name: str, duplicate_window: float = 120.0) -> None:
    """A file-backed stream ``name`` holding the subjects ``<name>.>``."""
    await js.add_stream(name=name, subjects=[f"{name}.>"], duplicate_window=duplicate_window)


async def publish(js: Any, subject: str, payloads: list[bytes]) -> list[int]:
    """Publish every payload, awaiting the acknowledgements; their stream sequences."""
    futures = [await js.publish_async(subject, payload) for payload in payloads]
    acks = await asyncio.wait_for(asyncio.gather(*futures), 30)
    return [ack.seq for ack in acks]


async def publish_json(js: Any, subject: str, values: list[Any]) -> list[int]:
    return await publish(js, subject, [orjson.dumps(v) for v in values])


async def stream_messages(js: Any, stream: str) -> list[tuple[int, bytes, dict[str, str]]]:
    """Every message stored in ``stream``: (sequence, data, headers), read with direct
    get requests (no consumer)."""
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        out.append((seq, msg.data, dict(msg.headers or {})))
    return out


async def wait_for(condition: Any, within: float, what: str, interval: float = 0.02) -> None:
    """Await until ``condition()`` (sync or async) is true, else fail naming ``what``."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)
