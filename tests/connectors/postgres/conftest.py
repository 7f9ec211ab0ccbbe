"""A PostgreSQL 15 server for the CDC source tests: ``initdb`` into a temporary
directory, ``wal_level=logical``, listening on a free loopback port (one per session).

PostgreSQL refuses to run as root: when the tests run as root, ``initdb`` and ``postgres``
run as the ``postgres`` OS user, who owns the temporary directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.servers import ServerProcess, find_binary, free_port

#: Debian's server binaries (not on PATH), the newest installed version first.
PG_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))[::-1]


def _run_as() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The DSN of a fresh PostgreSQL 15 (superuser ``postgres``, database ``postgres``)."""
    initdb = find_binary("initdb", *(f"{d}/initdb" for d in PG_BINS))
    postgres = find_binary("postgres", *(f"{d}/postgres" for d in PG_BINS))
    user = _run_as()
    # Not under pytest's tmp_path: its parents are private to root, and the server may
    # run as another user.
    root = Path(tempfile.mkdtemp(prefix="flowkit-pg-"))
    try:
        data, sockets = root / "data", root / "run"
        sockets.mkdir()
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (root, sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            [
                initdb,
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ],
            capture_output=True,
            text=True,
            user=user,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        port = free_port()
        server = ServerProcess(
            "postgres",
            [
                postgres,
                "-D",
                str(data),
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
                "-k",
                str(sockets),
                "-c",
                "wal_level=logical",
                "-c",
                "max_replication_slots=100",
                "-c",
                "max_wal_senders=20",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=on",
                "-c",
                "full_page_writes=off",
            ],
            port,
            root / "postgres.log",
            user=user,
        )
        with server.running(timeout=30):
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        shutil.rmtree(root, ignore_errors=True)
