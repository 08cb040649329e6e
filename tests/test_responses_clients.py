"""Clients built on the Responses API, through Puente to the fake upstream: the OpenAI Agents SDK
with its default model class, and LangChain's ``ChatOpenAI(use_responses_api=True)``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente

# A model the fake answers with one tool call, then (once the tool's result is back) with text.
TOOL_MODEL = "responses-tool-loop"


@pytest.fixture(scope="module")
def puente(fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    fake_upstream.programs[TOOL_MODEL] = {"tool_calls": 1}
    config = {
        "models": [
            {
                "name": TOOL_MODEL,
                "provider": "openai_compatible",
                "base_url": fake_upstream.base_url,
            },
            {
                "name": "fake-model",
                "provider": "openai_compatible",
                "base_url": fake_upstream.base_url,
            },
        ]
    }
    server = InProcessPuente(config, tmp_path_factory.mktemp("responses-clients")).start()
    yield server
    server.stop()
    fake_upstream.programs.pop(TOOL_MODEL, None)


async def test_agents_sdk_runs_an_agent_with_a_function_tool(
    puente: InProcessPuente, fake_upstream: FakeOpenAI
) -> None:
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)  # traces would go to api.openai.com
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"Sunny in {city}"

    async with openai.AsyncOpenAI(base_url=puente.base_url, api_key="none") as client:
        provider = agents.OpenAIProvider(openai_client=client)  # Responses by default
        agent = agents.Agent(
            name="weather",
            instructions="Answer about weather.",
            tools=[get_weather],
            model=TOOL_MODEL,
        )
        result = await agents.Runner.run(
            agent, "Weather in Lima?", run_config=agents.RunConfig(model_provider=provider)
        )
    assert calls == ["Lima0"]
    assert result.final_output == "Hello! You said: Weather in Lima?"
    messages = fake_upstream.state.received[-1]["messages"]
    assert messages[0] == {"role": "system", "content": "Answer about weather."}
    assert messages[-1]["role"] == "tool" and messages[-1]["content"] == "Sunny in Lima0"
    assert f"responses model={TOOL_MODEL}" in puente.logs()  # the Responses door, not chat


def test_langchain_chat_openai_with_the_responses_api(
    puente: InProcessPuente, fake_upstream: FakeOpenAI
) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(
        model="fake-model", base_url=puente.base_url, api_key="none", use_responses_api=True
    )
    answer = llm.invoke("Hola")
    assert answer.text == "Hello! You said: Hola"
    streamed = "".join(chunk.text for chunk in llm.stream("Adiós"))
    assert streamed == "Hello! You said: Adiós"

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return city

    with_tools = langchain_openai.ChatOpenAI(
        model=TOOL_MODEL, base_url=puente.base_url, api_key="none", use_responses_api=True
    ).bind_tools([get_weather])
    call = with_tools.invoke("Weather in Lima?")
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [("get_weather", {"city": "Lima0"})]
    assert "responses model=fake-model" in puente.logs()
