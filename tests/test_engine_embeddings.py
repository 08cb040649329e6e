"""The local embedding model for real: all-MiniLM-L6-v2 on vLLM's pooling runner, through Puente,
driven by the openai SDK. One engine for the module; short on purpose."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.embedding_engine import DIMENSIONS, EMBEDDING_MODEL, embedding_puente
from tests.inprocess import InProcessPuente

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def puente(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessPuente]:
    with embedding_puente(tmp_path_factory.mktemp("embed-engine")) as server:
        yield server


@pytest.fixture
def sdk(puente: InProcessPuente) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=puente.base_url, api_key="x", max_retries=0) as client:
        yield client


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_vectors_have_the_documented_dimension_and_rank_a_paraphrase_first(
    sdk: openai.OpenAI,
) -> None:
    sentence = "The Inca emperor lived in the city of Cusco."
    paraphrase = "Cusco was the home of the Inca ruler."
    unrelated = "Stock markets fell sharply after the interest rate decision."
    result = sdk.embeddings.create(
        model=EMBEDDING_MODEL, input=[sentence, paraphrase, unrelated], encoding_format="float"
    )
    vectors = [d.embedding for d in result.data]
    assert [len(v) for v in vectors] == [DIMENSIONS] * 3
    assert result.model == EMBEDDING_MODEL
    assert result.usage.prompt_tokens > 0
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2


async def test_async_sdk_default_base64_decodes_to_the_float_vectors(
    puente: InProcessPuente, sdk: openai.OpenAI
) -> None:
    text = "Machu Picchu"
    floats = sdk.embeddings.create(model=EMBEDDING_MODEL, input=text, encoding_format="float")
    async with openai.AsyncOpenAI(base_url=puente.base_url, api_key="x") as client:
        # No encoding_format: the SDK asks for base64 and decodes it itself.
        decoded = await client.embeddings.create(model=EMBEDDING_MODEL, input=text)
    assert len(decoded.data[0].embedding) == DIMENSIONS
    assert (
        max(
            abs(a - b)
            for a, b in zip(decoded.data[0].embedding, floats.data[0].embedding, strict=True)
        )
        < 1e-6
    )


def test_what_the_model_cannot_do_is_a_clear_400(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        sdk.embeddings.create(model=EMBEDDING_MODEL, input="Inca", dimensions=128)
    with pytest.raises(openai.BadRequestError, match="/v1/embeddings"):
        sdk.chat.completions.create(
            model=EMBEDDING_MODEL, messages=[{"role": "user", "content": "Hola"}]
        )
    with pytest.raises(openai.BadRequestError, match="/v1/embeddings"):
        sdk.completions.create(model=EMBEDDING_MODEL, prompt="Hola")


def test_models_lists_it_as_an_embedding_model(puente: InProcessPuente) -> None:
    card = httpx.get(puente.base_url + "/models/" + EMBEDDING_MODEL, timeout=10).json()
    assert card["endpoints"] == ["/v1/embeddings"]
    assert card["status"] == "ready"
