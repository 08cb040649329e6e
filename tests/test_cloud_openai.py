"""``provider: openai`` behind Puente: the openai SDK on both sides, the fake OpenAI-compatible
upstream behind. No translation: the body goes through as sent (model swapped), so these tests
check that it does, and that what comes back is the vendor's answer."""

from __future__ import annotations

import base64
import json

import openai

from tests.cloud_fixtures import (
    CITY_SCHEMA,
    OPENAI_KEY,
    TIME_TOOL,
    WEATHER_TOOL,
    assistant_turn,
    collect,
)
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.vendor_server import PNG

USER = {"role": "user", "content": "What is the capital of Peru?"}


def test_plain_chat_goes_through_as_sent(cloud: openai.OpenAI, fake: FakeOpenAI) -> None:
    reply = cloud.chat.completions.create(
        model="gpt-cloud", messages=[USER], extra_body={"top_k": 4, "fake": {}}
    )

    assert reply.model == "gpt-cloud"
    assert reply.choices[0].message.content == "Hello! You said: What is the capital of Peru?"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.system_fingerprint == "fp_fake"  # the vendor's own fields come back
    assert fake.state.received[-1] == {
        "model": "fake-model",
        "messages": [USER],
        "top_k": 4,  # vendor extras ride along
        "fake": {},
    }
    assert fake.state.headers[-1]["authorization"] == f"Bearer {OPENAI_KEY}"


def test_multi_turn_with_system_and_image_unchanged(cloud: openai.OpenAI, fake: FakeOpenAI) -> None:
    image = "data:image/png;base64," + base64.b64encode(PNG).decode()
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": image}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        },
    ]
    reply = cloud.chat.completions.create(model="gpt-cloud", messages=messages)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "Hello! You said: What is this?"
    assert fake.state.received[-1]["messages"] == messages


def test_one_and_two_tool_calls_with_results(cloud: openai.OpenAI, fake: FakeOpenAI) -> None:
    messages = [{"role": "user", "content": "Weather and time in Lima?"}]
    first = cloud.chat.completions.create(
        model="gpt-cloud",
        messages=messages,  # type: ignore[arg-type]
        tools=[WEATHER_TOOL, TIME_TOOL],  # type: ignore[list-item]
        extra_body={"fake": {"tool_calls": 2}},
    )
    calls = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]

    messages += [
        assistant_turn(first.choices[0].message),
        *({"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in calls),
    ]
    second = cloud.chat.completions.create(
        model="gpt-cloud",
        messages=messages,
        tools=[WEATHER_TOOL],  # type: ignore[arg-type, list-item]
    )
    assert second.choices[0].finish_reason == "stop"
    sent = fake.state.received[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in sent[2:]] == [c.id for c in calls]

    streamed = collect(
        cloud.chat.completions.create(
            model="gpt-cloud",
            messages=messages[:1],  # type: ignore[arg-type]
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            stream=True,
            extra_body={"fake": {"tool_calls": 1}},
        )
    )
    assert streamed.finish == "tool_calls"
    assert streamed.calls[0]["name"] == "get_weather"
    assert streamed.arguments(0) == {"city": "Lima0"}


def test_json_schema_stop_and_length(cloud: openai.OpenAI, fake: FakeOpenAI) -> None:
    cloud.chat.completions.create(
        model="gpt-cloud",
        messages=[USER],
        response_format=CITY_SCHEMA,  # type: ignore[arg-type]
    )
    assert fake.state.received[-1]["response_format"] == CITY_SCHEMA

    stopped = cloud.chat.completions.create(model="gpt-cloud", messages=[USER], stop=["capital"])
    assert stopped.choices[0].message.content == "Hello! You said: What is the "
    assert stopped.choices[0].finish_reason == "stop"

    cut = cloud.chat.completions.create(model="gpt-cloud", messages=[USER], max_tokens=2)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == (
        "Hello! You",
        "length",
    )


def test_streaming_with_and_without_usage(cloud: openai.OpenAI, fake: FakeOpenAI) -> None:
    streamed = collect(
        cloud.chat.completions.create(
            model="gpt-cloud", messages=[USER], stream=True, stream_options={"include_usage": True}
        )
    )
    assert streamed.content == "Hello! You said: What is the capital of Peru?"
    assert streamed.finish == "stop"
    assert streamed.usage is not None
    assert streamed.usage.completion_tokens == 9

    plain = collect(cloud.chat.completions.create(model="gpt-cloud", messages=[USER], stream=True))
    assert plain.usage is None
    assert plain.content == streamed.content
    # Usage is asked for anyway, so Puente can count tokens; the client never sees it.
    assert fake.state.received[-1]["stream_options"] == {"include_usage": True}


def test_wildcard_exposes_the_catalogue(cloud: openai.OpenAI, fake: FakeOpenAI) -> None:
    reply = cloud.chat.completions.create(model="openai/gpt-4.1-test", messages=[USER])
    assert reply.model == "openai/gpt-4.1-test"
    assert fake.state.received[-1]["model"] == "gpt-4.1-test"
    listed = [m.id for m in cloud.models.list()]
    assert "gpt-cloud" in listed
    assert "openai/*" not in listed


def test_answers_are_the_vendors_json(cloud: openai.OpenAI, fake: FakeOpenAI) -> None:
    raw = cloud.chat.completions.with_raw_response.create(model="gpt-cloud", messages=[USER])
    body = json.loads(raw.text)
    assert body["object"] == "chat.completion"
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18}
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello! You said: What is the capital of Peru?",
    }
