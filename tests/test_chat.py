"""Chat completions through Puente look exactly like the upstream's, to the real openai SDK."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente

MESSAGES: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of Peru?"},
]
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Time in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
]

# Fields that legitimately differ between two calls: the fake numbers its completions.
VOLATILE = {"id"}


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in VOLATILE}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"max_tokens": 2},
        {"stop": ["capital"]},
        {"n": 2},
        {"tools": TOOLS, "extra_body": {"fake": {"tool_calls": 2}}},
    ],
    ids=["plain", "length", "stop", "n2", "parallel-tools"],
)
def test_non_streaming_objects_identical_to_direct(
    client: openai.OpenAI, direct: openai.OpenAI, extra: dict[str, Any]
) -> None:
    through = client.chat.completions.create(model="fake-model", messages=MESSAGES, **extra)
    straight = direct.chat.completions.create(model="fake-model", messages=MESSAGES, **extra)
    assert _strip(through.model_dump()) == _strip(straight.model_dump())
    assert through.usage is not None and through.usage.completion_tokens > 0


@pytest.mark.parametrize(
    "extra",
    [
        {"stream_options": {"include_usage": True}},
        {},
        {"max_tokens": 3, "stream_options": {"include_usage": True}},
        {
            "tools": TOOLS,
            "stream_options": {"include_usage": True},
            "extra_body": {"fake": {"tool_calls": 2}},
        },
    ],
    ids=["usage", "no-usage", "length", "tool-deltas"],
)
def test_streaming_chunks_identical_to_direct(
    client: openai.OpenAI, direct: openai.OpenAI, extra: dict[str, Any]
) -> None:
    through = list(
        client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True, **extra)
    )
    straight = list(
        direct.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True, **extra)
    )
    assert [_strip(c.model_dump()) for c in through] == [_strip(c.model_dump()) for c in straight]
    wants_usage = bool(extra.get("stream_options"))
    assert (through[-1].usage is not None) == wants_usage
    if wants_usage:
        assert through[-1].choices == []


def test_tool_call_deltas_reassemble(client: openai.OpenAI) -> None:
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(
        model="fake-model",
        messages=MESSAGES,
        tools=TOOLS,
        stream=True,
        extra_body={"fake": {"tool_calls": 2}},
    ):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                if delta.id:
                    call["id"] = delta.id
                if delta.function and delta.function.name:
                    call["name"] = delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
    assert finish == "tool_calls"
    assert [c["name"] for c in calls.values()] == ["get_weather", "get_time"]
    assert [c["arguments"] for c in calls.values()] == ['{"city":"Lima0"}', '{"city":"Lima1"}']


def test_unknown_fields_reach_the_upstream_untouched(
    client: openai.OpenAI, fake: FakeOpenAI
) -> None:
    extras = {
        "top_k": 20,
        "guided_json": {"type": "object"},
        "chat_template_kwargs": {"x": [1]},
        "seed": 7,
        "user": "u-1",
        "logit_bias": {"50256": -100},
    }
    client.chat.completions.create(model="fake-model", messages=MESSAGES, extra_body=extras)
    received = fake.state.received[-1]
    for key, value in extras.items():
        assert received[key] == value
    assert received["messages"] == MESSAGES


def test_alias_sends_upstream_name_and_answers_with_public_name(
    client: openai.OpenAI, fake: FakeOpenAI
) -> None:
    answer = client.chat.completions.create(model="alias", messages=MESSAGES)
    assert fake.state.received[-1]["model"] == "fake-model"
    assert answer.model == "alias"
    chunks = list(client.chat.completions.create(model="alias", messages=MESSAGES, stream=True))
    assert {c.model for c in chunks} == {"alias"}


def test_wildcard_entry_passes_the_rest_of_the_name(
    client: openai.OpenAI, fake: FakeOpenAI
) -> None:
    answer = client.chat.completions.create(model="vendor/gpt-4.1", messages=MESSAGES)
    assert fake.state.received[-1]["model"] == "gpt-4.1"
    assert answer.model == "vendor/gpt-4.1"


async def test_async_client_concurrent_requests(puente: InProcessPuente, fake: FakeOpenAI) -> None:
    import asyncio

    client = openai.AsyncOpenAI(base_url=puente.base_url, api_key="unused", max_retries=0)
    async with client:
        answers = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model="fake-model", messages=[{"role": "user", "content": f"question {i}"}]
                )
                for i in range(20)
            )
        )
        assert [a.choices[0].message.content for a in answers] == [
            f"Hello! You said: question {i}" for i in range(20)
        ]
        stream = await client.chat.completions.create(
            model="fake-model",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        text = ""
        usage = None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            usage = chunk.usage or usage
        assert text == "Hello! You said: What is the capital of Peru?"
        assert usage is not None and usage.completion_tokens == 9


def test_two_endpoints_one_refusing_loses_no_request(
    client: openai.OpenAI, fake: FakeOpenAI
) -> None:
    for i in range(6):
        answer = client.chat.completions.create(
            model="two-endpoints", messages=[{"role": "user", "content": str(i)}]
        )
        assert answer.choices[0].message.content == f"Hello! You said: {i}"
    assert len(fake.state.received) == 6
