"""Gemini behind Puente: the openai SDK talks to Puente, Puente to a faithful fake of the Gemini
API's generateContent, and each test checks both what the user sees and what Gemini received."""

from __future__ import annotations

import base64
import json
import time

import httpx
import openai
import pytest

from tests.cloud_fixtures import (
    CITY_SCHEMA,
    GEMINI_KEY,
    TIME_TOOL,
    WEATHER_TOOL,
    assistant_turn,
    collect,
)
from tests.fakes.gemini_vendor import FakeGemini
from tests.fakes.vendor_server import PNG
from tests.inprocess import InProcessPuente

USER = {"role": "user", "content": "What is the capital of Peru?"}
PNG64 = base64.b64encode(PNG).decode()


def test_plain_chat(cloud: openai.OpenAI, gemini_fake: FakeGemini) -> None:
    reply = cloud.chat.completions.create(model="gemini-pro", messages=[USER])

    assert reply.model == "gemini-pro"
    assert reply.choices[0].message.content == "Hello! You said: What is the capital of Peru?"
    assert reply.choices[0].finish_reason == "stop"
    usage = reply.usage
    assert usage is not None
    # Gemini's candidatesTokenCount leaves thinking out; OpenAI's completion_tokens counts it.
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (9, 9 + 4, 22)
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 4
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 2

    sent = gemini_fake.last
    assert sent.path == "/v1/models/gemini-test:generateContent"
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY
    assert sent.body["contents"] == [{"role": "user", "parts": [{"text": USER["content"]}]}]
    assert "systemInstruction" not in sent.body


def test_multi_turn_with_system_and_same_role_turns(
    cloud: openai.OpenAI, gemini_fake: FakeGemini
) -> None:
    reply = cloud.chat.completions.create(
        model="gemini-pro",
        messages=[
            {"role": "system", "content": "You are a historian."},
            {"role": "developer", "content": "Cite dates."},
            {"role": "user", "content": "Who founded Lima?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Francisco Pizarro."}]},
            {"role": "user", "content": "When?"},
            {
                "role": "user",
                "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Why?"}],
            },
        ],
    )

    assert reply.choices[0].message.content == "Hello! You said: When? Why?"
    body = gemini_fake.last.body
    assert body["systemInstruction"] == {
        "parts": [{"text": "You are a historian."}, {"text": "Cite dates."}]
    }
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Who founded Lima?"}]},
        {"role": "model", "parts": [{"text": "Francisco Pizarro."}]},
        {"role": "user", "parts": [{"text": "When?"}, {"text": "Why?"}]},
    ]


def test_image_input_inline_and_fetched(cloud: openai.OpenAI, gemini_fake: FakeGemini) -> None:
    # The image host is on 127.0.0.1, which this Puente's configuration allows explicitly
    # (server.images.allow_networks); by default such an address is refused (test_cloud_images).
    cloud.chat.completions.create(
        model="gemini-pro",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these."},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG64}"}},
                    {"type": "image_url", "image_url": {"url": gemini_fake.image_url()}},
                ],
            }
        ],
    )

    parts = gemini_fake.last.body["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": PNG64}}
    assert parts[2] == {"inlineData": {"mimeType": "image/png", "data": PNG64}}
    assert gemini_fake.state.image_requests == ["pixel.png"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.2:{port}/images/pixel.png", "not a public address"),
        ("http://127.0.0.1:{port}/images/redirect?to=http://127.0.0.2:{port}/x", "not a public"),
        ("http://127.0.0.1:{port}/images/big.png", "larger than the limit of 100000 bytes"),
        ("http://127.0.0.1:{port}/images/page.html", "'text/html', not an image"),
        ("http://127.0.0.1:{port}/images/missing.png", "answered HTTP 404"),
        ("ftp://127.0.0.1/x.png", "http(s) or data: URLs"),
    ],
)
def test_image_urls_puente_will_not_use(
    cloud: openai.OpenAI, gemini_fake: FakeGemini, url: str, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        cloud.chat.completions.create(
            model="gemini-pro",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Look:"},
                        {
                            "type": "image_url",
                            "image_url": {"url": url.format(port=gemini_fake.port)},
                        },
                    ],
                }
            ],
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "messages[0].content[1].image_url.url"
    assert message in error["message"]
    assert gemini_fake.state.received == []


def test_one_tool_call_and_its_result(cloud: openai.OpenAI, gemini_fake: FakeGemini) -> None:
    messages = [{"role": "user", "content": "Weather in Lima?"}]
    first = cloud.chat.completions.create(
        model="gemini-pro", messages=messages, tools=[WEATHER_TOOL]
    )

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Lima0"}
    assert gemini_fake.last.body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],
                }
            ]
        }
    ]

    messages += [
        assistant_turn(choice.message),
        {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 18}'},
    ]
    second = cloud.chat.completions.create(
        model="gemini-pro", messages=messages, tools=[WEATHER_TOOL]
    )

    assert second.choices[0].message.content == 'The tools said: {"celsius":18}'
    sent = gemini_fake.last.body["contents"]
    assert sent[1]["role"] == "model"
    assert sent[1]["parts"][0]["functionCall"] == {"name": "get_weather", "args": {"city": "Lima0"}}
    # The function's name is recovered from the earlier call: the tool message only has its id.
    assert sent[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"celsius": 18}}}],
    }


def test_two_parallel_tool_calls_streamed_and_answered(
    cloud: openai.OpenAI, gemini_fake: FakeGemini
) -> None:
    gemini_fake.program("two-tools", tool_calls=2)
    messages = [{"role": "user", "content": "Weather and time in Lima?"}]
    streamed = collect(
        cloud.chat.completions.create(
            model="gemini/two-tools",
            messages=messages,
            tools=[WEATHER_TOOL, TIME_TOOL],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert streamed.finish == "tool_calls"
    assert [streamed.calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert [streamed.arguments(i) for i in (0, 1)] == [{"city": "Lima0"}, {"city": "Lima1"}]
    assert streamed.usage is not None
    assert streamed.usage.completion_tokens == 20 + 4

    ids = [streamed.calls[i]["id"] for i in (0, 1)]
    assert len(set(ids)) == 2
    messages += [
        {
            "role": "assistant",
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
        {"role": "tool", "tool_call_id": ids[1], "content": "noon"},
        {"role": "tool", "tool_call_id": ids[0], "content": "sunny"},
    ]
    gemini_fake.program("two-tools")
    reply = cloud.chat.completions.create(
        model="gemini/two-tools", messages=messages, tools=[WEATHER_TOOL, TIME_TOOL]
    )

    assert reply.choices[0].message.content == (
        'The tools said: {"result":"noon"}; {"result":"sunny"}'
    )
    # Both responses grouped in one user turn, each named after the call it answers.
    assert gemini_fake.last.body["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}},
            {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
        ],
    }


def test_thought_signatures_go_back_to_gemini_3(
    cloud: openai.OpenAI, gemini_fake: FakeGemini
) -> None:
    messages = [{"role": "user", "content": "Weather in Lima?"}]
    first = cloud.chat.completions.create(
        model="gemini/gemini-3-test", messages=messages, tools=[WEATHER_TOOL]
    )
    message = first.choices[0].message
    (call,) = message.tool_calls or []
    signature = (call.model_extra or {})["extra_content"]["google"]["thought_signature"]
    issued = gemini_fake.last  # what the fake answered is checked through what comes back

    messages += [
        assistant_turn(message),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    reply = cloud.chat.completions.create(
        model="gemini/gemini-3-test", messages=messages, tools=[WEATHER_TOOL]
    )
    assert reply.choices[0].message.content == 'The tools said: {"result":"sunny"}'
    assert gemini_fake.last is not issued
    assert gemini_fake.last.body["contents"][1]["parts"][0]["thoughtSignature"] == signature

    # A history whose tool call never came from Gemini gets Google's documented stand-in.
    hand_made = [
        messages[0],
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "x1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Cusco"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "x1", "content": "cold"},
    ]
    cloud.chat.completions.create(
        model="gemini/gemini-3-test", messages=hand_made, tools=[WEATHER_TOOL]
    )
    sent = gemini_fake.last.body["contents"][1]["parts"][0]["thoughtSignature"]
    assert base64.b64decode(sent) == b"skip_thought_signature_validator"


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
        ),
    ],
)
def test_tool_choice(
    cloud: openai.OpenAI, gemini_fake: FakeGemini, tool_choice: object, expected: object
) -> None:
    cloud.chat.completions.create(
        model="gemini-pro",
        messages=[USER],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice=tool_choice,  # type: ignore[arg-type]
    )
    assert gemini_fake.last.body["toolConfig"] == {"functionCallingConfig": expected}


def test_json_schema_and_json_object_output(cloud: openai.OpenAI, gemini_fake: FakeGemini) -> None:
    reply = cloud.chat.completions.create(
        model="gemini-pro",
        messages=[USER],
        response_format=CITY_SCHEMA,  # type: ignore[arg-type]
    )
    assert set(json.loads(reply.choices[0].message.content or "")) == {"name", "population"}
    config = gemini_fake.last.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == CITY_SCHEMA["json_schema"]["schema"]

    reply = cloud.chat.completions.create(
        model="gemini-pro", messages=[USER], response_format={"type": "json_object"}
    )
    assert json.loads(reply.choices[0].message.content or "") == {"answer": "Lima"}
    assert gemini_fake.last.body["generationConfig"] == {"responseMimeType": "application/json"}


def test_stop_length_and_sampling(cloud: openai.OpenAI, gemini_fake: FakeGemini) -> None:
    stopped = cloud.chat.completions.create(
        model="gemini-pro",
        messages=[USER],
        stop="capital",
        temperature=1.7,
        top_p=0.5,
        seed=3,
        presence_penalty=0.5,
    )
    assert stopped.choices[0].message.content == "Hello! You said: What is the "
    assert stopped.choices[0].finish_reason == "stop"
    assert gemini_fake.last.body["generationConfig"] == {
        "stopSequences": ["capital"],
        "temperature": 1.7,
        "topP": 0.5,
        "seed": 3,
        "presencePenalty": 0.5,
    }

    cut = collect(
        cloud.chat.completions.create(
            model="gemini-pro", messages=[USER], max_tokens=2, stream=True
        )
    )
    assert cut.content == "Hello! You"
    assert cut.finish == "length"
    assert gemini_fake.last.body["generationConfig"] == {"maxOutputTokens": 2}


def test_streaming_with_usage(cloud: openai.OpenAI, gemini_fake: FakeGemini) -> None:
    streamed = collect(
        cloud.chat.completions.create(
            model="gemini-pro", messages=[USER], stream=True, stream_options={"include_usage": True}
        )
    )
    assert streamed.roles == ["assistant"]
    assert streamed.content == "Hello! You said: What is the capital of Peru?"
    assert streamed.finish == "stop"
    assert streamed.usage is not None
    assert (streamed.usage.prompt_tokens, streamed.usage.completion_tokens) == (9, 13)
    assert gemini_fake.last.path == "/v1/models/gemini-test:streamGenerateContent"
    assert gemini_fake.last.query == {"alt": "sse"}


def test_several_choices(cloud: openai.OpenAI, gemini_fake: FakeGemini) -> None:
    reply = cloud.chat.completions.create(model="gemini-pro", messages=[USER], n=2)
    assert [c.index for c in reply.choices] == [0, 1]
    assert gemini_fake.last.body["generationConfig"] == {"candidateCount": 2}


def test_safety_endings_are_content_filter(cloud: openai.OpenAI, gemini_fake: FakeGemini) -> None:
    gemini_fake.program("unsafe", finish_reason="SAFETY")
    reply = cloud.chat.completions.create(model="gemini/unsafe", messages=[USER])
    assert reply.choices[0].finish_reason == "content_filter"

    gemini_fake.program("blocked", blocked=True)
    reply = cloud.chat.completions.create(model="gemini/blocked", messages=[USER])
    assert reply.choices[0].finish_reason == "content_filter"
    assert reply.choices[0].message.content == ""
    streamed = collect(
        cloud.chat.completions.create(model="gemini/blocked", messages=[USER], stream=True)
    )
    assert (streamed.content, streamed.finish) == ("", "content_filter")


def test_logprobs_are_refused(cloud: openai.OpenAI, gemini_fake: FakeGemini) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        cloud.chat.completions.create(model="gemini-pro", messages=[USER], logprobs=True)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "logprobs"
    assert gemini_fake.state.received == []


def test_a_client_that_leaves_closes_the_vendor_stream(
    cloud_puente: InProcessPuente, gemini_fake: FakeGemini
) -> None:
    gemini_fake.program("long", reply=" ".join(["word"] * 200), delay=0.05)
    body = {"model": "gemini/long", "stream": True, "messages": [USER]}
    with httpx.stream("POST", cloud_puente.base_url + "/chat/completions", json=body) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    deadline = time.monotonic() + 3
    while not gemini_fake.state.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gemini_fake.state.closed, "the vendor kept streaming to nobody"
