"""Helpers shared by the access tests: keys created the ways an operator creates them."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support import PuenteProcess

ADMIN = "admin-key-for-access-tests-0123456789"
USER: Any = [{"role": "user", "content": "hi"}]
# What the fake upstream reports for one USER message and its default reply
# ("Hello! You said: hi"): prompt = 1 word + 3, completion = 4 words.
TOKENS_PER_REQUEST = 8

# Every secret any test created, so log checks can look for all of them.
SECRETS: list[str] = []


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def admin_headers(key: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create_key(server: PuenteProcess, name: str, **fields: Any) -> str:
    """A key made through ``POST /admin/keys``; returns the secret."""
    r = httpx.post(
        server.url + "/admin/keys",
        json={"name": name, **fields},
        headers=admin_headers(),
        timeout=10,
    )
    assert r.status_code == 201, r.text
    secret: str = r.json()["key"]
    SECRETS.append(secret)
    return secret


def cli(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``puente keys …`` as an operator runs it, against the configuration's database."""
    return subprocess.run(
        [sys.executable, "-m", "server", "keys", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=config.parent,
    )


def cli_create(config: Path, name: str, *args: str) -> str:
    done = cli(config, "create", name, *args)
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    SECRETS.append(secret)
    return secret


def usage(server: PuenteProcess, **params: str) -> list[dict[str, Any]]:
    r = httpx.get(server.url + "/admin/usage", params=params, headers=admin_headers(), timeout=10)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def eventually(check: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def chat(
    server: PuenteProcess, key: str | None, model: str = "fake-model", **body: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        server.base_url + "/chat/completions",
        json={"model": model, "messages": USER, **body},
        headers=headers,
        timeout=30,
    )
