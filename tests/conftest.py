from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

# The fake cloud vendors and the Puente in front of them (tests/test_cloud_*.py).
from tests.cloud_fixtures import (  # noqa: F401
    anthropic_vendor,
    claude_fake,
    cloud,
    cloud_puente,
    gemini_fake,
    gemini_vendor,
)

# One Puente with embedding entries of every provider kind (tests/test_embeddings.py, …).
from tests.embeddings_setup import embed_puente  # noqa: F401

# One launched vLLM engine behind one Puente, shared by the session (tests/test_engine.py).
from tests.engine_support import local_engine  # noqa: F401
from tests.fakes.openai_upstream import FakeOpenAI

# The faulty fakes and the Puente in front of them (tests/test_faults*.py).
from tests.fault_fixtures import (  # noqa: F401
    broken_upstream,
    faulty,
    faulty_upstream,
    resilient,
    resilient_sdk,
)
from tests.inprocess import InProcessPuente

# Private Postgres and Redis servers for the tests marked `services` (tests/test_scale.py).
from tests.services import postgres_server, postgres_url, redis_server, redis_url  # noqa: F401
from tests.support import free_port


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def gateway_config(fake: FakeOpenAI) -> dict[str, Any]:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    return {
        "server": {"max_body_bytes": 200_000},
        "models": [
            {"name": "fake-model", "provider": "openai_compatible", "base_url": fake.base_url},
            {
                "name": "alias",
                "provider": "openai_compatible",
                "base_url": fake.base_url,
                "model": "fake-model",
                "description": "the fake under another name",
            },
            {
                "name": "slow",
                "provider": "openai_compatible",
                "base_url": fake.base_url,
                "model": "fake-model",
                "timeouts": {"connect": 2, "read": 0.5},
            },
            {"name": "refused", "provider": "openai_compatible", "base_url": dead},
            {
                "name": "two-endpoints",
                "provider": "openai_compatible",
                "model": "fake-model",
                "endpoints": [fake.base_url, dead],
            },
            {"name": "vendor/*", "provider": "openai_compatible", "base_url": fake.base_url},
            {
                "name": "needs-key",
                "provider": "openai_compatible",
                "base_url": fake.base_url,
                "api_key": "${PUENTE_TEST_UNSET_KEY}",
            },
        ],
    }


@pytest.fixture(scope="session")
def puente(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    workdir: Path = tmp_path_factory.mktemp("puente")
    with InProcessPuente(gateway_config(fake_upstream), workdir) as proc:
        yield proc


@pytest.fixture
def fake(fake_upstream: FakeOpenAI) -> FakeOpenAI:
    fake_upstream.reset()
    return fake_upstream


@pytest.fixture
def client(puente: InProcessPuente) -> Iterator[openai.OpenAI]:
    """The openai SDK pointed at Puente, as a user would (no retries, so tests see each error)."""
    with openai.OpenAI(base_url=puente.base_url, api_key="unused", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def direct(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    """The openai SDK pointed straight at the fake upstream, to compare with."""
    with openai.OpenAI(base_url=fake.base_url, api_key="unused", max_retries=0) as sdk:
        yield sdk
