"""``/v1/responses`` on the cloud vendors (fake Anthropic and Gemini servers behind Puente): the
same Responses, streams and tool round trips as on an OpenAI-compatible upstream."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.responses import Response

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.mark.parametrize("model", ["claude-sonnet", "gemini-pro"])
def test_a_cloud_model_answers_streams_and_runs_a_tool_round_trip(
    cloud: openai.OpenAI, model: str
) -> None:
    response = cloud.responses.create(model=model, input="What is the capital of Peru?")
    Response.model_validate(response.model_dump())
    assert response.output_text == "Hello! You said: What is the capital of Peru?"
    assert response.model == model and response.usage is not None

    with cloud.responses.stream(model=model, input="Stream it", instructions="Be kind.") as s:
        kinds = [event.type for event in s]
        final = s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == "Hello! You said: Stream it"

    first = cloud.responses.create(model=model, input="Weather in Lima?", tools=[WEATHER])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Lima0"}
    second = cloud.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18°C"}],
        tools=[WEATHER],
    )
    assert second.status == "completed"
    assert "18°C" in second.output_text
