"""A NATS server with JetStream for the JetStream connector tests: ``nats-server -js`` from
Debian's package, on a free loopback port, its store in a temporary directory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.servers import ServerProcess, find_binary, free_port


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``nats://127.0.0.1:port`` of a fresh JetStream-enabled nats-server (one per session)."""
    binary = find_binary("nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server")
    port = free_port()
    base = Path(tmp_path_factory.mktemp("nats"))
    server = ServerProcess(
        "nats-server",
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(base / "store")],
        port,
        base / "nats-server.log",
    )
    with server.running():
        yield f"nats://127.0.0.1:{port}"


@pytest.fixture
def stream_name() -> str:
    """A stream name of its own for each test (subjects ``<name>.>``)."""
    return f"T{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def js(nats_server: str) -> AsyncIterator[Any]:
    """A JetStream context on the test server (for setting up and checking streams)."""
    import nats

    nc = await nats.connect(nats_server)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()
