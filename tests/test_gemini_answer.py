"""Gemini's answers read as plain JSON (``server/providers/gemini_answer.py``): what a broken
Gemini can send, whole or as one streamed piece, is a 502 ``upstream_bad_response`` in OpenAI's
envelope (or, once the stream has begun, an error event then ``[DONE]``), never a 500; and the
parts of the answer the fake's ordinary programs do not produce are translated as before."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import openai
import orjson
import pytest

from server.config import ModelConfig
from server.pipeline.request import ChatRequest
from server.providers.cloud import CloudClients
from server.providers.gemini_answer import StreamTranslator, to_completion
from server.providers.gemini_provider import GeminiProvider
from tests.cloud_fixtures import WEATHER_TOOL, collect
from tests.fakes.gemini_vendor import FakeGemini
from tests.inprocess import InProcessPuente

USER = {"role": "user", "content": "What is the capital of Peru?"}


def _candidate(*parts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"content": {"role": "model", "parts": list(parts)}, **extra}


BROKEN: list[Any] = [
    pytest.param([1, 2], id="not-an-object"),
    pytest.param(b"{not json", id="not-json"),
    pytest.param({"candidates": {"index": 0}}, id="candidates-not-a-list"),
    pytest.param({"candidates": ["text"]}, id="candidate-not-an-object"),
    pytest.param({"candidates": [{"content": "hello"}]}, id="content-not-an-object"),
    pytest.param({"candidates": [{"content": {"parts": "hello"}}]}, id="parts-not-a-list"),
    pytest.param({"candidates": [_candidate("hello")]}, id="part-not-an-object"),
    pytest.param({"candidates": [_candidate({"text": 5})]}, id="text-not-a-string"),
    pytest.param({"candidates": [_candidate({"text": "a", "thought": "no"})]}, id="thought"),
    pytest.param({"candidates": [_candidate({"text": "a"}, index="0")]}, id="index-as-text"),
    pytest.param({"candidates": [_candidate({"text": "a"}, index=-1)]}, id="negative-index"),
    pytest.param({"candidates": [_candidate({"text": "a"}, finishReason=1)]}, id="finish"),
    pytest.param(
        {"candidates": [_candidate({"functionCall": {"name": "f", "args": "x"}})]},
        id="args-not-an-object",
    ),
    pytest.param(
        {"candidates": [_candidate({"functionCall": {"name": 7}})]}, id="name-not-a-string"
    ),
    pytest.param(
        {
            "candidates": [
                _candidate({"functionCall": {"name": "f"}, "thoughtSignature": "not base64!"})
            ]
        },
        id="signature-not-base64",
    ),
    pytest.param({"usageMetadata": [3]}, id="usage-not-an-object"),
    pytest.param({"usageMetadata": {"thoughtsTokenCount": 1.5}}, id="count-a-float"),
    pytest.param({"responseId": 12}, id="id-not-a-string"),
]


@pytest.mark.parametrize("broken", BROKEN)
def test_a_malformed_answer_is_a_502_in_openais_envelope(
    cloud: openai.OpenAI, gemini_fake: FakeGemini, broken: Any
) -> None:
    gemini_fake.program("broken", broken=broken)
    with pytest.raises(openai.APIStatusError) as caught:
        cloud.chat.completions.create(model="gemini/broken", messages=[USER])
    assert caught.value.status_code == 502
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "upstream_bad_response"
    assert "Gemini answered model" in caught.value.body["message"]


@pytest.mark.parametrize("broken", BROKEN)
def test_a_malformed_piece_before_any_chunk_is_a_502(
    cloud_puente: InProcessPuente, gemini_fake: FakeGemini, broken: Any
) -> None:
    gemini_fake.program("broken-first", broken=broken, broken_after=0)
    body = {"model": "gemini/broken-first", "messages": [USER], "stream": True}
    response = httpx.post(cloud_puente.base_url + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_bad_response"


@pytest.mark.parametrize("broken", BROKEN)
def test_a_malformed_piece_mid_stream_ends_it_with_an_error_event(
    cloud: openai.OpenAI, gemini_fake: FakeGemini, broken: Any
) -> None:
    gemini_fake.program("broken-later", broken=broken, broken_after=2)
    received = ""
    stream = cloud.chat.completions.create(
        model="gemini/broken-later", messages=[USER], stream=True
    )
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received += "".join(c.delta.content or "" for c in chunk.choices)
    assert received == "Hello! You"  # the two good pieces, and nothing of the broken one
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "upstream_bad_response"


def test_a_stream_that_ends_without_a_finish_reason_is_an_error_event(
    cloud_puente: InProcessPuente, gemini_fake: FakeGemini
) -> None:
    gemini_fake.program("cut", end_after=3)
    body = {"model": "gemini/cut", "messages": [USER], "stream": True}
    response = httpx.post(cloud_puente.base_url + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 200
    assert '"code":"upstream_bad_response"' in response.text
    assert response.text.rstrip().endswith("data: [DONE]")


def test_an_error_object_instead_of_an_answer_keeps_its_status(
    cloud: openai.OpenAI, gemini_fake: FakeGemini
) -> None:
    error = {"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}}
    gemini_fake.program("error-object", broken=error)
    with pytest.raises(openai.RateLimitError):
        cloud.chat.completions.create(model="gemini/error-object", messages=[USER])


def test_several_candidates_stream_side_by_side(
    cloud: openai.OpenAI, gemini_fake: FakeGemini
) -> None:
    stream = cloud.chat.completions.create(model="gemini-pro", messages=[USER], n=2, stream=True)
    texts: dict[int, str] = {0: "", 1: ""}
    finishes: dict[int, str | None] = {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {i: "Hello! You said: What is the capital of Peru?" for i in (0, 1)}
    assert finishes == {0: "stop", 1: "stop"}
    assert gemini_fake.last.body["generationConfig"] == {"candidateCount": 2}


def test_frequency_penalty_and_tools_without_a_choice(
    cloud: openai.OpenAI, gemini_fake: FakeGemini
) -> None:
    cloud.chat.completions.create(
        model="gemini-pro", messages=[USER], frequency_penalty=0.25, tools=[WEATHER_TOOL]
    )
    body = gemini_fake.last.body
    assert body["generationConfig"] == {"frequencyPenalty": 0.25}
    assert "toolConfig" not in body
    assert body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"


def test_a_blocked_prompt_streams_as_content_filter_with_usage(
    cloud: openai.OpenAI, gemini_fake: FakeGemini
) -> None:
    gemini_fake.program("blocked-usage", blocked=True)
    streamed = collect(
        cloud.chat.completions.create(
            model="gemini/blocked-usage",
            messages=[USER],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert (streamed.content, streamed.finish) == ("", "content_filter")
    assert streamed.usage is not None
    assert streamed.usage.prompt_tokens == 9


async def test_configured_headers_and_the_key_go_with_each_request(
    gemini_vendor: FakeGemini,
) -> None:
    config = ModelConfig(
        name="gemini-headers",
        provider="gemini",
        base_url=gemini_vendor.url,
        api_key=gemini_vendor.api_key,
        headers={"X-Team": "course-7"},
    )
    clients = CloudClients()
    provider = GeminiProvider(config, clients)
    body = {"model": "models/gemini-test", "messages": [USER]}
    try:
        reply = await provider.complete(ChatRequest.parse(orjson.dumps(body)))
    finally:
        await clients.aclose()
    assert reply["choices"][0]["message"]["content"].startswith("Hello!")
    sent = gemini_vendor.last
    assert sent.path == "/v1/models/gemini-test:generateContent"  # "models/" given once
    assert sent.headers["x-team"] == "course-7"
    assert sent.headers["x-goog-api-key"] == gemini_vendor.api_key


# -- what the fake does not send: read straight from the API's JSON --------------------------------


def test_thoughts_are_left_out_and_every_count_is_used() -> None:
    answer = {
        "candidates": [
            _candidate(
                {"text": "Let me think.", "thought": True},
                {"text": "Lima."},
                finishReason="STOP",
                safetyRatings=[{"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "LOW"}],
            )
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "toolUsePromptTokenCount": 5,
            "candidatesTokenCount": 3,
            "thoughtsTokenCount": 7,
            "cachedContentTokenCount": 4,
            "totalTokenCount": 25,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}],
        },
        "modelVersion": "gemini-test",
        "someFieldFromTheFuture": {"x": 1},
    }
    completion = to_completion(answer, "gemini-pro")
    assert completion["choices"][0]["message"]["content"] == "Lima."
    assert completion["id"].startswith("chatcmpl-")
    assert completion["usage"] == {
        "prompt_tokens": 15,
        "completion_tokens": 10,
        "total_tokens": 25,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 7},
    }


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("MAX_TOKENS", "length"), ("RECITATION", "content_filter"), ("OTHER", "tool_calls")],
)
def test_finish_reasons_of_a_tool_call(reason: str, expected: str) -> None:
    call = {"functionCall": {"id": "fc-1", "name": "get_weather", "args": {"city": "Lima"}}}
    completion = to_completion({"candidates": [_candidate(call, finishReason=reason)]}, "m")
    choice = completion["choices"][0]
    assert choice["finish_reason"] == expected
    assert choice["message"]["content"] is None
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["id"] == "fc-1"  # Gemini's own id is kept when it sends one
    assert orjson.loads(tool_call["function"]["arguments"]) == {"city": "Lima"}


def test_a_url_safe_unpadded_signature_is_handed_out_in_standard_base64() -> None:
    raw = b"\xfb\xff\xfe-sig"
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    part = {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": urlsafe}
    translator = StreamTranslator("m")
    chunks = [c.data for c in translator.feed({"candidates": [_candidate(part, index=0)]})]
    call = chunks[1]["choices"][0]["delta"]["tool_calls"][0]
    signature = call["extra_content"]["google"]["thought_signature"]
    assert base64.b64decode(signature, validate=True) == raw
