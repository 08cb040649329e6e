"""Real Postgres and Redis servers for the tests marked ``services``: private instances on
127.0.0.1, in a temporary folder, started once per session from the system's binaries
(scripts/install-services.sh installs them) and stopped at the end.

When a server cannot start the fixture fails, so a broken setup is never mistaken for a pass;
``PUENTE_SKIP_SERVICES=1`` turns that into a skip, for machines without the binaries.

The fixtures are registered in tests/conftest.py; ``fresh_database`` gives a test its own database.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis

from tests.support import free_port

SKIP_ENV = "PUENTE_SKIP_SERVICES"


def _unavailable(what: str) -> None:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{what} ({SKIP_ENV}=1)")
    pytest.fail(f"{what}; run scripts/install-services.sh, or set {SKIP_ENV}=1 to skip", False)


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _run(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run async work to its end from sync code, in a thread of its own: the caller may be
    inside a running event loop (a session fixture first asked for by an async fixture)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(work())).result(60)


def _accepting(port: int, timeout: float = 30) -> bool:
    """The port opens before recovery ends ("the database system is starting up")."""

    async def connect() -> None:
        conn = await asyncpg.connect(f"postgresql://puente@127.0.0.1:{port}/postgres", timeout=2)
        await conn.close()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _run(connect)
            return True
        except (OSError, asyncpg.PostgresError, TimeoutError):
            time.sleep(0.05)
    return False


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A superuser URL (database ``postgres``) of a private Postgres on 127.0.0.1."""
    initdb, postgres = _pg_binary("initdb"), _pg_binary("postgres")
    if initdb is None or postgres is None:
        _unavailable("Postgres binaries (initdb, postgres) not found")
    assert initdb is not None and postgres is not None
    base = Path(tempfile.mkdtemp(prefix="puente-pg-"))
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        # Postgres refuses to run as root: the Debian package's ``postgres`` user runs it.
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to run Postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
        run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    data, log = base / "data", base / "postgres.log"
    init = subprocess.run(
        [initdb, "-D", str(data), "-U", "puente", "--auth=trust", "-E", "UTF8"],
        capture_output=True,
        check=False,
        cwd=base,
        **run_as,
    )
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        _unavailable(f"initdb failed: {init.stderr.decode(errors='replace')[-800:]}")
    port = free_port()
    argv = [postgres, "-D", str(data), "-p", str(port), "-k", str(base)]
    argv += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
    argv += ["-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    argv += ["-c", "max_connections=100"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=base, **run_as)
    try:
        if not (_wait_port(port, proc) and _accepting(port)):
            _unavailable(f"Postgres did not start: {log.read_text(errors='replace')[-800:]}")
        yield f"postgresql://puente@127.0.0.1:{port}/postgres"
    finally:
        _stop(proc, signal.SIGINT)  # "fast" shutdown
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("redis-server not found")
    assert binary is not None
    base = Path(tempfile.mkdtemp(prefix="puente-redis-"))
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--dir", str(base), "--daemonize", "no", "--protected-mode", "no"]
    with (base / "redis.log").open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        if not _wait_port(port, proc):
            _unavailable(f"Redis did not start: {(base / 'redis.log').read_text()[-800:]}")
        yield f"redis://127.0.0.1:{port}"
    finally:
        _stop(proc)
        shutil.rmtree(base, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new, empty database on the test server; its URL."""
    name = "puente_" + uuid.uuid4().hex[:12]

    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    _run(create)
    return server_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """An empty database of its own for each test."""
    return fresh_database(postgres_server)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The shared Redis, emptied before each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server
