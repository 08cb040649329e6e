"""``/v1/responses`` on the real local engine (vLLM, launched by Puente): a whole answer, a stream
and a continued conversation, with the openai SDK."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai.types.responses import Response

from tests.engine_support import MODEL, LocalEngine

pytestmark = pytest.mark.engine


@pytest.fixture
def sdk(local_engine: LocalEngine) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=local_engine.puente.base_url, api_key="unused", max_retries=0, timeout=120
    ) as client:
        yield client


def test_the_engine_answers_streams_and_continues_a_conversation(sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(
        model=MODEL, input="What is the capital of Peru?", max_output_tokens=12, temperature=0
    )
    Response.model_validate(first.model_dump())
    assert first.status in ("completed", "incomplete") and first.output_text
    assert first.usage is not None and 0 < first.usage.output_tokens <= 12

    events = list(
        sdk.responses.create(
            model=MODEL, input="Count to three.", max_output_tokens=8, temperature=0, stream=True
        )
    )
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    last = events[-1]
    # Cut at 8 tokens it ends incomplete (the SDK's stream helper wants "completed" only).
    assert last.type in ("response.completed", "response.incomplete")
    final = last.response
    assert "".join(deltas) == final.output_text != ""
    assert final.usage is not None and final.usage.output_tokens <= 8

    second = sdk.responses.create(
        model=MODEL,
        input="And of Chile?",
        previous_response_id=first.id,
        max_output_tokens=12,
        temperature=0,
    )
    assert second.output_text and second.usage is not None
    # The first question and answer were sent again, before the new one.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
