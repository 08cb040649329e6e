"""The OpenAI Agents SDK, with its default model, running an agent with a function tool through
Puente's ``/v1/responses`` (the SDK's default API) to a fake upstream that calls the tool and
then answers with text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agents import (
    Agent,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.models import get_default_model
from openai import AsyncOpenAI

from tests.fakes.tool_turns import ToolThenText
from tests.inprocess import InProcessPuente


@pytest.fixture(scope="module")
def upstream() -> Iterator[ToolThenText]:
    fake = ToolThenText(arguments={"get_weather": {"city": "Lima"}}).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def server(
    upstream: ToolThenText, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    # The SDK's own default model name, served by the fake: the agent needs no model setting.
    config = {
        "auth": "none",
        "models": [
            {
                "name": get_default_model(),
                "provider": "openai_compatible",
                "base_url": upstream.base_url,
                "model": "fake-model",
            }
        ],
    }
    workdir: Path = tmp_path_factory.mktemp("agents")
    with InProcessPuente(config, workdir) as proc:
        yield proc


async def test_an_agent_calls_its_tool_and_answers(
    server: InProcessPuente, upstream: ToolThenText
) -> None:
    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    seen: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"22 C and sunny in {city}"

    agent = Agent(name="forecaster", instructions="Answer with the tool.", tools=[get_weather])
    # As the README says to: the SDK's default client pointed at Puente, nothing else changed.
    client = AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    set_default_openai_client(client, use_for_tracing=False)
    result = await Runner.run(agent, "Weather in Lima?")
    await client.close()

    assert seen == ["Lima"]
    assert result.final_output == "The tool said: 22 C and sunny in Lima"
    first, second = upstream.state.received[-2:]
    assert first["messages"][0] == {"role": "system", "content": "Answer with the tool."}
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert second["messages"][-1]["role"] == "tool"
    # Both turns came in through the Responses door, not chat completions.
    assert server.logs().count("responses model=") == 2
    assert "chat model=" not in server.logs()
