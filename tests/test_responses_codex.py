"""Codex CLI (``codex exec``) completing a short task through Puente's Responses door: the fake
upstream answers with a tool call (a shell command), Codex runs it and sends its output back
through Puente, and the fake then answers with text.

Needs Codex CLI, which is not a Python package: ``scripts/install-clients.sh`` installs it
(``scripts/test.sh`` runs it), or ``PUENTE_CODEX`` names a ``codex`` binary. Without npm the test
skips, saying why; with npm but no Codex it fails, pointing at the installer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente

INSTALLED = Path(__file__).resolve().parent.parent / ".cache/clients/node_modules/.bin/codex"
CODEX = (
    os.environ.get("PUENTE_CODEX")
    or (str(INSTALLED) if INSTALLED.is_file() else None)
    or shutil.which("codex")
)
MODEL = "codex-tools"

pytestmark = pytest.mark.skipif(
    CODEX is None and shutil.which("npm") is None,
    reason="Codex CLI needs npm, which is not installed (scripts/install-clients.sh)",
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    fake.programs[MODEL] = {
        "tool_calls": 1,
        "arguments": {"cmd": "echo puente-said-hi"},
        "reply": "The command printed puente-said-hi.",
    }
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def puente(
    upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    config = {
        "models": [{"name": MODEL, "provider": "openai_compatible", "base_url": upstream.base_url}]
    }
    with InProcessPuente(config, tmp_path_factory.mktemp("codex-puente")) as server:
        yield server


def test_codex_exec_completes_a_tool_loop_through_puente(
    puente: InProcessPuente, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    if CODEX is None:
        pytest.fail("Codex CLI is not installed: run scripts/install-clients.sh", False)
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(
        f'model = "{MODEL}"\n'
        'model_provider = "puente"\n'
        "[model_providers.puente]\n"
        'name = "Puente"\n'
        f'base_url = "{puente.base_url}"\n'
        'wire_api = "responses"\n'
        'env_key = "PUENTE_API_KEY"\n'
    )
    env = {**os.environ, "CODEX_HOME": str(home), "HOME": str(tmp_path), "PUENTE_API_KEY": "none"}
    done = subprocess.run(
        [CODEX, "exec", "--skip-git-repo-check", "-C", str(work), "Say hi from the shell"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "The command printed puente-said-hi." in done.stdout
    first, second = upstream.state.received[-2:]
    assert first["model"] == second["model"] == MODEL
    tool = second["messages"][-1]
    assert tool["role"] == "tool" and "puente-said-hi" in tool["content"]
    assert second["messages"][-2]["tool_calls"][0]["id"] == tool["tool_call_id"]
    logs = puente.logs()
    assert (
        logs.count(f"responses model={MODEL} provider=openai_compatible stream=True status=200")
        == 2
    )
    assert "skipped tools Puente cannot run" in logs  # Codex offers web search, which is skipped
    stored = puente.runtime.metrics.responses_stored.labels("stored")._value.get()
    assert stored == 0  # Codex sends store: false, and nothing is kept
