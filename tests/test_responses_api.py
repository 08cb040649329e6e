"""``/v1/responses`` through Puente, with the openai SDK (sync, async, streaming) against the fake
upstream: answers, tools, conversations, stored responses per key, and errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.responses import Response

from tests.access_support import ADMIN, create_key
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TOOL_CALL: Any = {"fake": {"tool_calls": 1}}


def config(fake: FakeOpenAI) -> dict[str, Any]:
    return {
        "models": [
            {"name": "fake-model", "provider": "openai_compatible", "base_url": fake.base_url}
        ],
        "personas": [
            {"name": "helper", "model": "fake-model", "system": "You are a careful helper."}
        ],
    }


@pytest.fixture(scope="module")
def puente(fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    workdir = tmp_path_factory.mktemp("responses")
    server = InProcessPuente(config(fake_upstream), workdir, env={"PUENTE_ADMIN_KEY": ADMIN})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keys(puente: InProcessPuente) -> dict[str, str]:
    return {name: create_key(puente, f"responses-{name}") for name in ("alice", "bob")}


@pytest.fixture
def client(puente: InProcessPuente, keys: dict[str, str]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=puente.base_url, api_key=keys["alice"], max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def bob(puente: InProcessPuente, keys: dict[str, str]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=puente.base_url, api_key=keys["bob"], max_retries=0) as sdk:
        yield sdk


def last_sent(fake: FakeOpenAI) -> dict[str, Any]:
    return fake.state.received[-1]


def test_create_answers_a_response_and_sends_instructions_as_system(
    client: openai.OpenAI, fake_upstream: FakeOpenAI
) -> None:
    response = client.responses.create(
        model="fake-model", input="Capital of Peru?", instructions="Be terse.", temperature=0.2
    )
    Response.model_validate(response.model_dump())
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text == "Hello! You said: Capital of Peru?"
    assert response.model == "fake-model" and response.temperature == 0.2
    assert response.usage is not None and response.usage.output_tokens > 0
    sent = last_sent(fake_upstream)
    assert sent["messages"][0] == {"role": "system", "content": "Be terse."}
    assert sent["messages"][1] == {"role": "user", "content": "Capital of Peru?"}


async def test_async_client_creates_and_retrieves(
    puente: InProcessPuente, keys: dict[str, str]
) -> None:
    async with openai.AsyncOpenAI(base_url=puente.base_url, api_key=keys["alice"]) as client:
        response = await client.responses.create(model="fake-model", input="async hello")
        assert response.output_text == "Hello! You said: async hello"
        again = await client.responses.retrieve(response.id)
        assert again.output_text == response.output_text and again.id == response.id


def test_stream_helper_gives_the_typed_events_and_a_final_response(
    client: openai.OpenAI,
) -> None:
    with client.responses.stream(model="fake-model", input="stream me") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed"
    assert final.output_text == "Hello! You said: stream me"
    assert final.usage is not None and final.usage.total_tokens > 0
    stored = client.responses.retrieve(final.id)  # stored once the stream ended
    assert stored.output_text == final.output_text


def test_stream_true_with_tool_calls_keeps_every_argument(client: openai.OpenAI) -> None:
    second = {**WEATHER, "name": "get_time"}
    events = list(
        client.responses.create(
            model="fake-model",
            input="weather and time?",
            tools=[WEATHER, second],
            stream=True,
            extra_body={"fake": {"tool_calls": 2}},
        )
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [e.arguments for e in done] == ['{"city":"Lima0"}', '{"city":"Lima1"}']
    final = events[-1]
    assert final.type == "response.completed"
    calls = [i for i in final.response.output if i.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather", "get_time"]


def test_a_function_tool_round_trip_continues_with_previous_response_id(
    client: openai.OpenAI, fake_upstream: FakeOpenAI
) -> None:
    first = client.responses.create(
        model="fake-model", input="Weather in Lima?", tools=[WEATHER], extra_body=TOOL_CALL
    )
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"city":"Lima0"}'
    second = client.responses.create(
        model="fake-model",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assert second.previous_response_id == first.id
    assert second.output_text.startswith("Hello!")
    messages = last_sent(fake_upstream)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["tool_calls"][0]["id"] == call.call_id
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}
    items = client.responses.input_items.list(second.id, order="asc")
    assert [i.type for i in items.data] == ["message", "function_call", "function_call_output"]
    page = client.responses.input_items.list(second.id, limit=1)  # newest first
    assert [i.type for i in page.data] == ["function_call_output"] and page.has_more
    rest = client.responses.input_items.list(second.id, limit=5, after=page.data[0].id)
    assert [i.type for i in rest.data] == ["function_call", "message"] and not rest.has_more


def test_text_format_json_schema_becomes_response_format(
    client: openai.OpenAI, fake_upstream: FakeOpenAI
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    fmt: Any = {"type": "json_schema", "name": "place", "schema": schema, "strict": True}
    response = client.responses.create(
        model="fake-model",
        input="A city?",
        text={"format": fmt},
        extra_body={"fake": {"reply": '{"city":"Lima"}'}},
    )
    assert response.output_text == '{"city":"Lima"}'
    assert response.text is not None and response.text.format.type == "json_schema"
    assert last_sent(fake_upstream)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": schema, "strict": True},
    }


def test_a_persona_name_is_a_model(client: openai.OpenAI, fake_upstream: FakeOpenAI) -> None:
    response = client.responses.create(model="helper", input="Hi")
    assert response.model == "helper"
    messages = last_sent(fake_upstream)["messages"]
    assert "careful helper" in messages[0]["content"]


def test_hosted_tools_are_skipped_and_named_in_a_header(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="fake-model",
        input="Hi",
        tools=[
            WEATHER,
            {"type": "web_search"},
            {"type": "image_generation"},
            {"type": "namespace", "name": "útil\r\nx-evil: 1", "tools": []},
        ],
    )
    assert raw.headers["x-puente-skipped-tools"] == (
        "web_search, image_generation, %C3%BAtil%0D%0Ax-evil:%201"
    )
    assert "x-evil" not in raw.headers
    assert raw.parse().output_text.startswith("Hello!")


def test_a_stream_names_its_skipped_tools_in_a_header_too(client: openai.OpenAI) -> None:
    with client.responses.with_streaming_response.create(
        model="fake-model", input="Hi", tools=[{"type": "file_search"}], stream=True
    ) as raw:
        assert raw.headers["x-puente-skipped-tools"] == "file_search"
        assert raw.headers["content-type"].startswith("text/event-stream")
        body = b"".join(raw.iter_bytes())
    assert body.startswith(b"event: response.created\ndata: ")
    assert b"event: response.completed" in body


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    response = client.responses.create(model="fake-model", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_delete_removes_a_stored_response(client: openai.OpenAI) -> None:
    response = client.responses.create(model="fake-model", input="delete me")
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)


def test_another_keys_response_is_not_found(client: openai.OpenAI, bob: openai.OpenAI) -> None:
    mine = client.responses.create(model="fake-model", input="private")
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.input_items.list(mine.id)
    with pytest.raises(openai.NotFoundError) as caught:
        bob.responses.create(model="fake-model", input="x", previous_response_id=mine.id)
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(mine.id)
    assert client.responses.retrieve(mine.id).id == mine.id


def test_the_admin_reads_and_deletes_any_keys_response(
    client: openai.OpenAI, puente: InProcessPuente
) -> None:
    mine = client.responses.create(model="fake-model", input="audited")
    with openai.OpenAI(base_url=puente.base_url, api_key=ADMIN, max_retries=0) as admin:
        assert admin.responses.retrieve(mine.id).output_text == mine.output_text
        admin.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(mine.id)


def test_unknown_model_and_unknown_previous_response_are_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as model:
        client.responses.create(model="no-such-model", input="Hi")
    assert model.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as previous:
        client.responses.create(model="fake-model", input="Hi", previous_response_id="resp_nope")
    assert "resp_nope" in previous.value.message


def test_bad_input_is_a_400_in_openais_envelope(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="fake-model", input=[{"role": "robot", "content": "x"}])  # type: ignore[list-item]
    assert caught.value.body["param"] == "input[0].role"  # type: ignore[index]


def test_a_failure_mid_stream_ends_with_response_failed(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model="fake-model",
            input="one two three four five",
            stream=True,
            extra_body={"fake": {"fail_after": 2}},
        )
    )
    assert events[0].type == "response.created"
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(events[0].response.id)


def test_stored_responses_survive_a_restart(fake_upstream: FakeOpenAI, tmp_path: Path) -> None:
    first = InProcessPuente(config(fake_upstream), tmp_path).start()
    try:
        with openai.OpenAI(base_url=first.base_url, api_key="none", max_retries=0) as client:
            response = client.responses.create(model="fake-model", input="remember me")
    finally:
        first.stop()
    second = InProcessPuente(config(fake_upstream), tmp_path).start()
    try:
        client = openai.OpenAI(base_url=second.base_url, api_key="none", max_retries=0)
        with client:
            assert client.responses.retrieve(response.id).output_text == response.output_text
            follow = client.responses.create(
                model="fake-model", input="and now?", previous_response_id=response.id
            )
        assert follow.output_text == "Hello! You said: and now?"
    finally:
        second.stop()


def test_json_nested_too_deep_to_send_on_is_a_400(client: openai.OpenAI) -> None:
    schema: Any = {"type": "string"}
    for _ in range(300):
        schema = {"type": "array", "items": schema}
    tool = {**WEATHER, "parameters": schema}
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="fake-model", input="Hi", tools=[tool])
    assert "nested too deeply" in caught.value.message


async def test_async_streaming_with_the_stream_helper(
    puente: InProcessPuente, keys: dict[str, str]
) -> None:
    client = openai.AsyncOpenAI(base_url=puente.base_url, api_key=keys["alice"])
    async with (
        client,
        client.responses.stream(model="fake-model", input="async stream") as stream,
    ):
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Hello! You said: async stream"


def test_input_tokens_counts_the_conversation(client: openai.OpenAI) -> None:
    short = client.responses.input_tokens.count(model="fake-model", input="Hi")
    assert short.object == "response.input_tokens" and short.input_tokens > 0
    first = client.responses.create(model="fake-model", input="A longer first question here")
    longer = client.responses.input_tokens.count(
        model="fake-model", input="Hi", previous_response_id=first.id
    )
    assert longer.input_tokens > short.input_tokens  # the earlier turn counts too
    with pytest.raises(openai.NotFoundError):
        client.responses.input_tokens.count(model="no-such-model", input="Hi")
