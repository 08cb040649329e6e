"""The Responses API converters, pure: requests → chat bodies, chat answers and streams →
Response objects and events, each checked against the ``openai`` package's own types."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from server.api.responses_api import ResponseEvents, convert, encode, to_response
from server.errors import InvalidRequest, NotFound, UpstreamConnectionError
from server.pipeline.request import ChatRequest

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def chat_of(body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    chat = convert(body, **kwargs).chat
    ChatRequest.parse(orjson.dumps(chat))  # a valid chat request, as the pipeline checks it
    return chat


# -- request ------------------------------------------------------------------------------------


def test_string_input_and_instructions_become_system_then_user() -> None:
    chat = chat_of({"model": "m", "input": "hi", "instructions": "Be brief."})
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert "input" not in chat and "instructions" not in chat


def test_items_map_to_chat_messages() -> None:
    items = [
        {"role": "developer", "content": "rules"},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
            ],
        },
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "calling", "annotations": []}],
        },
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a":1}'},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": [{"type": "input_text", "text": "two"}],
        },
    ]
    chat = chat_of({"model": "m", "input": items})
    assert chat["messages"] == [
        {"role": "system", "content": "rules"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]


def test_a_user_turn_of_text_parts_alone_is_one_string() -> None:
    parts = [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]
    chat = chat_of({"model": "m", "input": [{"role": "user", "content": parts}]})
    assert chat["messages"] == [{"role": "user", "content": "a\nb"}]


def test_history_comes_before_input_and_after_instructions() -> None:
    history = [
        {"type": "message", "role": "user", "content": "first"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A"}]},
    ]
    chat = chat_of({"model": "m", "input": "second", "instructions": "I"}, history=history)
    assert [m["content"] for m in chat["messages"]] == ["I", "first", "A", "second"]


def test_item_reference_is_resolved_or_404() -> None:
    item = {"type": "message", "role": "user", "content": "stored"}
    chat = chat_of(
        {"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]},
        references={"msg_1": item},
    )
    assert chat["messages"] == [{"role": "user", "content": "stored"}]
    with pytest.raises(NotFound) as caught:
        convert({"model": "m", "input": [{"type": "item_reference", "id": "msg_2"}]})
    assert caught.value.param == "input[0].id"


def test_function_tools_convert_and_hosted_tools_are_skipped() -> None:
    converted = convert(
        {
            "model": "m",
            "input": "x",
            "tools": [
                {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True},
                {"type": "web_search"},
                {"type": "local_shell"},
                {"type": "custom", "name": "apply_patch"},
                {"type": "mcp", "server_label": "s"},
            ],
            "tool_choice": {"type": "function", "name": "f"},
            "parallel_tool_calls": False,
        }
    )
    assert converted.chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}, "strict": True},
        }
    ]
    assert converted.chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert converted.chat["parallel_tool_calls"] is False
    assert converted.skipped_tools == ["web_search", "local_shell", "custom", "mcp"]


def test_only_skipped_tools_send_no_tools_or_choice() -> None:
    chat = chat_of(
        {"model": "m", "input": "x", "tools": [{"type": "web_search"}], "tool_choice": "required"}
    )
    assert "tools" not in chat and "tool_choice" not in chat


def test_text_format_maps_to_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}
    chat = chat_of({"model": "m", "input": "x", "text": {"format": fmt}})
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }
    chat = chat_of({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}})
    assert chat["response_format"] == {"type": "json_object"}
    chat = chat_of({"model": "m", "input": "x", "text": {"format": {"type": "text"}}})
    assert "response_format" not in chat


def test_settings_map_and_responses_only_fields_stay_behind() -> None:
    converted = convert(
        {
            "model": "m",
            "input": "x",
            "stream": True,
            "max_output_tokens": 50,
            "temperature": 0.2,
            "top_p": 0.9,
            "reasoning": {"effort": "low"},
            "user": "u",
            "prompt_cache_key": "k",
            "store": False,
            "metadata": {"a": "b"},
            "include": ["reasoning.encrypted_content"],
            "truncation": "auto",
            "vendor_extra": {"x": 1},
        }
    )
    chat = converted.chat
    assert chat["max_completion_tokens"] == 50
    assert chat["reasoning_effort"] == "low"
    assert chat["stream_options"] == {"include_usage": True}
    for name in ("temperature", "top_p", "user", "prompt_cache_key", "vendor_extra"):
        assert name in chat
    for name in ("store", "metadata", "include", "truncation", "max_output_tokens", "reasoning"):
        assert name not in chat
    assert converted.stream and not converted.store
    assert converted.echo["metadata"] == {"a": "b"} and converted.echo["max_output_tokens"] == 50


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input[0].content[0].type",
        ),
        ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"model": "m", "input": [{"role": ["user"], "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"type": ["message"]}]}, "input[0].type"),
        (
            {
                "model": "m",
                "input": "x",
                "tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "function", "name": ["f"]},
            },
            "tool_choice.name",
        ),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        convert(body)
    assert caught.value.param == param


ODD: list[Any] = [None, 0, -1, 1.5, True, "", "x", [], [None], [1], {}, {"type": []}, [[{}]]]


def test_odd_values_anywhere_are_400s_never_crashes() -> None:
    """Every field and item field given values of every JSON type: the converter answers or
    raises ``InvalidRequest`` / ``NotFound``, never a TypeError or KeyError (a 500)."""
    item_fields = ["type", "role", "content", "call_id", "name", "arguments", "output", "id"]
    top_fields = ["input", "instructions", "tools", "tool_choice", "text", "reasoning", "stream"]
    bodies: list[dict[str, Any]] = []
    for odd in ODD:
        bodies += [{"model": "m", "input": "x", name: odd} for name in top_fields]
        for name in item_fields:
            for kind in ("message", "function_call", "function_call_output", "item_reference"):
                item = {"type": kind, "role": "user", "content": "x", name: odd}
                bodies.append({"model": "m", "input": [item]})
        bodies.append({"model": "m", "input": "x", "tools": [{"type": "function", "name": odd}]})
        bodies.append({"model": "m", "input": "x", "text": {"format": odd}})
        parts = [{"type": "input_image", "image_url": odd}, {"type": odd, "text": odd}]
        bodies.append({"model": "m", "input": [{"role": "user", "content": parts}]})
    for body in bodies:
        with contextlib.suppress(InvalidRequest, NotFound):
            convert(body)


# -- answer -------------------------------------------------------------------------------------


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "shown",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": 3,
            "total_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
    }


def test_text_answer_is_a_completed_response() -> None:
    converted = convert({"model": "m", "input": "x", "instructions": "I", "temperature": 0.5})
    body = to_response(
        converted,
        completion({"role": "assistant", "content": "Hi", "reasoning_content": "think"}),
    )
    response = Response.model_validate(body)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == "shown"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output_text == "Hi" and body["output_text"] == "Hi"
    assert response.usage is not None
    assert response.usage.input_tokens == 7 and response.usage.output_tokens == 3
    assert response.usage.input_tokens_details.cached_tokens == 2
    assert response.usage.output_tokens_details.reasoning_tokens == 1
    assert response.usage.total_tokens == 10
    assert response.instructions == "I" and response.temperature == 0.5
    assert response.store is True and response.parallel_tool_calls is True


def test_tool_calls_become_function_call_items() -> None:
    converted = convert(
        {"model": "m", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": {}}]}
    )
    call = {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = to_response(
        converted,
        completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"),
    )
    response = Response.model_validate(body)
    item = response.output[0]
    assert item.type == "function_call"
    assert (item.call_id, item.name, item.arguments) == ("call_9", "f", "{}")
    assert item.id is not None and item.id.startswith("fc_")
    assert response.tools[0].type == "function"


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_cut_answers_are_incomplete(finish: str, reason: str) -> None:
    converted = convert({"model": "m", "input": "x"})
    response = Response.model_validate(
        to_response(converted, completion({"role": "assistant", "content": "Hi"}, finish))
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == reason


# -- stream -------------------------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


USAGE = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": []}
USAGE["usage"] = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


async def run(
    chunks: list[dict[str, Any]], fail: Exception | None = None, **body: Any
) -> tuple[list[dict[str, Any]], ResponseEvents]:
    converted = convert({"model": "m", "input": "x", "stream": True, **body})

    async def source() -> AsyncIterator[dict[str, Any]]:
        for c in chunks:
            yield c
        if fail is not None:
            raise fail

    events_of = ResponseEvents(converted)
    events = [e async for e in events_of.events(source())]
    for event in events:
        EVENTS.validate_python(event)  # each one is a valid openai ResponseStreamEvent
        frame = encode(event)
        assert frame.startswith(f"event: {event['type']}\ndata: ".encode())
        assert frame.endswith(b"\n\n")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert ids == {converted.response_id}
    return events, events_of


async def test_text_stream_has_the_full_event_sequence() -> None:
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        USAGE,
    ]
    events, stream = await run(chunks)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    done = Response.model_validate(events[-1]["response"])
    assert done.output_text == "Hello" and done.usage is not None
    assert done.usage.total_tokens == 7
    assert stream.final == events[-1]["response"]


async def test_tool_call_stream_gives_dense_output_indexes() -> None:
    def call(index: int, **fields: Any) -> dict[str, Any]:
        return chunk({"tool_calls": [{"index": index, **fields}]})

    chunks = [
        chunk({"role": "assistant", "content": "Let me check."}),
        call(0, id="call_a", type="function", function={"name": "f", "arguments": ""}),
        call(0, function={"arguments": '{"x":'}),
        call(1, id="call_b", type="function", function={"name": "g", "arguments": "{}"}),
        call(0, function={"arguments": "1}"}),
        chunk({}, "tool_calls"),
        USAGE,
    ]
    events, _ = await run(chunks, tools=[{"type": "function", "name": "f"}])
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["output_index"] for e in added] == [0, 1, 2]
    done = {
        e["output_index"]: e["item"] for e in events if e["type"] == "response.output_item.done"
    }
    assert done[1]["arguments"] == '{"x":1}' and done[1]["call_id"] == "call_a"
    assert done[2]["name"] == "g"
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "completed"
    assert [item.type for item in final.output] == ["message", "function_call", "function_call"]


async def test_reasoning_text_streams_as_its_own_item_before_the_message() -> None:
    chunks = [
        chunk({"role": "assistant", "reasoning_content": "Think"}),
        chunk({"reasoning_content": "ing."}),
        chunk({"content": "Done"}),
        chunk({}, "stop"),
        USAGE,
    ]
    events, _ = await run(chunks)
    kinds = [(e["type"], e.get("output_index")) for e in events[2:-1]]
    assert kinds == [
        ("response.output_item.added", 0),
        ("response.reasoning_text.delta", 0),
        ("response.reasoning_text.delta", 0),
        ("response.reasoning_text.done", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.content_part.added", 1),
        ("response.output_text.delta", 1),
        ("response.output_text.done", 1),
        ("response.content_part.done", 1),
        ("response.output_item.done", 1),
    ]
    final = Response.model_validate(events[-1]["response"])
    assert final.output[0].type == "reasoning"
    assert final.output[0].content is not None
    assert final.output[0].content[0].text == "Thinking."
    assert final.output_text == "Done"


async def test_length_ends_incomplete() -> None:
    events, _ = await run([chunk({"content": "a"}), chunk({}, "length"), USAGE])
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_a_failure_mid_stream_ends_with_response_failed() -> None:
    events, stream = await run(
        [chunk({"content": "par"})], fail=UpstreamConnectionError("engine gone")
    )
    assert events[-1]["type"] == "response.failed"
    failed = Response.model_validate(events[-1]["response"])
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.message == "engine gone"
    assert failed.output_text == "par"
    assert stream.final is not None and stream.final["status"] == "failed"
