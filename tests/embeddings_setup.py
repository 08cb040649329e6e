"""One Puente for the embeddings and legacy-completions front doors (tests/test_embeddings.py,
tests/test_completions.py): the fake OpenAI-compatible upstream behind a chat entry and embedding
entries of every provider kind, the fake Gemini and Anthropic vendors, and a persona."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.cloud_fixtures import ENV
from tests.fakes.anthropic_vendor import FakeAnthropic
from tests.fakes.gemini_vendor import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente


def config(fake: FakeOpenAI, gemini: FakeGemini, anthropic: FakeAnthropic) -> dict[str, Any]:
    compatible = {"provider": "openai_compatible", "base_url": fake.base_url, "retries": 0}
    return {
        "models": [
            {"name": "fake-model", **compatible},
            {
                "name": "fake-embed",
                **compatible,
                "model": "fake-model",
                "task": "embeddings",
                "embedding_batch": 2,
            },
            {
                "name": "text-embedding-3-small",
                "provider": "openai",
                "base_url": fake.base_url,
                "api_key": "${PUENTE_TEST_OPENAI_KEY}",
                "retries": 0,
            },
            {
                "name": "gpt-3.5-turbo-instruct",
                "provider": "openai",
                "base_url": fake.base_url,
                "api_key": "${PUENTE_TEST_OPENAI_KEY}",
                "retries": 0,
            },
            {
                "name": "gemini-embedding",
                "provider": "gemini",
                "model": "gemini-embedding-001",
                "base_url": gemini.url,
                "api_key": "${PUENTE_TEST_GEMINI_KEY}",
                "retries": 0,
            },
            {
                # A multimodal embedder for the SDK: several inputs must stay several contents.
                "name": "gemini-embedding-2",
                "provider": "gemini",
                "base_url": gemini.url,
                "api_key": "${PUENTE_TEST_GEMINI_KEY}",
                "retries": 0,
            },
            {
                "name": "gemini-flash",
                "provider": "gemini",
                "model": "gemini-test",
                "base_url": gemini.url,
                "api_key": "${PUENTE_TEST_GEMINI_KEY}",
                "retries": 0,
            },
            {
                "name": "claude",
                "provider": "anthropic",
                "model": "claude-sonnet-test",
                "base_url": anthropic.url,
                "api_key": "${PUENTE_TEST_ANTHROPIC_KEY}",
                "retries": 0,
            },
        ],
        "personas": [
            {"name": "historia", "model": "fake-model", "system": "Eres historiador."},
        ],
    }


@pytest.fixture(scope="session")
def embed_puente(
    fake_upstream: FakeOpenAI,
    gemini_vendor: FakeGemini,
    anthropic_vendor: FakeAnthropic,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InProcessPuente]:
    workdir = tmp_path_factory.mktemp("embeddings")
    settings = config(fake_upstream, gemini_vendor, anthropic_vendor)
    with InProcessPuente(settings, workdir, env=ENV, name="embeddings") as proc:
        yield proc
