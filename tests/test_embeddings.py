"""``POST /v1/embeddings`` through Puente, driven by the real openai SDK (sync and async), over
every provider kind: an OpenAI-compatible upstream, OpenAI through its SDK, Gemini translated."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.gemini_vendor import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.vectors import vector
from tests.inprocess import InProcessPuente

PASSAGES = [
    "Machu Picchu fue construida en el siglo XV por orden de Pachacútec.",
    "The Battle of Ayacucho in 1824 sealed the independence of Peru.",
    "Los Nazca trazaron sus líneas en el desierto hace unos dos mil años.",
]
# Embedding entries of each provider kind, and the name each sends upstream.
EMBEDDERS = {
    "fake-embed": "fake-model",
    "text-embedding-3-small": "text-embedding-3-small",
    "gemini-embedding": "gemini-embedding-001",
    "gemini-embedding-2": "gemini-embedding-2",
}


@pytest.fixture
def sdk(embed_puente: InProcessPuente, fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=embed_puente.base_url, api_key="x", max_retries=0) as client:
        yield client


@pytest.fixture
async def async_sdk(embed_puente: InProcessPuente) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=embed_puente.base_url, api_key="x", max_retries=0
    ) as client:
        yield client


def post(puente: InProcessPuente, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(puente.base_url + "/embeddings", json=body, timeout=30)


@pytest.mark.parametrize("model", list(EMBEDDERS))
@pytest.mark.parametrize("encoding", [None, "float"])
def test_sync_sdk_gets_each_passage_its_own_vector_in_order(
    sdk: openai.OpenAI, gemini_fake: FakeGemini, model: str, encoding: str | None
) -> None:
    extra: Any = {"encoding_format": encoding} if encoding else {}
    result = sdk.embeddings.create(model=model, input=PASSAGES, **extra)
    assert result.model == model
    assert [d.index for d in result.data] == [0, 1, 2]
    assert [d.embedding for d in result.data] == [vector(p) for p in PASSAGES]
    assert result.usage.prompt_tokens > 0


@pytest.mark.parametrize("model", list(EMBEDDERS))
def test_base64_is_byte_exact_little_endian_float32(
    embed_puente: InProcessPuente, gemini_fake: FakeGemini, model: str
) -> None:
    answer = post(
        embed_puente, {"model": model, "input": PASSAGES[:2], "encoding_format": "base64"}
    )
    assert answer.status_code == 200, answer.text
    for item, passage in zip(answer.json()["data"], PASSAGES[:2], strict=True):
        expected = vector(passage)
        assert base64.b64decode(item["embedding"]) == struct.pack(f"<{len(expected)}f", *expected)


def test_sdk_base64_decodes_to_the_same_vectors(sdk: openai.OpenAI) -> None:
    result = sdk.embeddings.create(
        model="gemini-embedding", input=PASSAGES[0], encoding_format="base64"
    )
    # The SDK hands an explicit base64 answer over undecoded; decoded as it documents:
    raw = base64.b64decode(result.data[0].embedding)  # type: ignore[arg-type]
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == vector(PASSAGES[0])


async def test_async_sdk_embeddings(async_sdk: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    result = await async_sdk.embeddings.create(model="fake-embed", input="Túpac Amaru II")
    assert result.data[0].embedding == vector("Túpac Amaru II")
    # The SDK asked for base64 on the wire (its default) and Puente passed that on.
    assert fake.state.received[-1]["encoding_format"] == "base64"


@pytest.mark.parametrize(
    "value", [[101, 7592, 102], [[101, 7592, 102], [101, 102], [7]]], ids=["ids", "id-lists"]
)
def test_token_ids_pass_through(sdk: openai.OpenAI, fake: FakeOpenAI, value: Any) -> None:
    result = sdk.embeddings.create(model="fake-embed", input=value, user="ana")
    items = value if isinstance(value[0], list) else [value]
    assert [d.embedding for d in result.data] == [vector(i) for i in items]
    assert fake.state.received[-1]["user"] == "ana"


def test_batches_split_to_the_entrys_limit_and_put_back_in_order(
    sdk: openai.OpenAI, fake: FakeOpenAI
) -> None:
    inputs = [f"passage {i}" for i in range(5)]
    result = sdk.embeddings.create(
        model="fake-embed", input=inputs, extra_body={"fake": {"max_inputs": 2}}
    )
    assert [d.embedding for d in result.data] == [vector(i) for i in inputs]
    assert [d.index for d in result.data] == list(range(5))
    assert [len(r["input"]) for r in fake.state.received] == [2, 2, 1]


def test_dimensions_reach_the_upstream(sdk: openai.OpenAI, gemini_fake: FakeGemini) -> None:
    result = sdk.embeddings.create(model="gemini-embedding", input="Inca", dimensions=5)
    assert result.data[0].embedding == vector("Inca", 5)
    assert gemini_fake.state.received[-1].body["requests"][0]["outputDimensionality"] == 5


def test_dimensions_a_model_cannot_give_are_a_400(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(
            model="fake-embed",
            input="Inca",
            dimensions=4,
            extra_body={"fake": {"no_dimensions": True}},
        )
    assert "dimensions" in caught.value.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": ["a", 1]}, "input"),
        ({"input": {"text": "a"}}, "input"),
        ({}, "input"),
        ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "user": 7}, "user"),
    ],
)
def test_bad_input_is_a_400_naming_the_param(
    embed_puente: InProcessPuente, fake: FakeOpenAI, body: dict[str, Any], param: str
) -> None:
    answer = post(embed_puente, {"model": "fake-embed", **body})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param
    assert fake.state.received == []


def test_gemini_cannot_embed_token_ids(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="gemini-embedding", input=[1, 2, 3])
    assert "token ids" in caught.value.message


def test_chat_model_entries_and_personas_are_refused_clearly(
    sdk: openai.OpenAI, fake: FakeOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as persona:
        sdk.embeddings.create(model="historia", input="Inca")
    assert "persona" in persona.value.message
    with pytest.raises(openai.BadRequestError) as chat:
        sdk.chat.completions.create(
            model="fake-embed", messages=[{"role": "user", "content": "hola"}]
        )
    assert "/v1/embeddings" in chat.value.message
    with pytest.raises(openai.NotFoundError):
        sdk.embeddings.create(model="nope", input="Inca")
    assert fake.state.received == []


def test_upstream_errors_keep_their_status(sdk: openai.OpenAI, gemini_fake: FakeGemini) -> None:
    gemini_fake.program("gemini-embedding-001", status=429, retry_delay=3)
    with pytest.raises(openai.RateLimitError):
        sdk.embeddings.create(model="gemini-embedding", input="Inca")


def test_models_say_which_endpoints_each_entry_serves(sdk: openai.OpenAI) -> None:
    cards = {m.id: m.model_dump() for m in sdk.models.list()}
    assert cards["fake-embed"]["endpoints"] == ["/v1/embeddings"]
    assert cards["gemini-embedding"]["endpoints"] == ["/v1/embeddings"]
    assert "/v1/chat/completions" in cards["fake-model"]["endpoints"]
    assert "/v1/completions" in cards["fake-model"]["endpoints"]
    assert "/v1/embeddings" not in cards["fake-model"]["endpoints"]
    # Chat-only vendors and personas: no legacy completions.
    assert "/v1/completions" not in cards["claude"]["endpoints"]
    assert "/v1/chat/completions" in cards["historia"]["endpoints"]
    assert "/v1/completions" not in cards["historia"]["endpoints"]
    assert sdk.models.retrieve("fake-embed").model_dump()["endpoints"] == ["/v1/embeddings"]
