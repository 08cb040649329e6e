"""The chat body's quick check (``plainly_valid``) against the schema it stands in for.

``ChatRequest.from_body`` skips the pydantic schema for a body ``plainly_valid`` accepts, so the
quick check must never accept a body the schema refuses (that body would then reach an upstream
instead of getting its 400), and must accept the usual ones (or it saves nothing). Bodies are
generated from values each field may or may not take, with a fixed seed.
"""

from __future__ import annotations

import random
from dataclasses import fields, replace
from typing import Any

import pytest
from pydantic import ValidationError

from server.errors import InvalidRequest
from server.pipeline.pipeline import _prompt_estimate
from server.pipeline.request import (
    ChatRequest,
    UpstreamRequest,
    _ChatRequestSchema,
    first_error,
    plainly_valid,
)
from server.providers.anthropic_native import NativeMessages

ODD = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    128,
    129,
    10**30,
    0.0,
    0.5,
    1.0,
    1.5,
    2.0,
    2.5,
    -0.5,
    float("nan"),
    float("inf"),
    "",
    "x",
    "user",
    "5",
    [],
    ["a"],
    ["a", 1],
    [{}],
    [{"type": "text", "text": "hi"}],
    [{"a": 1}, "b"],
    {},
    {"type": "json_object"},
    {1: "non-str key"},
    {"include_usage": True},
    {"include_usage": 1},
    {"include_usage": "yes"},
]

FIELDS = (
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "temperature",
    "top_p",
    "stop",
    "tools",
    "tool_choice",
    "response_format",
    "top_k",  # not in the schema: anything goes
)
MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id", "extra")
# A value each field takes in a valid body, chosen half the time so that many bodies are valid.
GOOD: dict[str, list[Any]] = {
    "stream": [True, False, None],
    "stream_options": [{"include_usage": True}, {}, None],
    "max_tokens": [1, 100, None],
    "max_completion_tokens": [1, 100],
    "n": [1, 128],
    "temperature": [0, 0.0, 2, 1.5],
    "top_p": [0, 1, 0.5],
    "stop": ["x", ["a"], []],
    "tools": [[], [{"type": "function"}]],
    "tool_choice": ["auto", {"type": "function"}],
    "response_format": [{"type": "json_object"}],
    "top_k": [40],
    "content": ["hi", None, [{"type": "text", "text": "hi"}]],
    "name": ["a"],
    "tool_calls": [[{"id": "c"}], None],
    "tool_call_id": ["c"],
    "extra": [1],
}


def _value(rng: random.Random, field: str) -> Any:
    return rng.choice(GOOD[field] if rng.random() < 0.7 else ODD)


ROLES = ["system", "developer", "user", "assistant", "tool", "function", "robot", "User", 3]


def _schema_accepts(body: dict[str, Any]) -> bool:
    try:
        _ChatRequestSchema.model_validate(body)
    except ValidationError:
        return False
    return True


def _message(rng: random.Random) -> Any:
    if rng.random() < 0.05:
        return rng.choice(ODD)
    role = rng.choice(ROLES[:6] if rng.random() < 0.9 else ROLES)
    message: dict[str, Any] = {"role": role}
    for field in MESSAGE_FIELDS[1:]:
        if rng.random() < 0.2:
            message[field] = _value(rng, field)
    if rng.random() < 0.05:
        del message["role"]
    return message


def _body(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": rng.choice(["m", "", 1, None]) if rng.random() < 0.1 else "m",
        "messages": [_message(rng) for _ in range(rng.randint(0, 3))],
    }
    if rng.random() < 0.05:
        body["messages"] = rng.choice(ODD)
    for field in FIELDS:
        if rng.random() < 0.15:
            body[field] = _value(rng, field)
    for field in ("model", "messages"):
        if rng.random() < 0.03:
            del body[field]
    return body


def test_the_quick_check_accepts_nothing_the_schema_refuses() -> None:
    rng = random.Random(16)
    accepted = refused_by_schema = 0
    for _ in range(30_000):
        body = _body(rng)
        if plainly_valid(body):
            accepted += 1
            assert _schema_accepts(body), body
        elif not _schema_accepts(body):
            refused_by_schema += 1
    # Both kinds were generated in numbers, so the check above compared something.
    assert accepted > 1000
    assert refused_by_schema > 1000


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
                {"role": "tool", "content": "42", "tool_call_id": "c1"},
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 100,
            "temperature": 0.7,
            "top_p": 1,
            "n": 1,
            "stop": ["\n"],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "auto",
            "response_format": {"type": "json_object"},
            "top_k": 40,
        },
    ],
)
def test_usual_bodies_take_the_quick_check(body: dict[str, Any]) -> None:
    assert plainly_valid(body)
    assert ChatRequest.from_body(body).model == "m"


def test_errors_are_the_schemas_own() -> None:
    """A body the quick check does not vouch for gets exactly the error the schema gives."""
    rng = random.Random(7)
    compared = 0
    for _ in range(3000):
        body = _body(rng)
        try:
            _ChatRequestSchema.model_validate(body)
        except ValidationError as exc:
            expected = first_error(exc)
        else:
            continue
        with pytest.raises(InvalidRequest) as got:
            ChatRequest.from_body(body)
        assert (got.value.message, got.value.param, got.value.code) == (
            expected.message,
            expected.param,
            expected.code,
        )
        compared += 1
    assert compared > 100


def test_an_attempts_copy_carries_every_field() -> None:
    """``for_attempt`` builds a plain request's copy field by field, and a subclass's (which
    may carry more) with ``dataclasses.replace``."""
    assert [f.name for f in fields(ChatRequest)] == [f.name for f in fields(UpstreamRequest)]
    assert [f.name for f in fields(UpstreamRequest)] == [
        "body",
        "model",
        "upstream_model",
        "operation",
        "stream",
        "include_usage",
    ]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    request = ChatRequest.from_body({**body, "stream_options": {"include_usage": True}})
    copy = request.for_attempt("upstream-m")
    assert type(copy) is ChatRequest
    assert copy == replace(request, upstream_model="upstream-m")
    assert copy.body is not request.body  # its own, to be shaped for its model

    messages_body = {"model": "claude", "max_tokens": 9, "messages": body["messages"]}
    native = NativeMessages.wrap(request, messages_body, {"anthropic-version": "2023-06-01"})
    native_copy = native.for_attempt("claude-upstream")
    assert type(native_copy) is NativeMessages
    assert native_copy == replace(native, upstream_model="claude-upstream")
    assert native_copy.messages_body == messages_body
    assert native_copy.body is not native.body


@pytest.mark.parametrize("text", ["hola", "x" * 37, "¿Quién fundó Lima?", "日本語のテキスト", ""])
def test_the_prompt_estimate_counts_utf8_bytes(text: str) -> None:
    """Admission holds about four bytes a token against budgets, ASCII or not."""
    expected = len(text.encode()) // 4 + 1
    assert _prompt_estimate(text) == expected
    assert _prompt_estimate([{"content": text}, [text, 7]]) == 2 * expected + 1
