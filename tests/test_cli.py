"""``puente serve`` and ``python -m server serve`` start the same server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import PuenteProcess

PUENTE = str(Path(sys.executable).parent / "puente")


@pytest.mark.parametrize(
    "command", [[PUENTE], [sys.executable, "-m", "server"]], ids=["console-script", "python-m"]
)
def test_both_entry_points_serve(fake: FakeOpenAI, tmp_path: Path, command: list[str]) -> None:
    config = {"models": [{"name": "m", "provider": "openai_compatible", "base_url": fake.base_url}]}
    with PuenteProcess(config, tmp_path, command=command) as proc:
        answer = httpx.post(
            proc.base_url + "/chat/completions",
            timeout=10,
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert answer.json()["choices"][0]["message"]["content"] == "Hello! You said: hi"
    # SIGTERM is a clean stop: the lifespan ran to its end (closing upstream clients).
    assert "Application shutdown complete" in proc.logs()


def test_help_lists_the_commands() -> None:
    out = subprocess.run([PUENTE, "--help"], capture_output=True, text=True, check=True).stdout
    assert "serve" in out
    assert "check-config" in out
