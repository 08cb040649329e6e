"""The same persona guarantees on Anthropic and Gemini models, over their faithful fakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.cloud_fixtures import ENV
from tests.fakes.anthropic_vendor import FakeAnthropic
from tests.fakes.gemini_vendor import FakeGemini
from tests.fakes.vendor_server import VendorServer
from tests.inprocess import InProcessPuente
from tests.persona_setup import FAREWELL, MARKER, SPACED_FAREWELL, SPACED_MARKER

TARGETS = ["claude", "gemini"]
USER: Any = [
    {"role": "system", "content": "Responde en verso."},
    {"role": "user", "content": "¿Quién ganó el mundial de 1970?"},
]
PROMPT = (
    "Eres un experto en matemáticas.\n\nIf the question is outside your scope, or you do not "
    f"know the answer, reply with exactly {MARKER} and nothing else."
)


def _config(anthropic: FakeAnthropic, gemini: FakeGemini) -> dict[str, Any]:
    models = [
        {
            "name": "claude",
            "provider": "anthropic",
            "base_url": anthropic.url,
            "model": "persona-claude",
            "api_key": "${PUENTE_TEST_ANTHROPIC_KEY}",
            # The API version that still takes sampling parameters, so the cap can be seen.
            "headers": {"anthropic-version": "2023-06-01"},
            "retries": 0,
        },
        {
            "name": "gemini",
            "provider": "gemini",
            "base_url": gemini.url,
            "model": "persona-gemini",
            "api_key": "${PUENTE_TEST_GEMINI_KEY}",
            "retries": 0,
        },
    ]
    personas: list[dict[str, Any]] = []
    for target in TARGETS:
        personas.append(
            {
                "name": f"mate-{target}",
                "model": target,
                "system": "Eres un experto en matemáticas.",
                "farewell": FAREWELL,
                "caps": {"max_tokens": 512, "temperature": 0.5},
            }
        )
        personas.append(
            {
                "name": f"espaciado-{target}",
                "model": target,
                "system": "Te despides con ceremonia.",
                "farewell": SPACED_FAREWELL,
                "marker": SPACED_MARKER,
            }
        )
    return {"models": models, "personas": personas}


@pytest.fixture(scope="module")
def server(
    anthropic_vendor: FakeAnthropic,
    gemini_vendor: FakeGemini,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InProcessPuente]:
    workdir: Path = tmp_path_factory.mktemp("personas-cloud")
    config = _config(anthropic_vendor, gemini_vendor)
    with InProcessPuente(config, workdir, env=ENV) as proc:
        yield proc


@pytest.fixture
def sdk(server: InProcessPuente) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(params=TARGETS)
def target(
    request: pytest.FixtureRequest, claude_fake: FakeAnthropic, gemini_fake: FakeGemini
) -> tuple[str, VendorServer]:
    name: str = request.param
    return name, claude_fake if name == "claude" else gemini_fake


def _reply(target: tuple[str, VendorServer], text: str) -> None:
    name, fake = target
    fake.program(f"persona-{name}", reply=text, delay=0.01)


def _system_texts(target: tuple[str, VendorServer]) -> list[str]:
    name, fake = target
    body = fake.last.body
    if name == "claude":
        return [block["text"] for block in body["system"]]
    return [part["text"] for part in body["systemInstruction"]["parts"]]


def _max_tokens(target: tuple[str, VendorServer]) -> tuple[Any, Any]:
    name, fake = target
    body = fake.last.body
    if name == "claude":
        return body["max_tokens"], body["temperature"]
    config = body["generationConfig"]
    return config["maxOutputTokens"], config["temperature"]


def test_persona_first_then_client_system_and_caps(
    sdk: openai.OpenAI, target: tuple[str, VendorServer]
) -> None:
    answer = sdk.chat.completions.create(
        model=f"mate-{target[0]}", messages=USER, max_tokens=4096, temperature=0.9
    )
    assert answer.model == f"mate-{target[0]}"
    assert _system_texts(target) == [PROMPT, "Responde en verso."]
    assert _max_tokens(target) == (512, 0.5)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_farewell_exact(sdk: openai.OpenAI, target: tuple[str, VendorServer], stream: bool) -> None:
    _reply(target, f"{MARKER} El resto no llega.")
    model = f"mate-{target[0]}"
    if stream:
        chunks = list(sdk.chat.completions.create(model=model, messages=USER, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        assert {c.model for c in chunks} == {model}
    else:
        answer = sdk.chat.completions.create(model=model, messages=USER)
        text, finish = answer.choices[0].message.content or "", answer.choices[0].finish_reason
    assert (text, finish) == (FAREWELL, "stop")


def test_marker_split_across_chunks(sdk: openai.OpenAI, target: tuple[str, VendorServer]) -> None:
    _reply(target, f"{SPACED_MARKER} Y algo más.")
    stream = sdk.chat.completions.create(
        model=f"espaciado-{target[0]}", messages=USER[1:], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        SPACED_FAREWELL
    )
