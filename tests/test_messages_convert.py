"""The Messages front door's pure converters: a Messages request → a chat body, a chat.completion
→ a Message (validated with the anthropic SDK's own types), Puente's errors → Anthropic's."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types import Message
from anthropic.types.shared import ErrorResponse

from server.api.messages.answer import to_message
from server.api.messages.errors import error_body, status_and_type
from server.api.messages.models import card, page
from server.api.messages.request import Target, load_body, to_chat
from server.errors import (
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    PermissionDenied,
    PuenteError,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    UpstreamConnectionError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from server.pipeline.request import ChatRequest
from server.pipeline.tokens import estimate

VLLM = Target("vllm")
PNG_B64 = "iVBORw0KGgo="


def convert(body: dict[str, Any], target: Target = VLLM) -> dict[str, Any]:
    checked = load_body(orjson.dumps({"model": "m", "max_tokens": 64, **body}))
    chat = to_chat(checked, target)
    ChatRequest.from_body(chat)  # what the pipeline accepts
    return chat


def test_system_blocks_text_and_sampling() -> None:
    chat = convert(
        {
            "system": [
                {"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Answer in Spanish."},
            ],
            "messages": [{"role": "user", "content": "Hi"}],
            "stop_sequences": ["END"],
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 5,
            "metadata": {"user_id": "u-42"},
            "stream": True,
            "container": "ignored",
            "service_tier": "auto",
        }
    )
    assert chat == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be terse.\n\nAnswer in Spanish."},
            {"role": "user", "content": "Hi"},
        ],
        "max_tokens": 64,
        "stream": True,
        "stop": ["END"],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 5,
        "user": "u-42",
    }


def test_openai_targets_get_no_top_k_and_max_completion_tokens() -> None:
    chat = convert({"messages": [{"role": "user", "content": "Hi"}], "top_k": 5}, Target("openai"))
    assert "top_k" not in chat and "max_tokens" not in chat
    assert chat["max_completion_tokens"] == 64


def test_images_base64_and_url() -> None:
    chat = convert(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": PNG_B64,
                            },
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    ],
                }
            ]
        }
    )
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
    ]


def test_documents_converted_where_possible_else_dropped() -> None:
    blocks = [
        {"type": "document", "title": "Notes", "source": {"type": "text", "data": "abc"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        },
        {"type": "text", "text": "Summarise."},
    ]
    local = convert({"messages": [{"role": "user", "content": blocks}]})
    assert local["messages"][0]["content"] == [
        {"type": "text", "text": "Notes\n\nabc"},
        {"type": "text", "text": "Summarise."},
    ]
    openai = convert({"messages": [{"role": "user", "content": blocks}]}, Target("openai"))
    assert openai["messages"][0]["content"][1] == {
        "type": "file",
        "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBE"},
    }


def test_tool_round_trip_and_thinking_dropped() -> None:
    chat = convert(
        {
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
                {"type": "web_search_20250305", "name": "web_search"},  # a server tool
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "messages": [
                {"role": "user", "content": "Weather in Lima and Cusco?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Two calls.", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "xx"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"c": 1}},
                        {"type": "tool_use", "id": "t2", "name": "get_weather", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "18 C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t2",
                            "is_error": True,
                            "content": [{"type": "text", "text": "no station"}],
                        },
                        {"type": "text", "text": "And tomorrow?"},
                    ],
                },
            ],
        }
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "description": "Weather in a city",
            },
        }
    ]
    assert chat["tool_choice"] == "required"
    assert chat["parallel_tool_calls"] is False
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"c":1}'},
                },
                {
                    "id": "t2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "18 C"},
        {"role": "tool", "tool_call_id": "t2", "content": "Error: no station"},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    tool = {"name": "f", "input_schema": {"type": "object"}}
    chat = convert(
        {"tools": [tool], "tool_choice": choice, "messages": [{"role": "user", "content": "x"}]}
    )
    assert chat["tool_choice"] == expected
    assert "parallel_tool_calls" not in chat


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 10000}, "medium"),
        ({"type": "enabled", "budget_tokens": 32000}, "high"),
        ({"type": "disabled"}, None),
    ],
)
def test_thinking_becomes_reasoning_effort(thinking: dict[str, Any], effort: str | None) -> None:
    chat = convert({"thinking": thinking, "messages": [{"role": "user", "content": "x"}]})
    assert chat.get("reasoning_effort") == effort


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"max_tokens": 5, "messages": []}, "messages"),
        ({"max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ],
)
def test_invalid_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        load_body(orjson.dumps({"model": "m", **body}))
    assert caught.value.param == param
    assert caught.value.message.startswith(param.replace("[", ".").replace("]", ""))


def test_count_tokens_body_needs_no_max_tokens_and_estimate_grows() -> None:
    short = load_body(b'{"model":"m","messages":[{"role":"user","content":"Hi"}]}', counting=True)
    chat = to_chat({**short, "max_tokens": 1}, VLLM)
    longer = to_chat(
        {**short, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi " * 400}]}, VLLM
    )
    assert 0 < estimate(chat) < estimate(longer)


# -- answers ---------------------------------------------------------------------------------------


def completion(message: dict[str, Any], finish: str, **choice: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "shown-name",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
        "usage": {
            "prompt_tokens": 30,
            "completion_tokens": 7,
            "total_tokens": 37,
            "prompt_tokens_details": {"cached_tokens": 10},
        },
    }


def test_text_answer_is_a_valid_message_with_cached_tokens_once() -> None:
    out = to_message(
        completion({"role": "assistant", "content": "Lima."}, "stop"),
        stop_sequences=[],
        thinking=False,
    )
    message = Message.model_validate(out)
    assert out["id"].startswith("msg_")
    assert message.model == "shown-name"
    assert [b.type for b in message.content] == ["text"]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens == 20
    assert message.usage.cache_read_input_tokens == 10
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.output_tokens == 7


def test_tool_calls_become_tool_use_with_parsed_input() -> None:
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"city":"Lima"}'}},
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "not json"}},
    ]
    out = to_message(
        completion({"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"),
        stop_sequences=[],
        thinking=False,
    )
    message = Message.model_validate(out)
    assert message.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "input", None)) for b in message.content] == [
        ("tool_use", {"city": "Lima"}),
        ("tool_use", {}),
    ]


@pytest.mark.parametrize(
    ("finish", "extra", "reason", "sequence"),
    [
        ("length", {}, "max_tokens", None),
        ("content_filter", {}, "refusal", None),
        ("stop", {"stop_reason": "END"}, "stop_sequence", "END"),
        ("stop", {"stop_reason": 2}, "end_turn", None),  # vLLM: a stop token id, not a sequence
    ],
)
def test_stop_reasons(
    finish: str, extra: dict[str, Any], reason: str, sequence: str | None
) -> None:
    out = to_message(
        completion({"role": "assistant", "content": "x"}, finish, **extra),
        stop_sequences=["END"],
        thinking=False,
    )
    message = Message.model_validate(out)
    assert (message.stop_reason, message.stop_sequence) == (reason, sequence)


def test_reasoning_becomes_thinking_only_when_asked() -> None:
    reply = {"role": "assistant", "content": "4", "reasoning_content": "2+2"}
    asked = Message.model_validate(
        to_message(completion(reply, "stop"), stop_sequences=[], thinking=True)
    )
    assert [b.type for b in asked.content] == ["thinking", "text"]
    plain = Message.model_validate(
        to_message(completion(reply, "stop"), stop_sequences=[], thinking=False)
    )
    assert [b.type for b in plain.content] == ["text"]


# -- errors and models -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (InvalidRequest("bad"), 400, "invalid_request_error"),
        (Unauthorized("who"), 401, "authentication_error"),
        (PermissionDenied("no"), 403, "permission_error"),
        (ModelNotFound.named("x"), 404, "not_found_error"),
        (PayloadTooLarge(10), 413, "request_too_large"),
        (RateLimited("slow", retry_after=3), 429, "rate_limit_error"),
        (ServiceUnavailable("busy"), 529, "overloaded_error"),
        (UpstreamStatusError(529, "overloaded"), 529, "overloaded_error"),
        (UpstreamStatusError(400, "bad"), 400, "invalid_request_error"),
        (UpstreamStatusError(500, "boom"), 502, "api_error"),
        (UpstreamConnectionError("refused"), 502, "api_error"),
        (UpstreamTimeout("slow"), 504, "timeout_error"),
        (PuenteError("bug"), 500, "api_error"),
    ],
)
def test_errors_in_anthropic_shape(error: PuenteError, status: int, kind: str) -> None:
    assert status_and_type(error) == (status, kind)
    body = orjson.loads(error_body(error))
    if kind != "request_too_large":  # a documented type the SDK's models do not list
        ErrorResponse.model_validate(body)
    assert body["type"] == "error"
    assert body["error"] == {"type": kind, "message": error.message}


def test_models_page_in_anthropic_shape() -> None:
    cards = [card({"id": n, "created": 1700000000}) for n in ("a", "b", "c")]
    assert cards[0] == {
        "type": "model",
        "id": "a",
        "display_name": "a",
        "created_at": "2023-11-14T22:13:20Z",
    }
    first = page(cards, {"limit": "2"})
    assert [c["id"] for c in first["data"]] == ["a", "b"]
    assert (first["has_more"], first["first_id"], first["last_id"]) == (True, "a", "b")
    rest = page(cards, {"limit": "2", "after_id": "b"})
    assert [c["id"] for c in rest["data"]] == ["c"] and rest["has_more"] is False
    before = page(cards, {"before_id": "c"})
    assert [c["id"] for c in before["data"]] == ["a", "b"] and before["has_more"] is False


def test_what_claude_code_sends_is_taken() -> None:
    """Claude Code's own request shape (2.1): a system message mid-conversation, adaptive
    thinking with an effort, a long JSON user id, and fields only Anthropic knows."""
    body = {
        "system": [{"type": "text", "text": "You are Claude Code."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Fix it."}]},
            {"role": "system", "content": "Available agent types: …"},
        ],
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": '{"device_id":"' + "a" * 64 + '"}'},
    }
    local = convert(body)
    assert [m["role"] for m in local["messages"]] == ["system", "user", "system"]
    assert local["messages"][2] == {"role": "system", "content": "Available agent types: …"}
    assert local["reasoning_effort"] == "high"
    assert local["user"].startswith('{"device_id"')
    assert "context_management" not in local and "output_config" not in local
    openai = convert(body, Target("openai"))
    assert "reasoning_effort" not in openai and "user" not in openai


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (
            [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
            "messages[0].content[0].source",
        ),
        ([{"type": "tool_result", "content": "x"}], "messages[0].content[0].tool_use_id"),
        ([], "messages"),
    ],
)
def test_blocks_that_cannot_be_translated_are_a_400_naming_the_block(
    content: list[Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        convert({"messages": [{"role": "user", "content": content}]})
    assert caught.value.param == param
    assert caught.value.message.startswith(param.replace("[", ".").replace("]", "") + ": ")
