"""What a broken Anthropic (or a proxy in front of it) can answer: the provider reads answers and
stream events as plain JSON, so each field it reads is checked there. Every malformed answer is a
502 ``upstream_bad_response`` in the caller's envelope (OpenAI's for chat, Anthropic's for
``/v1/messages``), or, once a stream began, its error event; never a 500 or a traceback."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.cloud_fixtures import WEATHER_TOOL
from tests.fakes.anthropic_vendor import FakeAnthropic
from tests.inprocess import InProcessPuente
from tests.support import error_envelope

USER = [{"role": "user", "content": "What is the capital of Peru?"}]
Mangle = Callable[[dict[str, Any]], Any]


def _set(path: tuple[str | int, ...], value: Any) -> Mangle:
    """A copy of the payload with the field at ``path`` set to ``value``."""

    def mangle(payload: dict[str, Any]) -> Any:
        changed = copy.deepcopy(payload)
        node: Any = changed
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
        return changed

    return mangle


def _on(kind: str, mangle: Mangle) -> Mangle:
    """``mangle`` applied to the stream's events of ``kind`` only."""
    return lambda event: mangle(event) if event["type"] == kind else event


def _raw(sent: bytes) -> Mangle:
    return lambda _: sent


WHOLE: dict[str, Mangle] = {
    "not-json": _raw(b"{not json"),
    "not-an-object": _raw(b"[1, 2]"),
    "content-not-a-list": _set(("content",), "Lima"),
    "block-not-an-object": _set(("content", 0), 5),
    "block-without-type": _set(("content", 0, "type"), None),
    "text-not-a-string": _set(("content", 0, "text"), ["Lima"]),
    "no-id": _set(("id",), None),
    "stop-reason-not-a-string": _set(("stop_reason",), {"why": "done"}),
    "usage-not-an-object": _set(("usage",), [9]),
    "negative-count": _set(("usage", "input_tokens"), -5000),
    "count-a-string": _set(("usage", "output_tokens"), "many"),
    "count-a-bool": _set(("usage", "cache_read_input_tokens"), True),
    "thinking-count-negative": _set(("usage", "output_tokens_details", "thinking_tokens"), -1),
}


def _chat(puente: InProcessPuente, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": USER, **extra}
    return httpx.post(puente.base_url + "/chat/completions", json=body, timeout=30)


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 502, response.text
    error = error_envelope(response)
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_bad_response")
    assert "not its API" in error["message"]


@pytest.mark.parametrize("case", list(WHOLE))
def test_a_malformed_answer_is_a_502(
    cloud_puente: InProcessPuente, claude_fake: FakeAnthropic, case: str
) -> None:
    claude_fake.program("broken", mangle=WHOLE[case])
    _refused(_chat(cloud_puente, "claude/broken"))


def test_a_tool_call_whose_input_is_not_an_object_is_a_502(
    cloud_puente: InProcessPuente, claude_fake: FakeAnthropic
) -> None:
    claude_fake.program("broken-tool", tool_calls=1, mangle=_set(("content", 0, "input"), [1]))
    _refused(_chat(cloud_puente, "claude/broken-tool", tools=[WEATHER_TOOL]))
    # The same answer unmangled is a tool call: what was refused was the input alone.
    claude_fake.program("broken-tool", tool_calls=1)
    assert _chat(cloud_puente, "claude/broken-tool", tools=[WEATHER_TOOL]).status_code == 200


# Events mangled after the stream began: the role chunk is out, so the stream ends with an error.
MID_STREAM: dict[str, Mangle] = {
    "event-not-json": _on("content_block_delta", _raw(b"{oops")),
    "event-not-an-object": _on("content_block_delta", _raw(b"[1]")),
    "event-without-type": _on("content_block_delta", _set(("type",), 7)),
    "delta-not-an-object": _on("content_block_delta", _set(("delta",), "Lima")),
    "text-delta-not-a-string": _on("content_block_delta", _set(("delta", "text"), 5)),
    "block-not-an-object": _on("content_block_start", _set(("content_block",), "text")),
    "index-not-a-number": _on("content_block_start", _set(("index",), "first")),
    "final-usage-not-an-object": _on("message_delta", _set(("usage",), 7)),
    "final-count-negative": _on("message_delta", _set(("usage", "output_tokens"), -1)),
    "stop-reason-not-a-string": _on("message_delta", _set(("delta", "stop_reason"), 1)),
}


def _stream_error(response: httpx.Response) -> dict[str, Any]:
    """The error event of an OpenAI stream that failed after it began, and its end."""
    assert response.status_code == 200, response.text
    assert "Traceback" not in response.text
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    errors = [orjson.loads(e)["error"] for e in events[:-1] if '"error"' in e]
    (error,) = errors
    assert isinstance(error, dict)
    return error


@pytest.mark.parametrize("case", list(MID_STREAM))
def test_a_malformed_event_ends_the_stream_with_an_error_event(
    cloud_puente: InProcessPuente, claude_fake: FakeAnthropic, case: str
) -> None:
    claude_fake.program("broken-stream", mangle=MID_STREAM[case])
    response = _chat(cloud_puente, "claude/broken-stream", stream=True)
    error = _stream_error(response)
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_bad_response")


@pytest.mark.parametrize(
    "mangle",
    [
        _on("message_start", _set(("message",), "hello")),
        _on("message_start", _set(("message", "id"), 42)),
        _on("message_start", _set(("message", "usage", "input_tokens"), -3)),
    ],
    ids=["message-not-an-object", "id-not-a-string", "negative-input-count"],
)
def test_a_malformed_first_event_is_a_502_before_the_stream(
    cloud_puente: InProcessPuente, claude_fake: FakeAnthropic, mangle: Mangle
) -> None:
    claude_fake.program("broken-start", mangle=mangle)
    _refused(_chat(cloud_puente, "claude/broken-start", stream=True))


def test_events_puente_has_no_use_for_pass_unread(
    cloud_puente: InProcessPuente, claude_fake: FakeAnthropic
) -> None:
    # A block or delta type added after this was written, with parts nothing reads: skipped.
    claude_fake.program(
        "new-kinds",
        thinking=True,
        mangle=_on("content_block_delta", _set(("delta",), {"type": "future_delta", "x": [1]})),
    )
    response = _chat(cloud_puente, "claude/new-kinds", stream=True)
    assert response.status_code == 200, response.text
    assert "error" not in response.text
    assert '"finish_reason":"stop"' in response.text


# -- the Messages front door: Anthropic's envelope ----------------------------------------------


@pytest.fixture
def claude_client(cloud_puente: InProcessPuente) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=cloud_puente.url, api_key="unused", max_retries=0) as sdk:
        yield sdk


def test_a_malformed_answer_relayed_through_messages_is_an_api_error(
    claude_client: anthropic.Anthropic, claude_fake: FakeAnthropic
) -> None:
    claude_fake.program("broken", mangle=WHOLE["content-not-a-list"])
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude_client.messages.create(model="claude/broken", max_tokens=64, messages=USER)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    assert caught.value.type == "api_error"
    assert "not its API" in caught.value.message


def test_a_malformed_event_relayed_through_messages_ends_with_an_error_event(
    claude_client: anthropic.Anthropic, claude_fake: FakeAnthropic
) -> None:
    claude_fake.program("broken-stream", mangle=MID_STREAM["text-delta-not-a-string"])
    received: list[str] = []
    stream = claude_client.messages.stream(
        model="claude/broken-stream",
        max_tokens=64,
        messages=USER,  # type: ignore[arg-type]
    )
    with pytest.raises(anthropic.APIStatusError) as caught, stream as events:
        for event in events:
            received.append(event.type)
    assert received[0] == "message_start"  # the stream had begun: the error came as an event
    assert caught.value.type == "api_error"
    assert "not its API" in caught.value.message
