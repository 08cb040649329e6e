"""Reloading a launched vLLM model for real: the engine is kept when it can be, and replaced
without a gap when it must be.

    .venv/bin/python -m pytest -m engine tests/test_engine_reload.py     # ~2 minutes on 2 cores

A Puente and engine of its own (not the session's shared one: these tests replace its engine).
While a new engine loads, two engines (~3.7 GB each on CPU) are up at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from server.engine import prepare, process_group
from tests.engine_support import ENGINE_READY_TIMEOUT
from tests.support import PuenteProcess, error_envelope

pytestmark = pytest.mark.engine

MODEL = "smollm2"
ADMIN = "test-admin-key-for-engine-reloads"
HELLO: Any = [{"role": "user", "content": "Hola"}]
PAUSE = 3.0


def _config(*, description: str, launch: dict[str, Any] | None = None) -> dict[str, Any]:
    model: dict[str, Any] = {
        "name": MODEL,
        "provider": "vllm",
        "description": description,
        "launch": launch or {"model": "default", "max_model_len": 1024},
    }
    return {"auth": "none", "models": [model]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PuenteProcess]:
    if not prepare.default_engine_python().is_file():
        pytest.skip("the engine venv is not installed: run scripts/install-engine.sh")
    workdir: Path = tmp_path_factory.mktemp("engine-reload")
    proc = PuenteProcess(
        _config(description="v1"), workdir, env={"PUENTE_ADMIN_KEY": ADMIN}, name="puente-reload"
    )
    groups: set[int] = set()
    try:
        proc.start()
        _wait_ready(proc)
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            groups |= set(_engine_pids(proc))
        proc.stop(timeout=60)
        leftover = [pgid for pgid in groups if process_group.members(pgid)]
        for pgid in leftover:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        assert not leftover, "Puente did not stop its engine"


def _wait_ready(server: PuenteProcess) -> None:
    deadline = time.monotonic() + ENGINE_READY_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/ready", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"engine not ready:\n{server.logs()[-5000:]}")


def _engine_pids(server: PuenteProcess) -> list[int]:
    """Puente's engine children (each its process group's leader)."""
    assert server.proc is not None
    pids: list[int] = []
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                if b"vllm.entrypoints.openai.api_server" in cmdline:
                    pids.append(int(child))
    return pids


def _engine_pid(server: PuenteProcess) -> int:
    [pid] = _engine_pids(server)
    return pid


def _reload(server: PuenteProcess, config: dict[str, Any]) -> httpx.Response:
    server.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return httpx.post(
        server.url + "/admin/reload",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=ENGINE_READY_TIMEOUT,
    )


def _chat(server: PuenteProcess) -> httpx.Response:
    return httpx.post(
        server.base_url + "/chat/completions",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 4},
        timeout=120,
    )


class Traffic:
    """Chat requests in a thread, every few seconds, recording every status a client saw.
    Spaced out: requests one after another keep the old engine spinning on both cores, and the
    new one then takes minutes instead of ~30 s to load."""

    def __init__(self, server: PuenteProcess) -> None:
        self.server = server
        self.statuses: list[int] = []
        self.bodies: list[str] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._done: Future[None] | None = None

    def __enter__(self) -> Traffic:
        self._done = self._pool.submit(self._loop)
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            response = _chat(self.server)
            self.statuses.append(response.status_code)
            if response.status_code != 200:
                self.bodies.append(response.text)
            self._stop.wait(PAUSE)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._done is not None
        self._done.result(150)
        self._pool.shutdown()


def _description(server: PuenteProcess) -> str | None:
    cards = {c["id"]: c for c in httpx.get(server.base_url + "/models").json()["data"]}
    description: str | None = cards[MODEL].get("description")
    return description


def test_description_edit_keeps_the_running_engine(server: PuenteProcess) -> None:
    pid = _engine_pid(server)
    with Traffic(server) as traffic:
        time.sleep(1)
        reloaded = _reload(server, _config(description="v2"))
        time.sleep(2)  # the old provider is retired and closed meanwhile
    assert reloaded.status_code == 200, reloaded.text
    assert _description(server) == "v2"
    assert traffic.statuses, "no request ran during the reload"
    assert set(traffic.statuses) == {200}, traffic.bodies
    # The retired provider closed without stopping the engine it handed over.
    assert "closed 1 retired provider" in server.logs()
    assert _engine_pids(server) == [pid]
    assert _chat(server).status_code == 200
    assert httpx.get(server.url + "/ready", timeout=5).status_code == 200


def test_launch_change_starts_a_new_engine_and_serves_meanwhile(server: PuenteProcess) -> None:
    old = _engine_pid(server)
    launch = {"model": "default", "max_model_len": 2048}
    with Traffic(server) as traffic:
        started = time.monotonic()
        reloaded = _reload(server, _config(description="v3", launch=launch))
        took = time.monotonic() - started
        time.sleep(1)
    assert reloaded.status_code == 200, reloaded.text
    # The reload waited for the new engine's load, and the old one answered all along.
    assert took > 5
    assert len(traffic.statuses) >= 3, traffic.statuses
    assert set(traffic.statuses) == {200}, traffic.bodies
    assert _description(server) == "v3"
    # The old engine's whole group is stopped once its requests are done.
    deadline = time.monotonic() + 60
    while process_group.members(old) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not process_group.members(old)
    new = _engine_pid(server)
    assert new != old
    assert b"--max-model-len\x002048" in Path(f"/proc/{new}/cmdline").read_bytes()
    assert _chat(server).status_code == 200


def test_engine_that_cannot_start_keeps_the_running_one(server: PuenteProcess) -> None:
    pid = _engine_pid(server)
    before = httpx.get(server.base_url + "/models").json()
    broken = {"model": "default", "max_model_len": 1024, "python": "/nonexistent/python"}
    refused = _reload(server, _config(description="broken", launch=broken))
    assert refused.status_code == 503
    error = error_envelope(refused)
    assert error["code"] == "engine_not_ready"
    assert f"model '{MODEL}'" in error["message"]
    assert "/nonexistent/python" in error["message"]
    assert "reload refused, keeping the running configuration" in server.logs()
    assert httpx.get(server.base_url + "/models").json() == before
    assert _engine_pids(server) == [pid]
    assert _chat(server).status_code == 200
