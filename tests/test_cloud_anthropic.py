"""Claude behind Puente: the openai SDK talks to Puente, Puente to a faithful fake of Anthropic's
Messages API, and each test checks both what the user sees and what Anthropic received."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.cloud_fixtures import (
    ANTHROPIC_KEY,
    CITY_SCHEMA,
    TIME_TOOL,
    WEATHER_TOOL,
    assistant_turn,
    collect,
)
from tests.fakes.anthropic_vendor import DEFAULT_VERSION, FakeAnthropic
from tests.fakes.vendor_server import PNG
from tests.inprocess import InProcessPuente

USER = {"role": "user", "content": "What is the capital of Peru?"}


def test_plain_chat(cloud: openai.OpenAI, claude_fake: FakeAnthropic) -> None:
    reply = cloud.chat.completions.create(model="claude-sonnet", messages=[USER])

    assert reply.object == "chat.completion"
    assert reply.model == "claude-sonnet"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "Hello! You said: What is the capital of Peru?"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    # Anthropic counts cache reads apart from input_tokens; OpenAI's prompt_tokens includes them.
    assert reply.usage.prompt_tokens == 9 + 2
    assert reply.usage.completion_tokens == 9
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 2

    sent = claude_fake.last
    assert sent.path == "/v1/messages"
    assert sent.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"
    assert sent.headers["anthropic-version"] == DEFAULT_VERSION
    assert sent.body == {
        "model": "claude-sonnet-test",
        "max_tokens": 4096,  # Anthropic requires one; the default fills in
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": USER["content"]}]},
        ],
    }


def test_multi_turn_with_system_developer_and_same_role_turns(
    cloud: openai.OpenAI, claude_fake: FakeAnthropic
) -> None:
    reply = cloud.chat.completions.create(
        model="claude-sonnet",
        messages=[
            {"role": "system", "content": "You are a historian."},
            {"role": "developer", "content": [{"type": "text", "text": "Cite dates."}]},
            {"role": "user", "content": "Who founded Lima?"},
            {"role": "assistant", "content": "Francisco Pizarro."},
            {"role": "user", "content": [{"type": "text", "text": ""}]},  # empty: dropped
            {"role": "user", "content": "When?"},
            {"role": "user", "content": [{"type": "text", "text": "And why?"}]},
        ],
    )

    assert reply.choices[0].message.content == "Hello! You said: When? And why?"
    body = claude_fake.last.body
    assert body["system"] == [
        {"type": "text", "text": "You are a historian."},
        {"type": "text", "text": "Cite dates."},
    ]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Who founded Lima?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Francisco Pizarro."}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "When?"}, {"type": "text", "text": "And why?"}],
        },
    ]


def test_image_input_inline_and_by_url(cloud: openai.OpenAI, claude_fake: FakeAnthropic) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    url = "https://example.com/cat.png"
    cloud.chat.completions.create(
        model="claude-sonnet",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": data_url}},
                    {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
                ],
            }
        ],
    )

    blocks = claude_fake.last.body["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/png",
            "data": base64.b64encode(PNG).decode(),
        },
    }
    # Anthropic fetches URLs itself: Puente passes them on and fetches nothing.
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": url}}
    assert claude_fake.state.image_requests == []


def test_image_type_anthropic_cannot_read_is_refused(
    cloud: openai.OpenAI, claude_fake: FakeAnthropic
) -> None:
    bmp = "data:image/bmp;base64," + base64.b64encode(b"BM....").decode()
    with pytest.raises(openai.BadRequestError) as caught:
        cloud.chat.completions.create(
            model="claude-sonnet",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": bmp}}]}
            ],
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "messages[0].content[0].image_url.url"
    assert "image/bmp" in error["message"]
    assert claude_fake.state.received == []


def test_one_tool_call_and_its_result(cloud: openai.OpenAI, claude_fake: FakeAnthropic) -> None:
    messages = [{"role": "user", "content": "Weather in Lima?"}]
    first = cloud.chat.completions.create(
        model="claude-sonnet", messages=messages, tools=[WEATHER_TOOL]
    )

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.id.startswith("toolu_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Lima0"}
    assert claude_fake.last.body["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
            "description": "The weather in a city.",
        }
    ]
    assert "tool_choice" not in claude_fake.last.body

    messages += [
        assistant_turn(choice.message),
        {"role": "tool", "tool_call_id": call.id, "content": "18°C and cloudy"},
    ]
    second = cloud.chat.completions.create(
        model="claude-sonnet", messages=messages, tools=[WEATHER_TOOL]
    )

    assert second.choices[0].message.content == "The tools said: 18°C and cloudy"
    assert second.choices[0].finish_reason == "stop"
    sent = claude_fake.last.body["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "Lima0"}}
        ],
    }
    assert sent[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18°C and cloudy"}],
    }


def test_two_parallel_tool_calls_streamed_and_answered(
    cloud: openai.OpenAI, claude_fake: FakeAnthropic
) -> None:
    claude_fake.program("two-tools", tool_calls=2)
    messages = [{"role": "user", "content": "Weather and time in Lima?"}]
    streamed = collect(
        cloud.chat.completions.create(
            model="claude/two-tools",
            messages=messages,
            tools=[WEATHER_TOOL, TIME_TOOL],
            stream=True,
        )
    )

    assert streamed.finish == "tool_calls"
    assert sorted(streamed.calls) == [0, 1]
    assert [streamed.calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert streamed.arguments(0) == {"city": "Lima0"}
    assert streamed.arguments(1) == {"city": "Lima1"}
    assert all(streamed.calls[i]["type"] == "function" for i in (0, 1))

    ids = [streamed.calls[i]["id"] for i in (0, 1)]
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": ids[i],
                    "type": "function",
                    "function": {
                        "name": streamed.calls[i]["name"],
                        "arguments": streamed.calls[i]["arguments"],
                    },
                }
                for i in (0, 1)
            ],
        },
        {"role": "tool", "tool_call_id": ids[0], "content": "sunny"},
        {"role": "tool", "tool_call_id": ids[1], "content": [{"type": "text", "text": "noon"}]},
    ]
    claude_fake.program("two-tools")  # answers now with text
    reply = cloud.chat.completions.create(
        model="claude/two-tools", messages=messages, tools=[WEATHER_TOOL, TIME_TOOL]
    )

    assert reply.choices[0].message.content == "The tools said: sunny; noon"
    # Both results ride in one user turn, as the Messages API requires.
    assert claude_fake.last.body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": ids[0], "content": "sunny"},
            {"type": "tool_result", "tool_use_id": ids[1], "content": "noon"},
        ],
    }


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            None,
            {"type": "tool", "name": "get_time"},
        ),
    ],
)
def test_tool_choice(
    cloud: openai.OpenAI,
    claude_fake: FakeAnthropic,
    tool_choice: object,
    parallel: bool | None,
    expected: dict[str, object],
) -> None:
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    cloud.chat.completions.create(
        model="claude-sonnet",
        messages=[USER],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice=tool_choice,  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )
    assert claude_fake.last.body["tool_choice"] == expected


def test_json_schema_output(cloud: openai.OpenAI, claude_fake: FakeAnthropic) -> None:
    reply = cloud.chat.completions.create(
        model="claude-sonnet",
        messages=[USER],
        response_format=CITY_SCHEMA,  # type: ignore[arg-type]
    )

    city = json.loads(reply.choices[0].message.content or "")
    assert set(city) == {"name", "population"}
    assert claude_fake.last.body["output_config"] == {
        "format": {"type": "json_schema", "schema": CITY_SCHEMA["json_schema"]["schema"]}
    }


def test_json_object_output_is_asked_for_in_the_system_prompt(
    cloud: openai.OpenAI, claude_fake: FakeAnthropic
) -> None:
    cloud.chat.completions.create(
        model="claude-sonnet", messages=[USER], response_format={"type": "json_object"}
    )
    (instruction,) = claude_fake.last.body["system"]
    assert "JSON object" in instruction["text"]


def test_stop_and_length_endings(cloud: openai.OpenAI, claude_fake: FakeAnthropic) -> None:
    stopped = cloud.chat.completions.create(
        model="claude-sonnet", messages=[USER], stop=["capital"]
    )
    assert stopped.choices[0].message.content == "Hello! You said: What is the "
    assert stopped.choices[0].finish_reason == "stop"
    assert claude_fake.last.body["stop_sequences"] == ["capital"]

    cut = cloud.chat.completions.create(
        model="claude-sonnet", messages=[USER], max_completion_tokens=2
    )
    assert cut.choices[0].message.content == "Hello! You"
    assert cut.choices[0].finish_reason == "length"
    assert claude_fake.last.body["max_tokens"] == 2

    # The model's configured default (3) applies when the client gives no limit.
    short = collect(
        cloud.chat.completions.create(model="claude-short", messages=[USER], stream=True)
    )
    assert short.content == "Hello! You said:"
    assert short.finish == "length"
    assert claude_fake.last.body["max_tokens"] == 3


def test_streaming_with_usage(cloud: openai.OpenAI, claude_fake: FakeAnthropic) -> None:
    streamed = collect(
        cloud.chat.completions.create(
            model="claude-sonnet",
            messages=[USER],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert streamed.roles == ["assistant"]
    assert streamed.content == "Hello! You said: What is the capital of Peru?"
    assert streamed.finish == "stop"
    assert streamed.usage is not None
    assert (streamed.usage.prompt_tokens, streamed.usage.completion_tokens) == (11, 9)
    assert streamed.usage.total_tokens == 20
    assert claude_fake.last.body["stream"] is True

    # Without include_usage the client gets no usage chunk.
    plain = collect(
        cloud.chat.completions.create(model="claude-sonnet", messages=[USER], stream=True)
    )
    assert plain.usage is None
    assert plain.content == streamed.content


def test_temperature_above_one_is_refused_naming_it(
    cloud: openai.OpenAI, claude_fake: FakeAnthropic
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        cloud.chat.completions.create(model="claude-sonnet", messages=[USER], temperature=1.5)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "temperature"
    assert "between 0 and 1" in error["message"]
    assert claude_fake.state.received == []  # refused before reaching Anthropic


def test_temperature_goes_to_the_vendor_which_decides(
    cloud: openai.OpenAI, claude_fake: FakeAnthropic
) -> None:
    # API version 2026-10-21 (the SDK's) has no sampling parameters: Anthropic's 400 comes back
    # naming the field; a model pinned to 2023-06-01 takes it.
    with pytest.raises(openai.BadRequestError) as caught:
        cloud.chat.completions.create(model="claude-sonnet", messages=[USER], temperature=0.3)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "temperature"
    assert error["message"] == "Anthropic: temperature: Extra inputs are not permitted"

    reply = cloud.chat.completions.create(
        model="claude-legacy-api", messages=[USER], temperature=0.3, top_p=0.9
    )
    assert reply.choices[0].finish_reason == "stop"
    assert claude_fake.last.headers["anthropic-version"] == "2023-06-01"
    assert (claude_fake.last.body["temperature"], claude_fake.last.body["top_p"]) == (0.3, 0.9)


def test_n_above_one_is_refused(cloud: openai.OpenAI, claude_fake: FakeAnthropic) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        cloud.chat.completions.create(model="claude-sonnet", messages=[USER], n=2)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "n"
    assert claude_fake.state.received == []


def test_wildcard_user_and_unknown_fields(cloud: openai.OpenAI, claude_fake: FakeAnthropic) -> None:
    reply = cloud.chat.completions.create(
        model="claude/claude-haiku-test",
        messages=[USER],
        user="student-42",
        seed=7,
        extra_body={"top_k": 5, "guided_json": {}},
    )
    assert reply.model == "claude/claude-haiku-test"
    body = claude_fake.last.body
    assert body["model"] == "claude-haiku-test"
    assert body["metadata"] == {"user_id": "student-42"}
    assert not {"seed", "top_k", "guided_json", "user"} & set(body)


def test_a_client_that_leaves_closes_the_vendor_stream(
    cloud_puente: InProcessPuente, claude_fake: FakeAnthropic
) -> None:
    claude_fake.program("long", reply=" ".join(["word"] * 200), delay=0.05)
    body = {"model": "claude/long", "stream": True, "messages": [USER]}
    with httpx.stream("POST", cloud_puente.base_url + "/chat/completions", json=body) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    deadline = time.monotonic() + 3
    while not claude_fake.state.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert claude_fake.state.closed, "the vendor kept streaming to nobody"


def test_thinking_is_counted_but_not_passed_on(
    cloud: openai.OpenAI, claude_fake: FakeAnthropic
) -> None:
    claude_fake.program("thinker", thinking=True)
    reply = cloud.chat.completions.create(model="claude/thinker", messages=[USER])
    assert reply.choices[0].message.content == "Hello! You said: What is the capital of Peru?"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 9 + 3
    assert reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens == 3

    streamed = collect(
        cloud.chat.completions.create(
            model="claude/thinker",
            messages=[USER],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert streamed.content == reply.choices[0].message.content
    assert streamed.usage is not None
    assert streamed.usage.completion_tokens_details is not None
    assert streamed.usage.completion_tokens_details.reasoning_tokens == 3


def test_cache_writes_count_as_prompt_tokens_whole_and_streamed(
    cloud: openai.OpenAI, claude_fake: FakeAnthropic
) -> None:
    # Anthropic reports cache writes apart too; in a stream only message_start has them (the
    # final message_delta repeats the counts that changed), so they must carry over.
    def writes(payload: dict[str, Any]) -> dict[str, Any]:
        if payload["type"] == "message":
            return {**payload, "usage": {**payload["usage"], "cache_creation_input_tokens": 5}}
        if payload["type"] == "message_start":
            message = payload["message"]
            usage = {**message["usage"], "cache_creation_input_tokens": 5}
            return {**payload, "message": {**message, "usage": usage}}
        return payload

    claude_fake.program("cache-writer", mangle=writes)
    reply = cloud.chat.completions.create(model="claude/cache-writer", messages=[USER])
    streamed = collect(
        cloud.chat.completions.create(
            model="claude/cache-writer",
            messages=[USER],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for usage in (reply.usage, streamed.usage):
        assert usage is not None
        assert usage.prompt_tokens == 9 + 2 + 5  # input, cache reads, cache writes
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 2
        assert usage.completion_tokens == 9


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("a_reason_added_later", "stop"),  # not in the SDK's types yet: still an ending
    ],
)
def test_stop_reasons_become_finish_reasons_whole_and_streamed(
    cloud: openai.OpenAI, claude_fake: FakeAnthropic, stop_reason: str, finish_reason: str
) -> None:
    def said(payload: dict[str, Any]) -> dict[str, Any]:
        if payload["type"] == "message":
            return {**payload, "stop_reason": stop_reason}
        if payload["type"] == "message_delta":
            return {**payload, "delta": {**payload["delta"], "stop_reason": stop_reason}}
        return payload

    claude_fake.program("ending", mangle=said)
    reply = cloud.chat.completions.create(model="claude/ending", messages=[USER])
    streamed = collect(
        cloud.chat.completions.create(model="claude/ending", messages=[USER], stream=True)
    )
    assert reply.choices[0].finish_reason == finish_reason
    assert streamed.finish == finish_reason
