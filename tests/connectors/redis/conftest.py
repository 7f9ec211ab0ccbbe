"""A real redis-server for the Redis Streams connector tests: one per test session, on a
free loopback port, without persistence, stopped by its PID; every test starts from an
empty database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from connectors.servers import ServerProcess, find_binary, free_port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The running redis-server (``.port``, ``.pid``)."""
    port = free_port()
    directory = Path(tmp_path_factory.mktemp("redis"))
    binary = find_binary("redis-server", "/usr/bin/redis-server")
    command = [binary, "--save", "", "--appendonly", "no", "--port", str(port)]
    command += ["--bind", "127.0.0.1", "--dir", str(directory)]
    server = ServerProcess("redis-server", command, port, directory / "redis.log")
    with server.running() as running:
        yield running


@pytest.fixture
def redis_url(redis_server: ServerProcess) -> Iterator[str]:
    """``redis://127.0.0.1:<port>/0``, emptied before the test."""
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    with redis.Redis.from_url(url) as client:
        client.flushall()
    yield url


@pytest.fixture
def rdb(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client of the test's database, to fill and inspect streams."""
    with redis.Redis.from_url(redis_url) as client:
        yield client
