"""``/v1/messages`` through the real anthropic SDK (sync, async, ``messages.stream``, tools,
images, count_tokens, models, typed errors) against Puente in the test process, in front of the
fake OpenAI-compatible upstream, a persona, and the fake Anthropic vendor."""

from __future__ import annotations

import asyncio
import base64
import gzip
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, MessageParam, ToolParam

from tests.cloud_fixtures import ANTHROPIC_KEY
from tests.fakes.anthropic_vendor import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.vendor_server import PNG
from tests.inprocess import InProcessPuente
from tests.support import free_port

ADMIN = "admin-key-for-the-messages-tests-0123456789"
FAREWELL = "Lo siento, no lo sé. ¡Hasta pronto!"
USER: list[MessageParam] = [{"role": "user", "content": "What is the capital of Peru?"}]
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    fake.programs["tools-model"] = {"tool_calls": 1}
    fake.programs["two-tools-model"] = {"tool_calls": 2}
    fake.programs["broken-model"] = {"fail_after": 3}
    fake.programs["busy-model"] = {"status": 503}
    fake.programs["historia-model"] = {"reply": "[[FAREWELL]]"}
    fake.programs["slow-model"] = {"delay": 0.5, "reply": "uno dos tres cuatro cinco seis siete"}
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def puente(
    upstream: FakeOpenAI, anthropic_vendor: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    def local(name: str, **extra: Any) -> dict[str, Any]:
        entry = {"name": name, "provider": "openai_compatible", "base_url": upstream.base_url}
        return {**entry, "retries": 0, **extra}

    config = {
        "models": [
            local("fake-model"),
            local("tools-model"),
            local("two-tools-model"),
            local("broken-model"),
            local("busy-model"),
            local("historia-model"),
            local("slow-model"),
            local("vllm-model", provider="vllm", model="fake-model"),
            local("vllm-falls-back", provider="vllm", model="fake-model", fallbacks=["fake-model"]),
            local("down", base_url=f"http://127.0.0.1:{free_port()}/v1"),
            {
                "name": "claude-sonnet",
                "provider": "anthropic",
                "base_url": anthropic_vendor.url,
                "model": "claude-sonnet-test",
                "api_key": "${PUENTE_TEST_MESSAGES_ANTHROPIC_KEY}",
                "retries": 0,
            },
            {
                "name": "claude-down",
                "provider": "anthropic",
                "base_url": f"http://127.0.0.1:{free_port()}",
                "api_key": "${PUENTE_TEST_MESSAGES_ANTHROPIC_KEY}",
                "retries": 0,
                "fallbacks": ["fake-model"],
            },
        ],
        "personas": [
            {
                "name": "historia",
                "model": "historia-model",
                "system": "Eres un historiador del Perú.",
                "farewell": FAREWELL,
            },
            {"name": "claude-historia", "model": "claude-sonnet", "system": "Eres historiador."},
        ],
    }
    env = {"PUENTE_ADMIN_KEY": ADMIN, "PUENTE_TEST_MESSAGES_ANTHROPIC_KEY": ANTHROPIC_KEY}
    with InProcessPuente(config, tmp_path_factory.mktemp("messages"), env=env) as server:
        yield server


@pytest.fixture(scope="module")
def key(puente: InProcessPuente) -> str:
    made = httpx.post(
        puente.url + "/admin/keys",
        json={"name": "messages-tests"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert made.status_code == 201, made.text
    secret: str = made.json()["key"]
    return secret


@pytest.fixture
def fake(upstream: FakeOpenAI) -> FakeOpenAI:
    upstream.reset()
    return upstream


@pytest.fixture
def client(puente: InProcessPuente, key: str) -> Iterator[anthropic.Anthropic]:
    """The anthropic SDK pointed at Puente as the README says (the key in ``x-api-key``)."""
    with anthropic.Anthropic(base_url=puente.url, api_key=key, max_retries=0) as sdk:
        yield sdk


# -- answers -----------------------------------------------------------------------------------


def test_create_returns_a_message(client: anthropic.Anthropic, fake: FakeOpenAI) -> None:
    message = client.messages.create(
        model="fake-model",
        max_tokens=100,
        system="Be terse.",
        messages=USER,
        # This SDK has no sampling arguments (newer API versions refuse them); older clients
        # send them, and Puente passes them on.
        extra_body={"temperature": 0.3, "top_k": 7},
    )
    assert isinstance(message, Message)
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == "fake-model"
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [
        ("text", "Hello! You said: What is the capital of Peru?")
    ]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 9  # words
    assert message._request_id  # the SDK read Puente's request-id header

    sent = fake.state.received[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "What is the capital of Peru?"},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["top_k"]) == (100, 0.3, 7)


def test_max_tokens_and_stop_sequences(client: anthropic.Anthropic, fake: FakeOpenAI) -> None:
    cut = client.messages.create(model="fake-model", max_tokens=2, messages=USER)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 2
    stopped = client.messages.create(
        model="fake-model", max_tokens=50, messages=USER, stop_sequences=["capital"]
    )
    assert fake.state.received[-1]["stop"] == ["capital"]
    assert stopped.content[0].type == "text"
    assert stopped.content[0].text == "Hello! You said: What is the "


def test_async_client(puente: InProcessPuente, key: str) -> None:
    async def ask() -> Message:
        async with anthropic.AsyncAnthropic(base_url=puente.url, api_key=key, max_retries=0) as sdk:
            return await sdk.messages.create(model="fake-model", max_tokens=50, messages=USER)

    message = asyncio.run(ask())
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("Hello! You said:")


def test_bearer_token_and_beta_headers_are_accepted(puente: InProcessPuente, key: str) -> None:
    with anthropic.Anthropic(
        base_url=puente.url,
        auth_token=key,
        max_retries=0,
        default_headers={"anthropic-beta": "some-future-beta-2099-01-01"},
    ) as sdk:
        message = sdk.beta.messages.create(  # POST /v1/messages?beta=true
            model="fake-model", max_tokens=20, messages=USER
        )
    assert message.content[0].type == "text"


# -- streaming ---------------------------------------------------------------------------------


def test_messages_stream(client: anthropic.Anthropic, fake: FakeOpenAI) -> None:
    with client.messages.stream(model="fake-model", max_tokens=100, messages=USER) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) > 3  # word by word, as the upstream sent it
    assert "".join(texts) == "Hello! You said: What is the capital of Peru?"
    assert final.stop_reason == "end_turn" and final.model == "fake-model"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens == len(texts)


@pytest.mark.parametrize(("model", "asked"), [("vllm-model", True), ("vllm-falls-back", False)])
def test_vllm_is_asked_to_count_as_it_streams(
    client: anthropic.Anthropic, fake: FakeOpenAI, model: str, asked: bool
) -> None:
    with client.messages.stream(model=model, max_tokens=100, messages=USER) as stream:
        assert stream.get_final_message().content[0].type == "text"
    options = fake.state.received[-1]["stream_options"]
    # Only where no fallback could carry the vLLM option to a server that refuses it.
    assert options.get("continuous_usage_stats", False) is asked


def test_raw_stream_event_order(client: anthropic.Anthropic, fake: FakeOpenAI) -> None:
    events = client.messages.create(
        model="two-tools-model", max_tokens=100, messages=USER, tools=[WEATHER], stream=True
    )
    kinds = [(e.type, getattr(e, "index", None)) for e in events]
    assert kinds == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("message_delta", None),
        ("message_stop", None),
    ]


def test_tool_use_round_trip_streamed(client: anthropic.Anthropic, fake: FakeOpenAI) -> None:
    asked: list[MessageParam] = [{"role": "user", "content": "Weather in Lima?"}]
    with client.messages.stream(
        model="tools-model", max_tokens=100, messages=asked, tools=[WEATHER]
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    (call,) = first.content
    assert call.type == "tool_use" and call.name == "get_weather"
    assert call.input == {"city": "Lima0"}

    follow_up: list[MessageParam] = [
        *asked,
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 °C"}],
        },
    ]
    second = client.messages.create(
        model="tools-model", max_tokens=100, messages=follow_up, tools=[WEATHER]
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    sent = fake.state.received[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "18 °C"}


def test_error_after_the_stream_began(client: anthropic.Anthropic, fake: FakeOpenAI) -> None:
    stream = client.messages.stream(model="broken-model", max_tokens=100, messages=USER)
    with pytest.raises(anthropic.APIStatusError) as caught, stream as events:
        for _ in events:
            pass
    assert caught.value.body is not None
    assert caught.value.type == "api_error"  # Anthropic's envelope, read by the SDK


def test_leaving_a_stream_closes_the_upstream(
    client: anthropic.Anthropic, fake: FakeOpenAI
) -> None:
    with client.messages.stream(model="slow-model", max_tokens=100, messages=USER) as stream:
        for text in stream.text_stream:
            assert text == "uno"
            break  # the client goes away after the first words
    deadline = time.monotonic() + 10
    while not fake.state.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.state.closed  # Puente closed its upstream connection too


# -- images, personas, Claude ------------------------------------------------------------------


def test_image_blocks_reach_the_upstream(client: anthropic.Anthropic, fake: FakeOpenAI) -> None:
    data = base64.b64encode(PNG).decode()
    message = client.messages.create(
        model="fake-model",
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": data},
                    },
                    {"type": "text", "text": "Describe it."},
                ],
            }
        ],
    )
    assert message.content[0].type == "text"
    parts = fake.state.received[-1]["messages"][0]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def test_persona_as_model_with_its_farewell(client: anthropic.Anthropic, fake: FakeOpenAI) -> None:
    message = client.messages.create(model="historia", max_tokens=50, messages=USER)
    assert message.model == "historia"
    assert message.content[0].type == "text" and message.content[0].text == FAREWELL
    assert fake.state.received[-1]["messages"][0]["role"] == "system"
    assert "historiador" in fake.state.received[-1]["messages"][0]["content"]
    with client.messages.stream(model="historia", max_tokens=50, messages=USER) as stream:
        assert "".join(stream.text_stream) == FAREWELL


def test_claude_gets_the_body_as_it_came(
    client: anthropic.Anthropic, claude_fake: FakeAnthropic
) -> None:
    system: Any = [
        {"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}},
    ]
    message = client.messages.create(
        model="claude-sonnet",
        max_tokens=64,
        system=system,
        messages=USER,
        extra_headers={"anthropic-beta": "some-beta-2099-01-01"},
    )
    assert message.model == "claude-sonnet"
    assert message.id.startswith("msg_fake")  # Anthropic's own Message, relayed
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello! You said: What is the capital of Peru?"
    # Anthropic's own usage, cache reads apart from input_tokens.
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (11, 2)
    sent = claude_fake.last
    assert sent.body == {
        "model": "claude-sonnet-test",  # the only change
        "max_tokens": 64,
        "system": system,  # cache_control and all
        "messages": USER,
    }
    assert sent.headers["anthropic-beta"] == "some-beta-2099-01-01"


def test_claude_thinking_and_its_signature_survive(
    client: anthropic.Anthropic, claude_fake: FakeAnthropic
) -> None:
    claude_fake.program("claude-sonnet-test", thinking=True)
    thinking: Any = {"type": "enabled", "budget_tokens": 2048}
    message = client.messages.create(
        model="claude-sonnet", max_tokens=64, messages=USER, thinking=thinking
    )
    block = message.content[0]
    assert block.type == "thinking" and block.signature == "sig-fake"
    assert claude_fake.last.body["thinking"] == thinking

    with client.messages.stream(
        model="claude-sonnet", max_tokens=64, messages=USER, thinking=thinking
    ) as stream:
        kinds = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "signature_delta" in kinds and "thinking_delta" in kinds
    assert final.model == "claude-sonnet"
    assert final.content[0].type == "thinking" and final.content[0].signature == "sig-fake"
    assert final.content[1].type == "text" and final.content[1].text == message.content[1].text


def test_claude_tool_round_trip_streamed(
    client: anthropic.Anthropic, claude_fake: FakeAnthropic
) -> None:
    asked: list[MessageParam] = [{"role": "user", "content": "Weather in Lima?"}]
    with client.messages.stream(
        model="claude-sonnet", max_tokens=64, messages=asked, tools=[WEATHER]
    ) as stream:
        first = stream.get_final_message()
    (call,) = first.content
    assert call.type == "tool_use" and call.input == {"city": "Lima0"}
    follow_up: list[MessageParam] = [
        *asked,
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 °C"}],
        },
    ]
    second = client.messages.create(
        model="claude-sonnet", max_tokens=64, messages=follow_up, tools=[WEATHER]
    )
    assert second.content[0].type == "text"
    assert second.content[0].text == "The tools said: 18 °C"


def test_claude_falling_back_to_another_model_is_translated(
    client: anthropic.Anthropic, fake: FakeOpenAI
) -> None:
    message = client.messages.create(model="claude-down", max_tokens=64, messages=USER)
    assert message.model == "fake-model"  # who answered, as for chat
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello! You said: What is the capital of Peru?"
    with client.messages.stream(model="claude-down", max_tokens=64, messages=USER) as stream:
        assert "".join(stream.text_stream) == message.content[0].text
    assert fake.state.received[-1]["messages"] == [{"role": "user", "content": USER[0]["content"]}]


def test_a_persona_on_claude_is_translated_with_its_prompt(
    client: anthropic.Anthropic, claude_fake: FakeAnthropic
) -> None:
    message = client.messages.create(model="claude-historia", max_tokens=64, messages=USER)
    assert message.model == "claude-historia"
    assert message.content[0].type == "text"
    system = claude_fake.last.body["system"]
    assert "Eres historiador." in system[0]["text"]


def test_claude_errors_keep_anthropic_types(
    client: anthropic.Anthropic, claude_fake: FakeAnthropic
) -> None:
    claude_fake.program("claude-sonnet-test", status=529)
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="claude-sonnet", max_tokens=64, messages=USER)
    assert (caught.value.status_code, caught.value.type) == (529, "overloaded_error")
    claude_fake.program("claude-sonnet-test", error_after=4)
    stream = client.messages.stream(model="claude-sonnet", max_tokens=64, messages=USER)
    with pytest.raises(anthropic.APIStatusError) as mid, stream as events:
        for _ in events:
            pass
    assert mid.value.type == "overloaded_error"


# -- count_tokens and models -------------------------------------------------------------------


def test_count_tokens(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.count_tokens(model="fake-model", messages=USER)
    assert raw.headers["x-puente-token-count"] == "estimate"  # no tokenizer behind this model
    short = raw.parse()
    longer = client.messages.count_tokens(
        model="fake-model", messages=USER, system="Be terse. " * 100, tools=[WEATHER]
    )
    assert 0 < short.input_tokens < longer.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=USER)


def test_count_tokens_on_claude_is_anthropics_own(
    client: anthropic.Anthropic, claude_fake: FakeAnthropic
) -> None:
    raw = client.messages.with_raw_response.count_tokens(
        model="claude-sonnet", messages=USER, system="Be terse."
    )
    assert raw.headers["x-puente-token-count"] == "exact"
    assert claude_fake.last.path == "/v1/messages/count_tokens"
    assert claude_fake.last.body == {
        "model": "claude-sonnet-test",
        "messages": USER,
        "system": "Be terse.",
    }
    answer = client.messages.create(
        model="claude-sonnet", max_tokens=10, messages=USER, system="Be terse."
    )
    assert raw.parse().input_tokens == answer.usage.input_tokens  # what the prompt then cost
    persona = client.messages.count_tokens(model="claude-historia", messages=USER)
    assert "Eres historiador." in claude_fake.last.body["system"][0]["text"]
    assert persona.input_tokens > 0


def test_models_in_anthropic_shape(client: anthropic.Anthropic, puente: InProcessPuente) -> None:
    ids = [model.id for model in client.models.list()]
    assert {"fake-model", "claude-sonnet", "historia"} <= set(ids)
    first = client.models.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    one = client.models.retrieve("fake-model")
    assert one.type == "model" and one.display_name == "fake-model"
    assert one.created_at == datetime.fromtimestamp(puente.runtime.started_at, UTC)


def test_openai_shape_without_anthropic_version(puente: InProcessPuente, key: str) -> None:
    body = httpx.get(puente.base_url + "/models", headers={"x-api-key": key}).json()
    assert body["object"] == "list" and body["data"][0]["object"] == "model"


# -- errors ------------------------------------------------------------------------------------


def test_unknown_model_is_not_found_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=10, messages=USER)
    assert caught.value.type == "not_found_error"
    assert caught.value.request_id
    assert "no-such-model" in caught.value.message


def test_wrong_key_is_authentication_error(puente: InProcessPuente) -> None:
    sdk = anthropic.Anthropic(base_url=puente.url, api_key="sk-wrong", max_retries=0)
    with sdk, pytest.raises(anthropic.AuthenticationError) as caught:
        sdk.messages.create(model="fake-model", max_tokens=10, messages=USER)
    assert caught.value.type == "authentication_error"


def test_bad_body_is_bad_request_naming_the_field(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="fake-model",
            max_tokens=10,
            messages=[{"role": "tool", "content": "x"}],  # type: ignore[typeddict-item]
        )
    assert caught.value.type == "invalid_request_error"
    assert "messages.0.role" in caught.value.message


def test_a_body_too_deep_to_forward_is_bad_request(client: anthropic.Anthropic) -> None:
    deep: dict[str, Any] = {}
    for _ in range(400):  # JSON parses 1,024 levels, orjson writes 254
        deep = {"a": deep}
    tool: Any = {"name": "f", "input_schema": deep}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="fake-model", max_tokens=10, messages=USER, tools=[tool])
    assert "nested too deeply" in caught.value.message
    call: Any = {"type": "tool_use", "id": "t1", "name": "f", "input": deep}
    result: Any = {"type": "tool_result", "tool_use_id": "t1", "content": "x"}
    with pytest.raises(anthropic.BadRequestError) as inside:
        client.messages.create(
            model="fake-model",
            max_tokens=10,
            messages=[
                *USER,
                {"role": "assistant", "content": [call]},
                {"role": "user", "content": [result]},
            ],
        )
    assert "messages.1.content.0.input: nested too deeply" in inside.value.message


def test_upstream_overloaded_is_overloaded_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="busy-model", max_tokens=10, messages=USER)
    assert caught.value.status_code == 529
    assert caught.value.type == "overloaded_error"


def test_unreachable_upstream_is_api_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="down", max_tokens=10, messages=USER)
    assert caught.value.type == "api_error"
    assert "Traceback" not in caught.value.message


def test_errors_outside_the_door_are_anthropics_too(
    puente: InProcessPuente, client: anthropic.Anthropic, key: str
) -> None:
    # A body over the size limit, a path under /v1/messages that does not exist, and /v1/models
    # asked the anthropic SDK's way: each in Anthropic's envelope, so the SDK raises its type.
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    big = httpx.post(
        puente.url + "/v1/messages",
        content=b"x" * (puente_body_limit(puente) + 1),
        headers={**headers, "content-type": "application/json"},
    )
    assert big.status_code == 413
    assert big.json()["type"] == "error"
    assert big.json()["error"]["type"] == "request_too_large"
    packed = httpx.post(
        puente.url + "/v1/messages",
        content=gzip.compress(b"{}"),
        headers={**headers, "content-type": "application/json", "content-encoding": "gzip"},
    )
    assert packed.status_code == 415
    assert packed.json()["type"] == "error"
    assert packed.json()["error"]["type"] == "invalid_request_error"
    assert "Content-Encoding 'gzip'" in packed.json()["error"]["message"]
    missing = httpx.post(puente.url + "/v1/messages/nothing-here", json={}, headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def puente_body_limit(puente: InProcessPuente) -> int:
    return puente.runtime.settings.config.server.max_body_bytes
