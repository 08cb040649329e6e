"""The Responses converters on their own: request → chat body, chat.completion → Response, chunks
→ typed events; every object emitted is checked against the openai package's own types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from server.api.responses_api.answer import Echo, to_response
from server.api.responses_api.request import translate
from server.api.responses_api.stream import Encoder, events
from server.errors import InvalidRequest, NotFound, PuenteError, UpstreamConnectionError
from server.pipeline.request import ChatRequest, StreamChunk

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


# -- request ---------------------------------------------------------------------------------


def test_a_string_input_and_instructions_become_system_and_user_messages() -> None:
    out = translate({"model": "m", "input": "Hi", "instructions": "Be terse."}, [])
    assert out.chat["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
    ]
    ChatRequest.from_body(out.chat)
    assert out.items[0]["type"] == "message" and out.items[0]["id"].startswith("msg_")


def test_items_become_chat_messages_with_tool_calls_and_their_outputs() -> None:
    body = {
        "model": "m",
        "input": [
            {"role": "developer", "content": "Rules."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Look:"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Checking."}],
            },
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "c2", "output": "noon"},
        ],
    }
    messages = translate(body, []).chat["messages"]
    assert messages == [
        {"role": "developer", "content": "Rules."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
    ]


def test_settings_are_translated_and_responses_only_fields_dropped() -> None:
    body = {
        "model": "m",
        "input": "Hi",
        "tools": [WEATHER, {"type": "web_search"}, {"type": "namespace", "name": "ns"}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
        "max_output_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.9,
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
        "reasoning": {"effort": "low"},
        "user": "u1",
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "truncation": "auto",
        "prompt_cache_key": "k",
        "metadata": {"a": "b"},
        "background": False,
        "top_k": 5,  # a vendor extra: passed on, as the chat door does
    }
    out = translate(body, [])
    chat = out.chat
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": WEATHER["parameters"],
                "strict": True,
            },
        }
    ]
    assert out.skipped_tools == ["web_search", "ns"]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False
    assert chat["max_completion_tokens"] == 50
    assert (chat["temperature"], chat["top_p"], chat["user"]) == (0.3, 0.9, "u1")
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}},
    }
    assert chat["reasoning_effort"] == "low"
    assert chat["top_k"] == 5
    for dropped in ("store", "include", "truncation", "metadata", "background", "input"):
        assert dropped not in chat
    ChatRequest.from_body(chat)


def test_only_hosted_tools_leave_no_tools_and_no_choice() -> None:
    out = translate(
        {"model": "m", "input": "Hi", "tools": [{"type": "web_search"}], "tool_choice": "auto"},
        [],
    )
    assert "tools" not in out.chat and "tool_choice" not in out.chat
    assert translate({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}, [])


def test_history_is_prepended_and_item_references_resolve() -> None:
    history = [
        {"type": "message", "id": "msg_a", "role": "user", "content": "First"},
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f", "arguments": "{}"},
    ]
    body = {
        "model": "m",
        "input": [
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
            {"type": "item_reference", "id": "msg_a"},
        ],
    }
    messages = translate(body, history).chat["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user"]
    with pytest.raises(NotFound):
        translate({"model": "m", "input": [{"type": "item_reference", "id": "nope"}]}, [])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input[0].content[0].type",
        ),
        ({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "x", "max_output_tokens": "9"}, "max_output_tokens"),
    ],
)
def test_bad_requests_name_their_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        translate(body, [])
    assert caught.value.param == param


# -- answer ----------------------------------------------------------------------------------


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }


def echo(**extra: Any) -> Echo:
    body = {"model": "m", "input": "Hi", **extra}
    return Echo(body, translate(body, []).function_tools)


def test_a_text_answer_is_a_completed_response() -> None:
    data = to_response(
        completion({"role": "assistant", "content": "Hello", "reasoning_content": "Hmm"}),
        echo(instructions="Be kind.", temperature=0.5, metadata={"k": "v"}),
        "m",
    )
    response = Response.model_validate(data)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.output_text == "Hello"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == 4
    assert response.usage.output_tokens_details.reasoning_tokens == 2
    assert (response.usage.input_tokens, response.usage.total_tokens) == (10, 15)
    assert (response.instructions, response.temperature, response.metadata) == (
        "Be kind.",
        0.5,
        {"k": "v"},
    )


def test_tool_calls_become_function_call_items() -> None:
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
        {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": "[]"}},
    ]
    data = to_response(
        completion({"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"),
        echo(tools=[WEATHER]),
        "m",
    )
    response = Response.model_validate(data)
    assert [(i.type, i.call_id, i.arguments) for i in response.output] == [  # type: ignore[union-attr]
        ("function_call", "c1", "{}"),
        ("function_call", "c2", "[]"),
    ]
    assert response.tools[0].name == "get_weather"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_a_cut_answer_is_incomplete(finish: str, reason: str) -> None:
    data = to_response(completion({"role": "assistant", "content": "Hel"}, finish), echo(), "m")
    response = Response.model_validate(data)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == reason


# -- stream ----------------------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None) -> StreamChunk:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return StreamChunk(data={"object": "chat.completion.chunk", "choices": [choice]})


USAGE = StreamChunk(data={"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})


def call_delta(index: int, args: str, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if name is not None:
        call.update(id=f"call_{index}", type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


async def _chunks(
    items: list[StreamChunk], error: PuenteError | None = None
) -> AsyncIterator[StreamChunk]:
    for item in items:
        yield item
    if error is not None:
        raise error


async def run_stream(
    items: list[StreamChunk], error: PuenteError | None = None
) -> tuple[list[Any], list[Any], list[PuenteError]]:
    done: list[Any] = []
    failures: list[PuenteError] = []

    async def on_done(response: Any) -> None:
        done.append(response)

    encoder = Encoder(echo(tools=[WEATHER]), "m")
    frames = [
        f
        async for f in events(
            _chunks(items, error), encoder, on_fail=failures.append, on_done=on_done
        )
    ]
    parsed = []
    for frame in frames:
        head, data = frame.decode().removesuffix("\n\n").split("\n")
        event = EVENTS.validate_python(orjson.loads(data.removeprefix("data: ")))
        assert head == f"event: {event.type}"
        parsed.append(event)
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    ids = {e.response.id for e in parsed if hasattr(e, "response")}
    assert len(ids) == 1
    return parsed, done, failures


async def test_text_then_interleaved_tool_calls_stream_in_order_without_losing_arguments() -> None:
    events_, done, _ = await run_stream(
        [
            chunk({"role": "assistant", "content": "Let me "}),
            chunk({"content": "check."}),
            chunk(call_delta(0, '{"ci', "get_weather")),
            chunk(call_delta(1, '{"ci', "get_weather")),
            chunk(call_delta(0, 'ty":"Lima"}')),
            chunk(call_delta(1, 'ty":"Cusco"}')),
            chunk({}, "tool_calls"),
            USAGE,
        ]
    )
    kinds = [e.type for e in events_]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = [e.output_index for e in events_ if e.type == "response.output_item.added"]
    assert added == [0, 1, 2]
    final = Response.model_validate(events_[-1].response.model_dump())
    assert final.output_text == "Let me check."
    args = [i.arguments for i in final.output if i.type == "function_call"]
    assert args == ['{"city":"Lima"}', '{"city":"Cusco"}']
    assert final.usage is not None and final.usage.output_tokens == 4
    assert done and done[0]["id"] == final.id


async def test_a_stream_cut_by_the_length_limit_ends_incomplete() -> None:
    events_, _, _ = await run_stream([chunk({"content": "Hel"}, "length"), USAGE])
    last = events_[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details.reason == "max_output_tokens"


async def test_a_failure_mid_stream_ends_with_response_failed_and_is_not_stored() -> None:
    error = UpstreamConnectionError("upstream went away")
    events_, done, failures = await run_stream([chunk({"content": "Hel"})], error)
    assert events_[-1].type == "response.failed"
    assert events_[-1].response.error.message == "upstream went away"
    assert failures == [error] and done == []


async def test_reasoning_text_streams_as_a_reasoning_item_before_the_answer() -> None:
    events_, _, _ = await run_stream(
        [
            chunk({"reasoning_content": "Think"}),
            chunk({"reasoning_content": "ing."}),
            chunk({"content": "Yes."}, "stop"),
            USAGE,
        ]
    )
    kinds = [e.type for e in events_]
    assert kinds[2:6] == [
        "response.output_item.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
    ]
    final = Response.model_validate(events_[-1].response.model_dump())
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == "Thinking."  # type: ignore[union-attr,index]
    assert final.output_text == "Yes."
