"""Legacy ``POST /v1/completions`` through Puente, driven by the real openai SDK: passthrough to
an OpenAI-compatible upstream and to OpenAI's SDK, streams with and without usage, and a clear
400 for the chat-only vendors and personas."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente

# The two passthrough kinds: an OpenAI-compatible upstream (vLLM's way) and OpenAI's SDK.
TEXT_MODELS = ["fake-model", "gpt-3.5-turbo-instruct"]


@pytest.fixture
def sdk(embed_puente: InProcessPuente, fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=embed_puente.base_url, api_key="x", max_retries=0) as client:
        yield client


@pytest.fixture
async def async_sdk(
    embed_puente: InProcessPuente, fake: FakeOpenAI
) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=embed_puente.base_url, api_key="x", max_retries=0
    ) as client:
        yield client


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_whole_completion_passes_every_option_through(
    sdk: openai.OpenAI, fake: FakeOpenAI, model: str
) -> None:
    result = sdk.completions.create(
        model=model,
        prompt=["La capital del Perú es", "Cusco fue"],
        n=2,
        best_of=2,
        echo=True,
        logprobs=1,
        suffix=".",
        stop=["goes"],
        max_tokens=20,
        user="ana",
    )
    assert result.object == "text_completion"
    assert result.model == model
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    echoed = "La capital del Perú es and then the story of La capital del Perú es "
    assert result.choices[0].text == echoed
    assert result.choices[2].text.startswith("Cusco fue")
    assert result.choices[0].logprobs is not None and result.choices[0].logprobs.tokens
    assert result.usage is not None and result.usage.completion_tokens > 0
    sent = fake.state.received[-1]
    expected = {"n": 2, "best_of": 2, "echo": True, "logprobs": 1, "suffix": ".", "user": "ana"}
    assert expected.items() <= sent.items()
    assert sent["stop"] == ["goes"] and sent["max_tokens"] == 20


def test_token_id_prompts_pass_through(sdk: openai.OpenAI, fake: FakeOpenAI) -> None:
    result = sdk.completions.create(model="fake-model", prompt=[[1, 2, 3], [4, 5]], max_tokens=3)
    assert len(result.choices) == 2
    assert fake.state.received[-1]["prompt"] == [[1, 2, 3], [4, 5]]


@pytest.mark.parametrize("model", TEXT_MODELS)
@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_with_and_without_usage(
    sdk: openai.OpenAI, fake: FakeOpenAI, model: str, include_usage: bool
) -> None:
    options: Any = {"include_usage": True} if include_usage else openai.omit
    stream = sdk.completions.create(
        model=model, prompt="Lima es", stream=True, stream_options=options
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == " and then the story of Lima es goes on."
    assert all(c.model == model for c in chunks)
    usage = [c.usage for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage) == 1 and chunks[-1].choices == [] and usage[0].total_tokens > 0
    else:
        assert usage == [] and all(c.choices for c in chunks)
    # Usage is always asked of the upstream, to count tokens.
    assert fake.state.received[-1]["stream_options"] == {"include_usage": True}


async def test_async_stream(async_sdk: openai.AsyncOpenAI) -> None:
    stream = await async_sdk.completions.create(
        model="fake-model", prompt="Ayacucho", stream=True, max_tokens=3
    )
    pieces = [c.choices[0].text async for c in stream if c.choices]
    assert "".join(pieces) == " and then the"
    whole = await async_sdk.completions.create(model="fake-model", prompt="Ayacucho")
    assert whole.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", ["claude", "gemini-flash"])
def test_chat_only_vendors_get_a_400_naming_chat_completions(
    sdk: openai.OpenAI, model: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model=model, prompt="Hola")
    assert "/v1/chat/completions" in caught.value.message
    assert caught.value.body["param"] == "model"  # type: ignore[index]


def test_personas_and_embedding_models_refuse_text_completions(
    sdk: openai.OpenAI, fake: FakeOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError, match="persona"):
        sdk.completions.create(model="historia", prompt="Hola")
    with pytest.raises(openai.BadRequestError, match="/v1/embeddings"):
        sdk.completions.create(model="fake-embed", prompt="Hola")
    assert fake.state.received == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": 7}, "prompt"),
        ({"prompt": "a", "echo": "yes"}, "echo"),
        ({"prompt": "a", "n": 0}, "n"),
        ({"prompt": "a", "logprobs": -1}, "logprobs"),
        ({"prompt": "a", "stream": "true"}, "stream"),
    ],
)
def test_bad_requests_are_400s_naming_the_param(
    embed_puente: InProcessPuente, fake: FakeOpenAI, body: dict[str, Any], param: str
) -> None:
    answer = httpx.post(
        embed_puente.base_url + "/completions", json={"model": "fake-model", **body}, timeout=30
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param
    assert fake.state.received == []


def test_upstream_error_keeps_its_status(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        sdk.completions.create(
            model="fake-model", prompt="Hola", extra_body={"fake": {"status": 429}}
        )
