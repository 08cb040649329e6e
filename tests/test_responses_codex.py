"""Codex CLI (which speaks only the Responses API) completes a short task through Puente: the
fake upstream asks it to run a shell command, Codex runs it and sends the output back, and the
model's final text, quoting that output, is what ``codex exec`` prints.

Codex comes from ``scripts/install-clients.sh`` (``make test`` runs it); without it this test is
skipped, saying so."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.tool_turns import ToolThenText
from tests.inprocess import InProcessPuente

CODEX = Path(__file__).resolve().parent.parent / ".cache/clients/node_modules/.bin/codex"
MARK = "puente-tool-ran"

pytestmark = pytest.mark.skipif(
    not CODEX.exists(), reason="Codex CLI not installed: run scripts/install-clients.sh"
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ToolThenText]:
    # Codex's shell tool is ``exec_command`` (``cmd``: a command line).
    fake = ToolThenText(arguments={"exec_command": {"cmd": f"echo {MARK}"}}).start()
    yield fake
    fake.stop()


def test_codex_exec_runs_a_tool_and_answers_through_puente(
    upstream: ToolThenText, tmp_path: Path
) -> None:
    config = {
        "auth": "none",
        "models": [
            {"name": "fake-model", "provider": "openai_compatible", "base_url": upstream.base_url}
        ],
    }
    with InProcessPuente(config, tmp_path) as puente:
        home = tmp_path / "codex-home"
        home.mkdir()
        (home / "config.toml").write_text(
            'model = "fake-model"\n'
            'model_provider = "puente"\n'
            "[model_providers.puente]\n"
            'name = "Puente"\n'
            f'base_url = "{puente.base_url}"\n'
            'env_key = "PUENTE_API_KEY"\n'
            'wire_api = "responses"\n'
        )
        work = tmp_path / "work"
        work.mkdir()
        env = {**os.environ, "CODEX_HOME": str(home), "PUENTE_API_KEY": "unused"}
        done = subprocess.run(
            [
                str(CODEX),
                "exec",
                "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox",
                "Say hi with the shell.",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
            cwd=work,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        logs = puente.logs()

    assert done.returncode == 0, done.stderr[-2000:]
    # The final answer quotes the command's output: the call and its result went round.
    assert "The tool said:" in done.stdout and MARK in done.stdout
    first, second = upstream.state.received[-2:]
    assert first["tools"][0]["function"]["name"] == "exec_command"
    assert second["messages"][-1]["role"] == "tool" and MARK in second["messages"][-1]["content"]
    assert logs.count("responses model=fake-model") == 2
    assert "tool types Puente cannot run were skipped" in logs  # Codex offers web_search
    # Codex sends ``store: false``: nothing was kept.
    with sqlite3.connect(tmp_path / "puente.db") as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone() == (0,)
