"""Embeddings and legacy completions at the provider level, against the faithful fakes.

Each provider's ``embed`` / ``complete_text`` / ``stream_text`` is driven as the pipeline drives
it, and its answers are validated with the openai SDK's own types (what a client will parse).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from openai.types import Completion, CreateEmbeddingResponse

from server.config import ModelConfig
from server.errors import InvalidRequest, UpstreamStatusError
from server.pipeline.request import ChatRequest, UpstreamRequest
from server.providers.base import Embedder, TextCompleter
from server.providers.cloud import CloudClients
from server.providers.embeddings import from_base64, merge, to_base64
from server.providers.gemini_provider import GeminiProvider
from server.providers.openai_compatible import OpenAICompatibleProvider
from server.providers.openai_provider import OpenAIProvider
from tests.cloud_fixtures import GEMINI_KEY
from tests.fakes.gemini_vendor import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.vectors import vector

TEXTS = ["Machu Picchu fue construida por los incas.", "The Nazca lines", "Túpac Amaru II"]


def embeddings(body: dict[str, Any], model: str = "fake-model") -> UpstreamRequest:
    return UpstreamRequest(
        body={"model": model, **body}, model=model, upstream_model=model, operation="embeddings"
    )


def text(body: dict[str, Any], *, stream: bool = False, usage: bool = False) -> UpstreamRequest:
    full = {"model": "fake-model", **body}
    if stream:
        full["stream"] = True
    if usage:
        full["stream_options"] = {"include_usage": True}
    return UpstreamRequest(
        body=full,
        model="fake-model",
        upstream_model="fake-model",
        operation="completions",
        stream=stream,
        include_usage=usage,
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def cloud_clients() -> AsyncIterator[CloudClients]:
    clients = CloudClients()
    yield clients
    await clients.aclose()


_OPENED: list[OpenAICompatibleProvider] = []


@pytest.fixture(autouse=True)
async def _close_providers() -> AsyncIterator[None]:
    """Each provider ``compatible`` made owns a connection pool: closed after its test, not
    left for the garbage collector to find (and warn about) later."""
    yield
    while _OPENED:
        await _OPENED.pop().aclose()


def compatible(fake: FakeOpenAI, session: aiohttp.ClientSession, **extra: Any) -> Any:
    config = ModelConfig(
        name="fake-model", provider="openai_compatible", base_url=fake.base_url, **extra
    )
    provider = OpenAICompatibleProvider(config, session)
    _OPENED.append(provider)
    return provider


def openai_sdk(fake: FakeOpenAI, clients: CloudClients, **extra: Any) -> OpenAIProvider:
    config = ModelConfig(
        name="fake-model", provider="openai", base_url=fake.base_url, api_key="sk-x", **extra
    )
    return OpenAIProvider(config, clients)


def gemini(vendor: FakeGemini, clients: CloudClients, **extra: Any) -> GeminiProvider:
    config = ModelConfig(
        name="gemini-embedding",
        provider="gemini",
        model="gemini-embedding-001",
        base_url=vendor.url,
        api_key=GEMINI_KEY,
        **extra,
    )
    return GeminiProvider(config, clients)


# -- base64 as the openai SDK reads it -------------------------------------------------------------


def test_base64_is_little_endian_float32_as_the_sdk_decodes() -> None:
    values = [0.1, -2.5, 3.0e-8, 1.0]
    encoded = to_base64(values)
    assert base64.b64decode(encoded) == struct.pack("<4f", *values)
    assert from_base64(encoded) == list(struct.unpack("<4f", base64.b64decode(encoded)))


def test_merged_batches_count_indexes_across_parts_and_sum_usage() -> None:
    first = {"object": "list", "model": "m", "usage": {"prompt_tokens": 3, "total_tokens": 3}}
    first["data"] = [  # an upstream may list them out of order
        {"object": "embedding", "index": 1, "embedding": [1.0]},
        {"object": "embedding", "index": 0, "embedding": [0.0]},
    ]
    second = {"object": "list", "model": "m", "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    second["data"] = [{"object": "embedding", "index": 0, "embedding": [2.0]}]
    merged = merge([first, second], [2, 1])
    assert [(d["index"], d["embedding"]) for d in merged["data"]] == [
        (0, [0.0]),
        (1, [1.0]),
        (2, [2.0]),
    ]
    assert merged["usage"] == {"prompt_tokens": 5, "total_tokens": 5}


# -- openai_compatible (and vllm, which inherits it) -----------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["one text", TEXTS, [101, 7592, 102], [[101, 7592, 102], [101, 102]]],
    ids=["string", "strings", "token-ids", "token-id-lists"],
)
async def test_compatible_passes_every_input_shape_through(
    fake: FakeOpenAI, session: aiohttp.ClientSession, value: Any
) -> None:
    answer = await compatible(fake, session).embed(embeddings({"input": value, "user": "ana"}))
    parsed = CreateEmbeddingResponse.model_validate(answer)
    items = value if isinstance(value, list) and not isinstance(value[0], int) else [value]
    assert [d.embedding for d in parsed.data] == [vector(item) for item in items]
    assert fake.state.received[-1] == {"model": "fake-model", "input": value, "user": "ana"}


async def test_compatible_base64_passes_through_unchanged(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    answer = await compatible(fake, session).embed(
        embeddings({"input": TEXTS, "encoding_format": "base64", "dimensions": 16})
    )
    assert [from_base64(d["embedding"]) for d in answer["data"]] == [vector(t, 16) for t in TEXTS]


async def test_compatible_splits_to_embedding_batch_and_restores_order(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    inputs = [f"passage {i}" for i in range(7)]
    provider = compatible(fake, session, embedding_batch=3)
    answer = await provider.embed(embeddings({"input": inputs, "fake": {"max_inputs": 3}}))
    parsed = CreateEmbeddingResponse.model_validate(answer)
    assert [d.index for d in parsed.data] == list(range(7))
    assert [d.embedding for d in parsed.data] == [vector(i) for i in inputs]
    assert [len(r["input"]) for r in fake.state.received] == [3, 3, 1]
    assert parsed.usage.prompt_tokens == sum(len(i.split()) + 2 for i in inputs)


async def test_compatible_upstream_error_keeps_its_status(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(UpstreamStatusError) as caught:
        await compatible(fake, session).embed(
            embeddings({"input": "x", "dimensions": 4, "fake": {"no_dimensions": True}})
        )
    assert caught.value.status_code == 400
    assert "dimensions" in caught.value.message


async def test_compatible_text_completion_whole_and_streamed(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    provider = compatible(fake, session)
    body = {"prompt": ["Lima is", "Cusco is"], "n": 2, "echo": True, "max_tokens": 3}
    whole = Completion.model_validate(await provider.complete_text(text(body)))
    assert [c.index for c in whole.choices] == [0, 1, 2, 3]
    assert whole.choices[0].text.startswith("Lima is") and whole.choices[2].text.startswith("Cusco")
    assert whole.choices[0].finish_reason == "length"
    async with provider.stream_text(text({"prompt": "Lima is"}, stream=True)) as chunks:
        received = [chunk.data async for chunk in chunks]
    # Usage was asked for on the client's behalf, to count tokens.
    assert fake.state.received[-1]["stream_options"] == {"include_usage": True}
    assert received[-1]["choices"] == [] and received[-1]["usage"]["completion_tokens"] > 0
    streamed = "".join(c["choices"][0]["text"] for c in received[:-1])
    assert streamed == " and then the story of Lima is goes on."


def test_only_chat_vendors_lack_legacy_completions(
    fake_upstream: FakeOpenAI, gemini_vendor: FakeGemini
) -> None:
    clients = CloudClients()
    assert isinstance(openai_sdk(fake_upstream, clients), TextCompleter)
    assert isinstance(openai_sdk(fake_upstream, clients), Embedder)
    assert not isinstance(gemini(gemini_vendor, clients), TextCompleter)
    assert isinstance(gemini(gemini_vendor, clients), Embedder)


async def test_embedding_model_refuses_chat_naming_the_endpoint(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    provider = compatible(fake, session, task="embeddings")
    chat = ChatRequest.from_body(
        {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    )
    with pytest.raises(InvalidRequest, match="/v1/embeddings"):
        await provider.complete(chat)
    with pytest.raises(InvalidRequest, match="/v1/embeddings"):
        await provider.complete_text(text({"prompt": "hi"}))
    assert fake.state.received == []


# -- openai (the SDK) ------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [None, "float", "base64"])
async def test_openai_sdk_embeddings_pass_through(
    fake: FakeOpenAI, cloud_clients: CloudClients, encoding: str | None
) -> None:
    body: dict[str, Any] = {"input": TEXTS, "dimensions": 12}
    if encoding:
        body["encoding_format"] = encoding
    answer = await openai_sdk(fake, cloud_clients).embed(embeddings(body))
    # Relayed as the vendor answered (base64 unless floats were asked for); the front door
    # answers the client in the format it asked for.
    vectors = [d["embedding"] for d in answer["data"]]
    if encoding == "float":
        CreateEmbeddingResponse.model_validate(answer)
    else:
        vectors = [from_base64(v) for v in vectors]
    assert vectors == [vector(t, 12) for t in TEXTS]
    sent = fake.state.received[-1]
    # Without a format the SDK asks for base64 and decodes it: the client still gets floats.
    assert sent["encoding_format"] == (encoding or "base64")
    assert sent["dimensions"] == 12


async def test_openai_sdk_splits_at_its_batch_limit(
    fake: FakeOpenAI, cloud_clients: CloudClients
) -> None:
    inputs = [f"t{i}" for i in range(5)]
    provider = openai_sdk(fake, cloud_clients, embedding_batch=2)
    body = {"input": inputs, "encoding_format": "float", "fake": {"max_inputs": 2}}
    answer = await provider.embed(embeddings(body))
    assert [d["embedding"] for d in answer["data"]] == [vector(i) for i in inputs]
    assert [d["index"] for d in answer["data"]] == list(range(5))


async def test_openai_sdk_text_completions(fake: FakeOpenAI, cloud_clients: CloudClients) -> None:
    provider = openai_sdk(fake, cloud_clients)
    whole = await provider.complete_text(
        text({"prompt": "Lima is", "logprobs": 2, "suffix": "!", "best_of": 2})
    )
    parsed = Completion.model_validate(whole)
    assert parsed.choices[0].logprobs is not None and parsed.choices[0].logprobs.tokens
    assert {"suffix": "!", "best_of": 2, "logprobs": 2}.items() <= fake.state.received[-1].items()
    async with provider.stream_text(text({"prompt": "Lima is"}, stream=True, usage=True)) as c:
        chunks = [chunk.data async for chunk in c]
    assert chunks[-1]["usage"]["total_tokens"] > 0
    assert "".join(ch["choices"][0]["text"] for ch in chunks[:-1]) == parsed.choices[0].text


# -- gemini (translated) ---------------------------------------------------------------------------


async def test_gemini_embeddings_translated_in_batches_of_100(
    gemini_fake: FakeGemini, cloud_clients: CloudClients
) -> None:
    inputs = [f"pasaje {i} sobre el Perú" for i in range(230)]
    provider = gemini(gemini_fake, cloud_clients)
    answer = await provider.embed(
        embeddings(
            {"input": inputs, "dimensions": 6, "user": "ana", "task_type": "RETRIEVAL_DOCUMENT"},
            "gemini-embedding-001",
        )
    )
    parsed = CreateEmbeddingResponse.model_validate(answer)
    assert [d.index for d in parsed.data] == list(range(230))
    assert [d.embedding for d in parsed.data] == [vector(i, 6) for i in inputs]
    sent = [r.body["requests"] for r in gemini_fake.state.received]
    assert [len(r) for r in sent] == [100, 100, 30]
    assert sent[0][0]["model"] == "models/gemini-embedding-001"
    assert sent[0][0]["content"]["parts"] == [{"text": inputs[0]}]
    assert all(r["outputDimensionality"] == 6 for r in sent[2])
    assert all(r["taskType"] == "RETRIEVAL_DOCUMENT" for r in sent[1])
    # Gemini reports no tokens for embeddings: estimated as admission does.
    assert parsed.usage.prompt_tokens == sum(len(i.encode()) // 4 + 1 for i in inputs)


async def test_gemini_refuses_token_ids(
    gemini_fake: FakeGemini, cloud_clients: CloudClients
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await gemini(gemini_fake, cloud_clients).embed(
            embeddings({"input": [[1, 2, 3]]}, "gemini-embedding-001")
        )
    assert caught.value.param == "input"
    assert gemini_fake.state.received == []


async def test_gemini_embedding_error_is_translated(
    gemini_fake: FakeGemini, cloud_clients: CloudClients
) -> None:
    gemini_fake.program("gemini-embedding-001", status=429, retry_delay=3)
    with pytest.raises(UpstreamStatusError) as caught:
        await gemini(gemini_fake, cloud_clients).embed(
            embeddings({"input": "hola"}, "gemini-embedding-001")
        )
    assert caught.value.status_code == 429
