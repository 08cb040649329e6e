"""Fixtures for the cloud vendor tests: the fake vendors and one Puente in front of all three.

Registered in ``tests/conftest.py``. Keys come from environment variables, as in production; the
canary values are recognisable so ``test_cloud_secrets.py`` can prove they never leak.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessage

from tests.fakes.anthropic_vendor import FakeAnthropic
from tests.fakes.gemini_vendor import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente
from tests.support import free_port

ANTHROPIC_KEY = "sk-ant-CANARY-anthropic-0123456789"
GEMINI_KEY = "AIza-CANARY-gemini-0123456789"
OPENAI_KEY = "sk-CANARY-openai-0123456789"
WRONG_KEY = "sk-CANARY-wrong-key-9876543210"
KEYS = (ANTHROPIC_KEY, GEMINI_KEY, OPENAI_KEY, WRONG_KEY)
ENV = {
    "PUENTE_TEST_ANTHROPIC_KEY": ANTHROPIC_KEY,
    "PUENTE_TEST_GEMINI_KEY": GEMINI_KEY,
    "PUENTE_TEST_OPENAI_KEY": OPENAI_KEY,
    "PUENTE_TEST_WRONG_KEY": WRONG_KEY,
}


def _no_retries() -> dict[str, Any]:
    # Error tests must see each vendor answer once; retries are the router's business and have
    # their own tests (tests/test_faults*.py).
    return {"retries": 0}


def cloud_config(anthropic: FakeAnthropic, gemini: FakeGemini, openai_fake: FakeOpenAI) -> Any:
    dead = f"http://127.0.0.1:{free_port()}"
    quick = {"connect": 2, "read": 0.5}

    def claude(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "anthropic",
            "base_url": anthropic.url,
            "api_key": "${PUENTE_TEST_ANTHROPIC_KEY}",
            **_no_retries(),
            **extra,
        }

    def gemini_entry(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "gemini",
            "base_url": gemini.url,
            "api_key": "${PUENTE_TEST_GEMINI_KEY}",
            **_no_retries(),
            **extra,
        }

    def gpt(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "openai",
            "base_url": openai_fake.base_url,
            "api_key": "${PUENTE_TEST_OPENAI_KEY}",
            **_no_retries(),
            **extra,
        }

    return {
        "server": {"images": {"allow_networks": ["127.0.0.1/32"], "max_bytes": 100_000}},
        "models": [
            claude("claude-sonnet", model="claude-sonnet-test"),
            claude("claude/*"),
            claude(
                "claude-legacy-api",
                model="claude-sonnet-test",
                headers={"anthropic-version": "2023-06-01"},
            ),
            claude("claude-short", model="claude-sonnet-test", max_tokens_default=3),
            claude(
                "claude-wrong-key", model="claude-sonnet-test", api_key="${PUENTE_TEST_WRONG_KEY}"
            ),
            claude("claude-slow", model="slow", timeouts=quick),
            claude("claude-down", model="claude-sonnet-test", base_url=dead),
            gemini_entry("gemini-pro", model="gemini-test"),
            gemini_entry("gemini/*"),
            gemini_entry(
                "gemini-wrong-key", model="gemini-test", api_key="${PUENTE_TEST_WRONG_KEY}"
            ),
            gemini_entry("gemini-slow", model="slow", timeouts=quick),
            gemini_entry("gemini-down", model="gemini-test", base_url=dead),
            gpt("gpt-cloud", model="fake-model"),
            gpt("openai/*"),
            gpt("gpt-slow", model="fake-model", timeouts=quick),
            gpt("gpt-down", model="fake-model", base_url=dead + "/v1"),
        ],
    }


@pytest.fixture(scope="session")
def anthropic_vendor() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic(ANTHROPIC_KEY)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def gemini_vendor() -> Iterator[FakeGemini]:
    fake = FakeGemini(GEMINI_KEY)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def cloud_puente(
    anthropic_vendor: FakeAnthropic,
    gemini_vendor: FakeGemini,
    fake_upstream: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InProcessPuente]:
    workdir = tmp_path_factory.mktemp("cloud")
    config = cloud_config(anthropic_vendor, gemini_vendor, fake_upstream)
    with InProcessPuente(config, workdir, env=ENV, name="cloud") as proc:
        yield proc


@pytest.fixture
def cloud(cloud_puente: InProcessPuente) -> Iterator[openai.OpenAI]:
    """The openai SDK pointed at the cloud Puente (no retries, so each error is seen)."""
    with openai.OpenAI(base_url=cloud_puente.base_url, api_key="unused", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def claude_fake(anthropic_vendor: FakeAnthropic) -> FakeAnthropic:
    anthropic_vendor.reset()
    return anthropic_vendor


@pytest.fixture
def gemini_fake(gemini_vendor: FakeGemini) -> FakeGemini:
    gemini_vendor.reset()
    return gemini_vendor


# -- reading answers ------------------------------------------------------------------------------


@dataclass
class Streamed:
    """A streamed answer put back together, with what a strict client would check."""

    roles: list[str] = field(default_factory=list)
    content: str = ""
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish: str | None = None
    usage: CompletionUsage | None = None
    chunks: int = 0

    def arguments(self, index: int) -> Any:
        return json.loads(self.calls[index]["arguments"])


def collect(stream: Iterable[ChatCompletionChunk]) -> Streamed:
    out = Streamed()
    for chunk in stream:
        out.chunks += 1
        if chunk.usage is not None:
            assert out.usage is None, "usage came twice"
            out.usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            if delta.role:
                out.roles.append(delta.role)
            out.content += delta.content or ""
            for call in delta.tool_calls or []:
                entry = out.calls.setdefault(
                    call.index, {"id": None, "name": None, "arguments": "", "type": None}
                )
                if call.id:
                    assert entry["id"] is None, "a tool call's id must be sent once"
                    entry["id"], entry["type"] = call.id, call.type
                if call.function and call.function.name:
                    assert entry["name"] is None, "a tool call's name must be sent once"
                    entry["name"] = call.function.name
                if call.function and call.function.arguments:
                    entry["arguments"] += call.function.arguments
                extra = (call.model_extra or {}).get("extra_content")
                if extra:
                    entry["extra_content"] = extra
            if choice.finish_reason:
                assert out.finish is None, "finish_reason came twice"
                out.finish = choice.finish_reason
    return out


def assistant_turn(message: ChatCompletionMessage) -> dict[str, Any]:
    """The assistant message as a client sends it back (what ``model_dump`` keeps, extras too)."""
    return message.model_dump(exclude_none=True)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CITY_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
            "required": ["name", "population"],
            "additionalProperties": False,
        },
    },
}
