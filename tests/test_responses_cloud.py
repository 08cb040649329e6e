"""``/v1/responses`` in front of Anthropic and Gemini (their fakes, driven by their own SDKs
inside Puente): the Responses request goes through the chat pipeline and each vendor's
translation, tool calls included, whole and streamed."""

from __future__ import annotations

from typing import Any

import openai
import pytest

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.mark.parametrize("model", ["claude-sonnet", "gemini-pro"])
def test_text_whole_and_streamed(cloud: openai.OpenAI, model: str) -> None:
    whole = cloud.responses.create(
        model=model, input="Capital of Peru?", instructions="Be brief.", reasoning={"effort": "low"}
    )
    assert whole.status == "completed" and whole.model == model
    assert whole.output_text == "Hello! You said: Capital of Peru?"
    assert whole.usage is not None and whole.usage.output_tokens > 0
    with cloud.responses.stream(model=model, input="hola") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Hello! You said: hola"


@pytest.mark.parametrize("model", ["claude-sonnet", "gemini-pro"])
def test_tool_round_trip_streamed_then_continued(cloud: openai.OpenAI, model: str) -> None:
    with cloud.responses.stream(model=model, input="Weather in Lima?", tools=[WEATHER]) as stream:
        first = stream.get_final_response()
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.arguments.replace(" ", "") == '{"city":"Lima0"}'
    second = cloud.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}],
        tools=[WEATHER],
    )
    # Gemini wraps a tool's result in an object ({"result": "18 C"}); Anthropic keeps the text.
    assert second.output_text.startswith("The tools said: ") and "18 C" in second.output_text
