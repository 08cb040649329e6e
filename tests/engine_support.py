"""One real vLLM engine behind one Puente, shared by every engine test of the session.

Puente launches the engine itself (``provider: vllm`` with ``launch:``) as model ``smollm2``, on a
port chosen here so tests can read the engine's own ``/metrics``. The same Puente also serves
``smollm2-pair`` in ``endpoints:`` mode: two replicas that are small HTTP proxies in front of
that same engine, which a test can count, take down, bring back or make fail their health check —
what a second vLLM pod would do, without a second 3.7 GB engine on a 2-core machine.

Starting costs ~30 s (engine ready), stopping ~3 s. Needs ``scripts/install-engine.sh``; the
default model is prepared on first use if ``puente models prepare`` has not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import ClientError, ClientSession, ClientTimeout, web

from server.engine import prepare, process_group
from tests.support import PuenteProcess, free_port

MODEL = "smollm2"
PAIR = "smollm2-pair"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "puente.yaml"
ADMIN_KEY = "admin-key-for-the-engine-tests-00000000"


def shipped_personas() -> list[dict[str, Any]]:
    """The personas of the default config, on SmolLM2 (the suite never needs the 1 GB Qwen
    download) and with their scope check off: a 135 M model cannot classify
    (bench/PERSONAS.md), and its answers are what these tests look at."""
    personas: list[dict[str, Any]] = yaml.safe_load(DEFAULT_CONFIG.read_text())["personas"]
    for persona in personas:
        persona["model"] = MODEL
        if "scope" in persona:
            persona["scope"] = {**persona["scope"], "check": False}
    return personas


ENGINE_READY_TIMEOUT = 300.0  # measured 23–66 s on the 2-core CI machine; generous for a busy one


class Replica:
    """An HTTP proxy to the engine that counts chat requests and can fail on command."""

    def __init__(self, target: str, name: str) -> None:
        self.target = target
        self.name = name
        self.port = free_port()
        self.chats = 0
        """Chat completions forwarded so far."""
        self.sick = False
        """When set, ``/health`` answers 503 while chat still works (a hung engine core)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._session: ClientSession | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def up(self) -> Replica:
        self._call(self._up())
        return self

    def down(self) -> None:
        """Go away as a dead process does: the port refuses, open connections are cut."""
        self._call(self._down())

    def close(self) -> None:
        self._call(self._down())
        if self._session is not None:
            self._call(self._session.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _up(self) -> None:
        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=None))
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def _down(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for site in list(runner.sites):
            await site.stop()
        if runner.server is not None:
            for connection in list(runner.server.connections):
                if connection.transport is not None:
                    connection.transport.abort()
        await runner.shutdown()
        await runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        if self.sick:
            return web.Response(status=503)
        assert self._session is not None
        try:
            async with self._session.get(self.target.removesuffix("/v1") + "/health") as upstream:
                return web.Response(status=upstream.status)
        except ClientError:  # the engine is not up (yet, or any more)
            return web.Response(status=502)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        self.chats += 1
        try:
            upstream = await self._session.post(
                self.target + "/chat/completions",
                data=body,
                headers={"Content-Type": "application/json"},
            )
        except ClientError:
            return web.Response(status=502)
        async with upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={"Content-Type": upstream.headers.get("Content-Type", "text/plain")},
            )
            await response.prepare(request)
            # Relayed as it comes, so streams stay streams. A client that left (or ``down``)
            # fails the write, which closes the upstream request: the engine aborts it.
            with contextlib.suppress(ConnectionResetError):
                async for data in upstream.content.iter_any():
                    await response.write(data)
                await response.write_eof()
            return response


class LocalEngine:
    """The shared Puente with its launched engine, and the handles tests need."""

    def __init__(self, workdir: Path) -> None:
        self.engine_port = free_port()
        engine_url = f"http://127.0.0.1:{self.engine_port}/v1"
        self.replicas = (
            Replica(engine_url, "replica-a").up(),
            Replica(engine_url, "replica-b").up(),
        )
        config = {
            "models": [
                {
                    "name": MODEL,
                    "provider": "vllm",
                    "launch": {"model": "default", "max_model_len": 2048, "port": self.engine_port},
                },
                {
                    "name": PAIR,
                    "provider": "vllm",
                    "model": MODEL,
                    "endpoints": [r.url for r in self.replicas],
                },
            ],
            # The personas shipped in the default config, as written there.
            "personas": shipped_personas(),
            "auth": "none",  # the admin key below is for /ready's detail, not for every request
        }
        env = {"PUENTE_ADMIN_KEY": ADMIN_KEY}  # /ready's endpoint detail is the admin's
        self.puente = PuenteProcess(config, workdir, name="puente-engine", env=env)
        self.engine_groups: set[int] = set()
        self.while_loading: dict[str, httpx.Response] = {}
        """What a client saw right after Puente came up, while the engine was still loading."""

    @property
    def engine_url(self) -> str:
        return f"http://127.0.0.1:{self.engine_port}"

    def start(self) -> None:
        self.puente.start()
        # The engine takes 20 s or more to load: look now, a test asserts on it.
        url = self.puente.url
        self.while_loading = {
            "chat": httpx.post(
                url + "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
                timeout=10,
            ),
            "ready": httpx.get(url + "/ready", timeout=10),
            "models": httpx.get(url + "/v1/models", timeout=10),
        }
        self.wait_ready(ENGINE_READY_TIMEOUT)
        self.engine_groups.add(self.engine_pid())

    def wait_ready(self, timeout: float) -> float:
        """Seconds until Puente's ``/ready`` says every model can serve."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            assert self.puente.proc is not None
            if self.puente.proc.poll() is not None:
                raise RuntimeError(f"puente exited:\n{self.puente.logs()[-5000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.puente.url + "/ready", timeout=5).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.5)
        raise RuntimeError(f"not ready after {timeout:.0f} s:\n{self.puente.logs()[-5000:]}")

    def engine_pid(self) -> int:
        """The engine's process (its group's leader), found as Puente's child."""
        assert self.puente.proc is not None
        pid = self.puente.proc.pid
        for child in _children(pid):
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"vllm.entrypoints.openai.api_server" in cmdline:
                return child
        raise AssertionError(f"puente ({pid}) has no engine child")

    def running(self) -> float:
        """The engine's own ``vllm:num_requests_running`` for this model."""
        text = httpx.get(self.engine_url + "/metrics", timeout=5).text
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("vllm:num_requests_running{")
        ]
        assert values, "the engine exports no vllm:num_requests_running"
        return sum(values)

    def stop(self) -> None:
        if self.puente.proc is not None and self.puente.proc.poll() is None:
            with contextlib.suppress(AssertionError, OSError):
                self.engine_groups.add(self.engine_pid())
        self.puente.stop(timeout=60)
        # Puente stops its engine; should it not have (killed, timed out), do it here.
        for pgid in self.engine_groups:
            if process_group.members(pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
        for replica in self.replicas:
            replica.close()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.fixture(scope="session")
def local_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEngine]:
    if not prepare.default_engine_python().is_file():
        pytest.skip("the engine venv is not installed: run scripts/install-engine.sh")
    engine = LocalEngine(tmp_path_factory.mktemp("engine"))
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()
