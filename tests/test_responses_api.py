"""``/v1/responses`` through Puente, driven by the real openai SDK (sync, async, streaming)
against the fake OpenAI upstream: text, tools, conversations, structured output, personas,
stored responses per key, and errors in OpenAI's envelope."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from tests.access_support import ADMIN, admin_headers, unique
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente
from tests.persona_setup import FAREWELL, MARKER, MATH_SYSTEM, persona_config

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
QUESTION = "What is the capital of Peru?"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def server(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    config = {
        "models": [
            {
                "name": "fake-model",
                "provider": "openai_compatible",
                "base_url": fake_upstream.base_url,
            }
        ],
        "personas": [{"name": "historia", "model": "fake-model", "system": "Eres historiador."}],
    }
    workdir: Path = tmp_path_factory.mktemp("responses")
    with InProcessPuente(config, workdir, env={"PUENTE_ADMIN_KEY": ADMIN}) as proc:
        yield proc


def new_key(server: InProcessPuente) -> str:
    r = httpx.post(
        server.url + "/admin/keys", json={"name": unique("resp")}, headers=admin_headers()
    )
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


@pytest.fixture(scope="module")
def key(server: InProcessPuente) -> str:
    return new_key(server)


@pytest.fixture
def client(server: InProcessPuente, key: str, fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0) as sdk:
        yield sdk


def test_create_answers_a_response_object(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="fake-model", input=QUESTION, instructions="Be terse.", temperature=0.3
    )
    response = Response.model_validate(orjson.loads(raw.content))  # exactly OpenAI's shape
    assert raw.headers["x-puente-model"] == "fake-model"
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text == f"Hello! You said: {QUESTION}"
    assert response.instructions == "Be terse." and response.temperature == 0.3
    assert response.usage is not None and response.usage.output_tokens == 9
    assert fake.state.received[-1]["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": QUESTION},
    ]
    assert fake.state.received[-1]["temperature"] == 0.3


async def test_async_create(server: InProcessPuente, key: str, fake: FakeOpenAI) -> None:
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=key, max_retries=0) as sdk:
        response = await sdk.responses.create(model="fake-model", input="hola", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Hello! You"
    assert fake.state.received[-1]["max_completion_tokens"] == 2


def test_stream_helper_gets_every_event_and_the_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model="fake-model", input=QUESTION) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == f"Hello! You said: {QUESTION}"
    assert final.usage is not None and final.usage.total_tokens > 0
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_stream_true_raw_events_validate(client: openai.OpenAI) -> None:
    stream = client.responses.create(model="fake-model", input="hi", stream=True)
    events = [EVENTS.validate_python(e.model_dump()) for e in stream]
    assert {e.response.id for e in events if hasattr(e, "response")} == {events[0].response.id}
    assert events[-1].type == "response.completed"


def test_function_tool_round_trip_by_previous_response_id(
    client: openai.OpenAI, fake: FakeOpenAI
) -> None:
    first = client.responses.create(
        model="fake-model",
        input="Weather in Lima?",
        tools=[WEATHER],
        extra_body={"fake": {"tool_calls": 1}},
    )
    call = first.output[0]
    assert call.type == "function_call"
    assert (call.name, call.arguments) == ("get_weather", '{"city":"Lima0"}')
    assert fake.state.received[-1]["tools"][0]["function"]["name"] == "get_weather"
    second = client.responses.create(
        model="fake-model",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "22 C"}],
        tools=[WEATHER],
    )
    assert second.status == "completed" and second.previous_response_id == first.id
    messages = fake.state.received[-1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["tool_calls"][0]["id"] == call.call_id
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "22 C"}


def test_streamed_tool_call_round_trip_without_storing(
    client: openai.OpenAI, fake: FakeOpenAI
) -> None:
    with client.responses.stream(
        model="fake-model",
        input="Weather?",
        tools=[WEATHER],
        store=False,
        extra_body={"fake": {"tool_calls": 2}},
    ) as stream:
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert [c.arguments for c in calls] == ['{"city":"Lima0"}', '{"city":"Lima1"}']
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(final.id)
    outputs: list[Any] = [
        {"type": "function_call_output", "call_id": c.call_id, "output": "sunny"} for c in calls
    ]
    answer = client.responses.create(
        model="fake-model",
        input=[{"role": "user", "content": "Weather?"}, *final.output, *outputs],  # type: ignore[list-item]
        tools=[WEATHER],
    )
    assert answer.status == "completed"
    roles = [m["role"] for m in fake.state.received[-1]["messages"]]
    assert roles == ["user", "assistant", "tool", "tool"]


def test_previous_response_id_continues_the_conversation(
    client: openai.OpenAI, fake: FakeOpenAI
) -> None:
    first = client.responses.create(model="fake-model", input="My name is Ana.")
    second = client.responses.create(
        model="fake-model", input="What is my name?", previous_response_id=first.id
    )
    assert fake.state.received[-1]["messages"] == [
        {"role": "user", "content": "My name is Ana."},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "What is my name?"},
    ]
    items = client.responses.input_items.list(second.id)
    assert [item.type for item in items.data] == ["message"]


def test_json_schema_through_text_format(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    class City(BaseModel):
        city: str

    parsed = client.responses.parse(
        model="fake-model",
        input="Capital of Peru as JSON",
        text_format=City,
        extra_body={"fake": {"reply": '{"city": "Lima"}'}},
    )
    assert parsed.output_parsed == City(city="Lima")
    sent = fake.state.received[-1]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "City"


def test_a_persona_answers_by_its_name(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    response = client.responses.create(model="historia", input="Who was Pachacutec?")
    assert response.model == "historia"
    assert fake.state.received[-1]["messages"][0]["content"].startswith("Eres historiador.")


def test_skipped_tools_are_named_in_a_header(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="fake-model",
        input="hi",
        tools=[{"type": "web_search"}, WEATHER, {"type": "local_shell"}],  # type: ignore[list-item]
    )
    assert raw.headers["x-puente-skipped-tools"] == "web_search,local_shell"
    assert [t["function"]["name"] for t in fake.state.received[-1]["tools"]] == ["get_weather"]


def test_skipped_tools_header_on_a_stream_too(server: InProcessPuente, key: str) -> None:
    body = {"model": "fake-model", "input": "hi", "stream": True, "tools": [{"type": "mcp"}]}
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("POST", server.base_url + "/responses", json=body, headers=headers) as r:
        assert r.headers["x-puente-skipped-tools"] == "mcp"
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.read().decode().rstrip().split("\n")[-2] == "event: response.completed"


def test_another_key_cannot_see_or_delete_a_response(
    server: InProcessPuente, client: openai.OpenAI
) -> None:
    mine = client.responses.create(model="fake-model", input="secret")
    with openai.OpenAI(base_url=server.base_url, api_key=new_key(server), max_retries=0) as other:
        with pytest.raises(openai.NotFoundError) as caught:
            other.responses.retrieve(mine.id)
        assert caught.value.body == {
            "message": f"Response with id '{mine.id}' not found.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.create(model="fake-model", input="x", previous_response_id=mine.id)
    client.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(mine.id)


def test_errors_come_in_openais_envelope(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="no-such-model", input="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.create(model="fake-model", input="x", previous_response_id="resp_nope")
    assert unknown.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="fake-model", input="x", max_output_tokens=0)
    assert bad.value.body["param"] == "max_output_tokens"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=str(client.base_url), api_key="wrong", max_retries=0
        ).responses.create(model="fake-model", input="x")


def test_a_failure_mid_stream_ends_with_response_failed(server: InProcessPuente, key: str) -> None:
    body = {"model": "fake-model", "input": "hi", "stream": True, "fake": {"fail_after": 3}}
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("POST", server.base_url + "/responses", json=body, headers=headers) as r:
        assert r.status_code == 200
        text = r.read().decode()
    frames = [f for f in text.split("\n\n") if f]
    events = [orjson.loads(f.split("data: ", 1)[1]) for f in frames]
    assert [f.split("\n")[0] for f in frames] == [f"event: {e['type']}" for e in events]
    for event in events:
        EVENTS.validate_python(event)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"
    # The request is recorded as failed (metrics, usage row), not as a 200.
    line = [ln for ln in server.logs().splitlines() if "responses model=fake-model" in ln][-1]
    assert "stream=True status=502" in line


@pytest.fixture(scope="module")
def personas(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    config = {"auth": "none", **persona_config(fake_upstream)}
    with InProcessPuente(config, tmp_path_factory.mktemp("responses-personas")) as proc:
        yield proc


def test_a_personas_farewell_is_said_whole_and_streamed(
    personas: InProcessPuente, fake: FakeOpenAI
) -> None:
    with openai.OpenAI(base_url=personas.base_url, api_key="unused", max_retries=0) as client:
        marker = {"fake": {"reply": f"{MARKER} Adiós."}}
        whole = client.responses.create(model="matematicas", input="¿Fútbol?", extra_body=marker)
        with client.responses.stream(
            model="matematicas", input="¿Fútbol?", extra_body=marker
        ) as stream:
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            streamed = stream.get_final_response()
    assert whole.output_text == FAREWELL
    assert streamed.output_text == "".join(deltas) == FAREWELL
    assert fake.state.received[-1]["messages"][0]["content"].startswith(MATH_SYSTEM)
