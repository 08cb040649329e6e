"""A hostile upstream behind the OpenAI-compatible path (issue 15, High 1–2, Medium 6–8): its
credentials never reach a client or the log, its answers cannot take unbounded memory, a broken
stream always ends with an error event and ``[DONE]``, and its redirects are not followed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from server.config import ModelConfig
from server.providers.redact import Redactor
from tests.fakes.hostile import HEADER_SECRET, UPSTREAM_KEY, Collector, HostileUpstream
from tests.support import PuenteProcess, error_envelope

LIMITS = {
    "max_body_bytes": 1024 * 1024,
    "max_error_bytes": 16 * 1024,
    "max_line_bytes": 256 * 1024,
    "total_timeout": 10,
}


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    fake = Collector().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def hostile(collector: Collector) -> Iterator[HostileUpstream]:
    fake = HostileUpstream(collector).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def puente(hostile: HostileUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    config = {
        "server": {"upstream_limits": LIMITS},
        "models": [
            {
                "name": "hostile/*",
                "provider": "openai_compatible",
                "base_url": hostile.base_url,
                "api_key": "${HOSTILE_KEY}",
                "headers": {"X-Upstream-Token": "${HOSTILE_TOKEN}"},
                "retries": 0,
            },
            {
                # The same upstream through the openai SDK (the vendor SDK path).
                "name": "sdk/*",
                "provider": "openai",
                "base_url": hostile.base_url,
                "api_key": "${HOSTILE_KEY}",
                "headers": {"X-Upstream-Token": "${HOSTILE_TOKEN}"},
                "retries": 0,
            },
        ],
    }
    env = {"HOSTILE_KEY": UPSTREAM_KEY, "HOSTILE_TOKEN": HEADER_SECRET}
    with PuenteProcess(config, tmp_path_factory.mktemp("hostile"), env=env) as proc:
        yield proc


def _post(puente: PuenteProcess, model: str, stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return httpx.post(puente.base_url + "/chat/completions", json=body, timeout=30)


def _no_secret(text: str) -> None:
    assert UPSTREAM_KEY not in text
    assert HEADER_SECRET not in text


# -- High 1: credentials ----------------------------------------------------------------------


def test_the_redactor_masks_every_credential_a_model_sends() -> None:
    config = ModelConfig(
        name="m",
        provider="openai_compatible",
        base_url="http://upstream",
        api_key="sk-key-123456",
        headers={"Authorization-2": "Bearer tok-abcdefgh", "X-Flag": "1", "X-Org": "org-7777777"},
    )
    redact = Redactor.for_model(config)
    text = "key sk-key-123456, bearer Bearer tok-abcdefgh, token tok-abcdefgh, org org-7777777, 1"
    assert redact(text) == "key ***, bearer ***, token ***, org ***, 1"
    assert redact.raw(text.encode()) == redact(text).encode()


PATHS = pytest.mark.parametrize("path", ["hostile", "sdk"])


@PATHS
def test_an_upstream_error_that_quotes_the_credentials_is_masked(
    puente: PuenteProcess, hostile: HostileUpstream, path: str
) -> None:
    response = _post(puente, f"{path}/quote-key")
    assert response.status_code == 400
    error = error_envelope(response)
    assert "Authorization: Bearer ***" in error["message"]  # the message itself is kept
    assert "X-Upstream-Token: ***" in error["message"]
    _no_secret(response.text)
    # The upstream did get both credentials: the test has teeth.
    sent = hostile.received[-1]
    assert sent["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent["x-upstream-token"] == HEADER_SECRET
    _no_secret(puente.logs())


def test_an_answer_that_quotes_the_credentials_is_masked(puente: PuenteProcess) -> None:
    response = _post(puente, "hostile/answer-quote")
    assert response.status_code == 200
    assert "Bearer ***" in response.json()["choices"][0]["message"]["content"]
    _no_secret(response.text)


@PATHS
def test_an_upstream_401_is_puentes_problem_not_the_clients_key(
    puente: PuenteProcess, path: str
) -> None:
    response = _post(puente, f"{path}/auth")
    assert response.status_code == 502
    error = error_envelope(response)
    assert error["code"] == "upstream_auth_failed"
    assert error["type"] == "upstream_error"
    assert "operator" in error["message"]
    _no_secret(response.text)


@pytest.mark.parametrize("behaviour", ["stream-quote", "chunk-quote"])
def test_credentials_quoted_inside_a_stream_are_masked(
    puente: PuenteProcess, behaviour: str
) -> None:
    response = _post(puente, f"hostile/{behaviour}", stream=True)
    assert response.status_code == 200
    assert "Bearer ***" in response.text
    _no_secret(response.text)
    assert response.text.rstrip().endswith("data: [DONE]")
    _no_secret(puente.logs())


# -- High 2: bounded reads --------------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["bomb", "endless"])
def test_an_answer_over_the_body_limit_is_refused(puente: PuenteProcess, behaviour: str) -> None:
    response = _post(puente, f"hostile/{behaviour}")
    assert response.status_code == 502
    error = error_envelope(response)
    assert error["code"] == "upstream_bad_response"
    assert f"limit of {LIMITS['max_body_bytes']} bytes" in error["message"]


@pytest.mark.parametrize("behaviour", ["bomb", "endless"])
def test_the_sdk_path_refuses_an_answer_over_the_body_limit(
    puente: PuenteProcess, behaviour: str
) -> None:
    response = _post(puente, f"sdk/{behaviour}")
    assert response.status_code == 502
    assert error_envelope(response)["type"] == "upstream_error"


@PATHS
def test_a_huge_error_body_is_cut_not_relayed(puente: PuenteProcess, path: str) -> None:
    response = _post(puente, f"{path}/huge-error")
    assert response.status_code == 502
    error_envelope(response)
    assert len(response.content) < 4096


@PATHS
def test_a_long_upstream_message_is_cut(puente: PuenteProcess, path: str) -> None:
    response = _post(puente, f"{path}/long-error")
    assert response.status_code == 400
    message = error_envelope(response)["message"]
    assert message.endswith("[cut]")
    assert 2000 <= len(message) < 2100


def _events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize(
    "behaviour", ["huge-line", "endless-line", "garbage", "bad-utf8", "bad-usage"]
)
def test_a_broken_stream_ends_with_an_error_event_and_done(
    puente: PuenteProcess, behaviour: str
) -> None:
    response = _post(puente, f"hostile/{behaviour}", stream=True)
    assert response.status_code == 200
    events = _events(response.text)
    assert events[-1] == "[DONE]"
    assert orjson.loads(events[0])["choices"][0]["delta"]["content"] == "Hello"
    # Nothing but the good chunk and one error event: no garbage relayed.
    error = orjson.loads(events[-2])["error"]
    assert error["code"] == "upstream_bad_response", error
    assert len(events) == 3, events


@pytest.mark.parametrize("behaviour", ["huge-line", "endless-line"])
def test_the_sdk_path_bounds_stream_lines(puente: PuenteProcess, behaviour: str) -> None:
    response = _post(puente, f"sdk/{behaviour}", stream=True)
    assert response.status_code == 200
    events = _events(response.text)
    assert events[-1] == "[DONE]"
    assert "error" in orjson.loads(events[-2])


def test_the_openai_sdk_sees_a_broken_stream_as_an_error(puente: PuenteProcess) -> None:
    with openai.OpenAI(base_url=puente.base_url, api_key="unused", max_retries=0) as client:
        stream = client.chat.completions.create(
            model="hostile/garbage", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError):
            for _ in stream:
                pass


@PATHS
def test_an_error_as_the_first_event_keeps_its_status(puente: PuenteProcess, path: str) -> None:
    response = _post(puente, f"{path}/first-error", stream=True)
    assert response.status_code == 429, response.text
    error_envelope(response)


@PATHS
def test_an_event_stream_for_a_whole_answer_is_a_502(puente: PuenteProcess, path: str) -> None:
    response = _post(puente, f"{path}/sse-for-whole")
    assert response.status_code == 502, response.text
    assert error_envelope(response)["code"] == "upstream_bad_response"


def test_content_nested_too_deep_to_forward_is_a_400(puente: PuenteProcess) -> None:
    # Deep enough that orjson cannot write it (255), shallow enough that it reads it (1024); in
    # a field Puente passes on as it is (an extra field vendors may take).
    nested: Any = "deep"
    for _ in range(400):
        nested = {"a": nested}
    body = {
        "model": "hostile/answer-quote",
        "messages": [{"role": "user", "content": "hi"}],
        "metadata_extra": nested,
    }
    response = httpx.post(puente.base_url + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert "nested too deeply" in error_envelope(response)["message"]


def test_negative_usage_is_a_protocol_error(puente: PuenteProcess) -> None:
    response = _post(puente, "hostile/negative-usage")
    assert response.status_code == 502
    assert error_envelope(response)["code"] == "upstream_bad_response"


def test_a_garbled_retry_after_does_not_break_the_answer(puente: PuenteProcess) -> None:
    response = _post(puente, "hostile/retry-after")
    assert response.status_code == 429
    error_envelope(response)
    assert "retry-after" not in response.headers
    assert response.headers["x-request-id"]


# -- Medium 8: redirects -----------------------------------------------------------------------


@PATHS
def test_a_redirect_is_not_followed(puente: PuenteProcess, collector: Collector, path: str) -> None:
    response = _post(puente, f"{path}/redirect")
    assert response.status_code == 502
    error_envelope(response)
    assert collector.received == []  # neither the prompt nor the credentials went there


def test_the_gateway_still_serves_after_all_that(puente: PuenteProcess) -> None:
    # Last in the module (tests run in file order): nothing above leaked a credential to the log.
    assert httpx.get(puente.url + "/health", timeout=5).status_code == 200
    _no_secret(puente.logs())
