"""LangChain's ``ChatOpenAI`` on the Responses API (``use_responses_api=True``, which it also
switches to by itself when a caller passes ``reasoning=``) through Puente: text, a streamed
answer, and a bound tool that comes back as a tool call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI

from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente


@pytest.fixture(scope="module")
def server(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    model = {
        "name": "fake-model",
        "provider": "openai_compatible",
        "base_url": fake_upstream.base_url,
    }
    workdir: Path = tmp_path_factory.mktemp("langchain")
    with InProcessPuente({"auth": "none", "models": [model]}, workdir) as proc:
        yield proc


def chat_model(server: InProcessPuente, **kwargs: object) -> ChatOpenAI:
    return ChatOpenAI(
        model="fake-model", base_url=server.base_url, api_key="unused", max_retries=0, **kwargs
    )  # type: ignore[call-arg]


def test_invoke_and_stream_on_the_responses_api(server: InProcessPuente, fake: FakeOpenAI) -> None:
    llm = chat_model(server, use_responses_api=True)
    before = server.logs().count("responses model=fake-model")
    answer = llm.invoke("What is the capital of Peru?")
    assert answer.text == "Hello! You said: What is the capital of Peru?"
    assert answer.response_metadata["id"].startswith("resp_")
    streamed = "".join(chunk.text for chunk in llm.stream("hola"))
    assert streamed == "Hello! You said: hola"
    assert server.logs().count("responses model=fake-model") == before + 2


def test_reasoning_switches_langchain_to_responses(
    server: InProcessPuente, fake: FakeOpenAI
) -> None:
    answer = chat_model(server, reasoning={"effort": "low"}).invoke("hi")
    assert answer.text == "Hello! You said: hi"
    assert fake.state.received[-1]["reasoning_effort"] == "low"


def test_a_bound_tool_comes_back_as_a_tool_call(server: InProcessPuente, fake: FakeOpenAI) -> None:
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return city

    llm = chat_model(
        server, use_responses_api=True, extra_body={"fake": {"tool_calls": 1}}
    ).bind_tools([get_weather])
    answer = llm.invoke("Weather in Lima?")
    assert isinstance(answer, AIMessage)
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [
        ("get_weather", {"city": "Lima0"})
    ]
