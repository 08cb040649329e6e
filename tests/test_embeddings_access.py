"""Embeddings and legacy completions are requests like chat ones: a key's model list applies,
and each leaves a usage row with its prompt tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.access_support import ADMIN, create_key, eventually, unique, usage
from tests.conftest import gateway_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente


@pytest.fixture(scope="module")
def server(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    workdir: Path = tmp_path_factory.mktemp("embed-access")
    config = gateway_config(fake_upstream)
    config["models"].append(
        {
            "name": "fake-embed",
            "provider": "openai_compatible",
            "base_url": fake_upstream.base_url,
            "model": "fake-model",
            "task": "embeddings",
        }
    )
    with InProcessPuente(config, workdir, env={"PUENTE_ADMIN_KEY": ADMIN}) as proc:
        yield proc


def test_keys_models_and_usage_rows_apply(server: InProcessPuente, fake: FakeOpenAI) -> None:
    name = unique("rag")
    key = create_key(server, name, models=["fake-embed"])
    with openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0) as sdk:
        first = sdk.embeddings.create(model="fake-embed", input=["Inca", "Moche culture"])
        second = sdk.embeddings.create(model="fake-embed", input="Chavín de Huántar")
        with pytest.raises(openai.NotFoundError):
            sdk.completions.create(model="fake-model", prompt="Lima")
    with (
        openai.OpenAI(base_url=server.base_url, api_key="sk-wrong", max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError),
    ):
        sdk.embeddings.create(model="fake-embed", input="Inca")
    prompt = first.usage.prompt_tokens + second.usage.prompt_tokens
    assert prompt > 0

    def written() -> bool:
        return any(r["key"] == name and r["requests"] == 2 for r in usage(server))

    eventually(written, what="usage rows")
    row = next(r for r in usage(server) if r["key"] == name and r["model"] == "fake-embed")
    assert (row["prompt_tokens"], row["completion_tokens"], row["errors"]) == (prompt, 0, 0)
