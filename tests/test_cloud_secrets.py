"""Vendor keys never leave Puente: not in an error a client sees (even when the vendor quotes the
key back), not in the log — at the normal level, nor at debug where the SDKs log the most."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.cloud_fixtures import ENV, KEYS, WRONG_KEY, cloud_config
from tests.fakes.anthropic_vendor import FakeAnthropic
from tests.fakes.gemini_vendor import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import PuenteProcess

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def debug_puente(
    anthropic_vendor: FakeAnthropic,
    gemini_vendor: FakeGemini,
    fake_upstream: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PuenteProcess]:
    config = cloud_config(anthropic_vendor, gemini_vendor, fake_upstream)
    workdir = tmp_path_factory.mktemp("cloud-debug")
    with PuenteProcess(config, workdir, env=ENV, name="debug", args=["--log-level", "debug"]) as p:
        yield p


def provoke_everything(
    puente: PuenteProcess, claude: FakeAnthropic, gemini: FakeGemini
) -> list[str]:
    """Successes and every kind of failure, streamed and not; the bodies the client got."""
    claude.program("echo", status=400, echo_key=True)
    claude.program("overloaded", status=529)
    claude.program("mid", error_after=3)
    claude.program("slow", hang=2)
    gemini.program("limited", status=429)
    gemini.program("slow", hang=2)
    requests = [
        ("claude-sonnet", {}),
        ("gemini-pro", {}),
        ("gpt-cloud", {}),
        ("claude-wrong-key", {}),
        ("gemini-wrong-key", {}),
        ("claude/echo", {}),
        ("claude/overloaded", {}),
        ("claude/mid", {}),
        ("claude-slow", {}),
        ("claude-down", {}),
        ("gemini/limited", {}),
        ("gemini-slow", {}),
        ("gemini-down", {}),
        ("gpt-cloud", {"fake": {"status": 401}}),
        ("gpt-down", {}),
    ]
    bodies = []
    with httpx.Client(base_url=puente.base_url, timeout=10) as client:
        for model, extra in requests:
            for stream in (False, True):
                body = {"model": model, "messages": HELLO, "stream": stream, **extra}
                response = client.post("/chat/completions", json=body)
                bodies.append(f"{response.status_code} {response.headers} {response.text}")
        bodies.append(client.get("/models").text)
    bodies.append(httpx.get(puente.url + "/ready").text)
    return bodies


def assert_no_secret(text: str, where: str) -> None:
    for key in KEYS:
        assert key not in text, f"a vendor key appears in {where}"
        assert key[-12:] not in text, f"the end of a vendor key appears in {where}"


def test_keys_never_reach_clients_or_the_log(
    cloud_puente: PuenteProcess, claude_fake: FakeAnthropic, gemini_fake: FakeGemini
) -> None:
    bodies = provoke_everything(cloud_puente, claude_fake, gemini_fake)

    # The fakes did get the keys, and one quoted it back: the test has teeth.
    assert any(r.headers.get("x-goog-api-key") == WRONG_KEY for r in gemini_fake.state.received)
    echoed = next(b for b in bodies if "(key: Bearer ***)" in b)
    assert echoed.startswith("400 ")
    assert any("refused the credentials configured" in b for b in bodies)
    for body in bodies:
        assert_no_secret(body, "a response")
    log = cloud_puente.logs()
    assert "model=claude/*" in log  # the requests above were logged, under their entry
    assert_no_secret(log, "the log")


def test_not_even_at_debug_level(
    debug_puente: PuenteProcess, claude_fake: FakeAnthropic, gemini_fake: FakeGemini
) -> None:
    bodies = provoke_everything(debug_puente, claude_fake, gemini_fake)
    for body in bodies:
        assert_no_secret(body, "a response")
    log = debug_puente.logs()
    assert " DEBUG " in log
    assert_no_secret(log, "the debug log")
