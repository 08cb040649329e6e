"""Claude Code (``claude -p``) completing a short task through Puente: once on a non-Anthropic
model (the fake OpenAI-compatible upstream answers a tool call, then text) and once on a Claude
model (the fake Anthropic vendor, which gets Claude Code's requests as they came). Each run is a
real tool loop: Claude Code runs the tool the model asked for and sends its result back through
Puente.

Needs Claude Code, which is not a Python package: ``scripts/install-clients.sh`` installs it
(``make test`` runs it), or ``PUENTE_CLAUDE_CODE`` names a ``claude`` binary; without one the
tests skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.cloud_fixtures import ANTHROPIC_KEY
from tests.fakes.anthropic_vendor import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente

# Where scripts/install-clients.sh (part of ``make test``) puts it, unless told otherwise.
INSTALLED = Path(__file__).resolve().parent.parent / ".cache/clients/node_modules/.bin/claude"
CLAUDE = (
    os.environ.get("PUENTE_CLAUDE_CODE")
    or (str(INSTALLED) if INSTALLED.is_file() else None)
    or shutil.which("claude")
)
ADMIN = "admin-key-for-the-claude-code-tests-0123456789"
TASK = "Say what hello.py prints"

pytestmark = pytest.mark.skipif(
    CLAUDE is None, reason="Claude Code is not installed: run scripts/install-clients.sh"
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    fake.programs["local-tools"] = {"tool_calls": 1}
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def puente(
    upstream: FakeOpenAI, anthropic_vendor: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    config = {
        "models": [
            {
                "name": "local-tools",
                "provider": "openai_compatible",
                "base_url": upstream.base_url,
                "retries": 0,
            },
            {
                "name": "claude-sonnet",
                "provider": "anthropic",
                "base_url": anthropic_vendor.url,
                "model": "claude-sonnet-test",
                "api_key": "${PUENTE_TEST_CC_ANTHROPIC_KEY}",
                "retries": 0,
            },
        ]
    }
    env = {"PUENTE_ADMIN_KEY": ADMIN, "PUENTE_TEST_CC_ANTHROPIC_KEY": ANTHROPIC_KEY}
    with InProcessPuente(config, tmp_path_factory.mktemp("claude-code"), env=env) as server:
        yield server


@pytest.fixture(scope="module")
def key(puente: InProcessPuente) -> str:
    made = httpx.post(
        puente.url + "/admin/keys",
        json={"name": "claude-code"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert made.status_code == 201, made.text
    secret: str = made.json()["key"]
    return secret


def claude_p(puente: InProcessPuente, key: str, model: str, workdir: Path) -> str:
    """``claude -p TASK`` in a fresh project and home, pointed at Puente as the README says."""
    (workdir / "hello.py").write_text("print('hi')\n")
    (workdir / "home").mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(workdir / "home"),
        "ANTHROPIC_BASE_URL": puente.url,
        "ANTHROPIC_AUTH_TOKEN": key,
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_SMALL_FAST_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    assert CLAUDE is not None
    done = subprocess.run(
        [CLAUDE, "-p", TASK, "--max-turns", "3"],
        check=False,  # the return code is asserted with the output, to show why
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_claude_code_on_a_non_anthropic_model(
    puente: InProcessPuente, key: str, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    upstream.reset()
    out = claude_p(puente, key, "local-tools", tmp_path)
    assert out.startswith("Hello! You said:")  # the fake's text, after the tool's result
    received: list[dict[str, Any]] = upstream.state.received
    calls = [
        call["id"]
        for body in received
        for message in body["messages"]
        for call in message.get("tool_calls") or []
    ]
    results = [
        message["tool_call_id"]
        for body in received
        for message in body["messages"]
        if message["role"] == "tool"
    ]
    assert calls and results and results[0] == calls[0]  # the loop went round through Puente


def test_claude_code_on_a_claude_model(
    puente: InProcessPuente, key: str, claude_fake: FakeAnthropic, tmp_path: Path
) -> None:
    out = claude_p(puente, key, "claude-sonnet", tmp_path)
    assert out.startswith("The tools said:")  # the fake vendor's answer to a tool_result
    # Forwarded as Claude Code wrote it: its prompt-caching breakpoints and betas arrive.
    assert any("cache_control" in orjson.dumps(r.body).decode() for r in claude_fake.state.received)
    assert all("claude-code-" in r.headers["anthropic-beta"] for r in claude_fake.state.received)
    results = [
        block
        for received in claude_fake.state.received
        for message in received.body["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    assert results
