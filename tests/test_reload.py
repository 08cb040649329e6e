"""Reloading models and personas (SIGHUP, ``POST /admin/reload``) without dropping requests."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import PuenteProcess

ADMIN = "test-admin-key-for-reloads"
USER: Any = [{"role": "user", "content": "Hola"}]


def _config(fake: FakeOpenAI, version: int, *, with_old_model: bool = True) -> dict[str, Any]:
    models: list[dict[str, Any]] = [
        {"name": "fake-model", "provider": "openai_compatible", "base_url": fake.base_url}
    ]
    if with_old_model:
        models.append(
            {
                "name": "vieja",
                "provider": "openai_compatible",
                "base_url": fake.base_url,
                "model": "fake-model",
            }
        )
    personas: list[dict[str, Any]] = [
        {"name": "guia", "model": "fake-model", "system": f"Versión {version}."}
    ]
    if version > 1:
        personas.append({"name": "nueva", "model": "fake-model", "system": "Recién llegada."})
    # Chat needs no key here (PUENTE_ADMIN_KEY would otherwise turn keys on); reloads still do.
    return {"auth": "none", "models": models, "personas": personas}


@pytest.fixture(scope="module")
def server(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PuenteProcess]:
    workdir: Path = tmp_path_factory.mktemp("reload")
    proc = PuenteProcess(_config(fake_upstream, 1), workdir, env={"PUENTE_ADMIN_KEY": ADMIN})
    with proc:
        yield proc


def _write(server: PuenteProcess, config: dict[str, Any] | str) -> None:
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    server.config_path.write_text(text)


def _post_reload(server: PuenteProcess, key: str | None = ADMIN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.post(server.url + "/admin/reload", headers=headers, timeout=10)


@pytest.fixture
def sdk(server: PuenteProcess, fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    """Puente back on the first configuration, and the SDK pointed at it."""
    _write(server, _config(fake, 1))
    assert _post_reload(server).status_code == 200
    fake.reset()
    with openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture
def background() -> Iterator[Callable[..., Future[Any]]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool.submit


def _models(server: PuenteProcess) -> set[str]:
    data = httpx.get(server.base_url + "/models")
    return {card["id"] for card in data.json()["data"]}


def _eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _logs_since(server: PuenteProcess, mark: int) -> str:
    return server.logs()[mark:]


def _system_received(fake: FakeOpenAI) -> str:
    content: str = fake.state.received[-1]["messages"][0]["content"]
    return content


# -- the endpoint ------------------------------------------------------------------------------


def test_reload_needs_the_admin_key(server: PuenteProcess, sdk: openai.OpenAI) -> None:
    assert _post_reload(server, key=None).status_code == 401
    wrong = _post_reload(server, key="not-the-key")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"
    ok = _post_reload(server)
    assert ok.status_code == 200
    assert ok.json() == {
        "status": "reloaded",
        "models": ["fake-model", "vieja"],
        "personas": ["guia"],
    }


def test_reload_endpoint_off_without_admin_key(puente: PuenteProcess) -> None:
    if os.environ.get("PUENTE_ADMIN_KEY"):
        pytest.skip("PUENTE_ADMIN_KEY is set in this environment")
    response = httpx.post(puente.url + "/admin/reload", headers={"Authorization": "Bearer x"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "admin_api_disabled"
    assert "PUENTE_ADMIN_KEY" in response.json()["error"]["message"]


# -- reloading while requests are in flight ----------------------------------------------------


def test_sighup_reloads_while_a_stream_finishes(
    server: PuenteProcess,
    sdk: openai.OpenAI,
    fake: FakeOpenAI,
    background: Callable[..., Future[Any]],
) -> None:
    reply = "uno dos tres cuatro cinco seis siete ocho nueve diez"

    def stream_on_old_model() -> list[Any]:
        stream = sdk.chat.completions.create(
            model="vieja",
            messages=USER,
            stream=True,
            extra_body={"fake": {"reply": reply, "delay": 0.1}},
        )
        return list(stream)

    in_flight = background(stream_on_old_model)
    _eventually(lambda: fake.state.in_progress == 1)
    _write(server, _config(fake, 2, with_old_model=False))
    mark = len(server.logs())
    server.signal(signal.SIGHUP)
    _eventually(lambda: "nueva" in _models(server))

    # The new configuration serves while the old stream is still going.
    assert not in_flight.done()
    assert "vieja" not in _models(server)
    assert "closed 1 retired provider" not in _logs_since(server, mark)
    sdk.chat.completions.create(model="guia", messages=USER)
    assert _system_received(fake) == "Versión 2."
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="vieja", messages=USER)

    chunks = in_flight.result(timeout=10)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply
    assert chunks[-1].choices[0].finish_reason == "stop"
    # What only the old configuration used is closed once its last request ended.
    _eventually(lambda: "closed 1 retired provider" in _logs_since(server, mark))


def test_post_reload_keeps_a_waiting_request(
    server: PuenteProcess,
    sdk: openai.OpenAI,
    fake: FakeOpenAI,
    background: Callable[..., Future[Any]],
) -> None:
    in_flight = background(
        sdk.chat.completions.create,
        model="guia",
        messages=USER,
        extra_body={"fake": {"reply": "sigo aquí", "delay": 5.0}},
    )
    _eventually(lambda: fake.state.in_progress == 1)
    _write(server, _config(fake, 2, with_old_model=False))
    response = _post_reload(server)
    assert response.status_code == 200
    assert not in_flight.done()  # the reload did not wait for the request in flight
    assert response.json()["personas"] == ["guia", "nueva"]

    answer = in_flight.result(timeout=10)
    assert answer.model == "guia"
    assert answer.choices[0].message.content == "sigo aquí"
    assert fake.state.received[0]["messages"][0]["content"] == "Versión 1."


def test_persona_edit_keeps_running_providers(
    server: PuenteProcess, sdk: openai.OpenAI, fake: FakeOpenAI
) -> None:
    config = _config(fake, 1)
    config["personas"][0]["system"] = "Versión editada."
    _write(server, config)
    mark = len(server.logs())
    assert _post_reload(server).status_code == 200
    assert "personas guia (0 new, 0 retired)" in _logs_since(server, mark)
    sdk.chat.completions.create(model="guia", messages=USER)
    assert _system_received(fake) == "Versión editada."


# -- a bad file changes nothing ----------------------------------------------------------------

BAD_FILES = {
    "yaml": ("personas: [\n", "line 2"),
    "target": (
        "models: [{name: fake-model, provider: openai_compatible, base_url: http://127.0.0.1:9/v1}]\n"
        "personas: [{name: guia, model: no-existe, system: x}]\n",
        "model 'no-existe' is not configured",
    ),
    "clash": (
        "models: [{name: guia, provider: openai_compatible, base_url: http://127.0.0.1:9/v1}]\n"
        "personas: [{name: guia, model: guia, system: x}]\n",
        "same name as a model",
    ),
    "policy": (
        "models: [{name: m, provider: openai_compatible, base_url: http://127.0.0.1:9/v1}]\n"
        "personas: [{name: p, model: m, system: x, client_system: sometimes}]\n",
        "personas[0] (p): field 'client_system'",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_refused_over_http(
    server: PuenteProcess, sdk: openai.OpenAI, fake: FakeOpenAI, case: str
) -> None:
    text, reason = BAD_FILES[case]
    _write(server, text)
    response = _post_reload(server)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_config"
    assert reason in error["message"]
    assert "Traceback" not in server.logs()
    # The running configuration is untouched.
    assert {"fake-model", "vieja", "guia"} <= _models(server)
    sdk.chat.completions.create(model="guia", messages=USER)
    assert _system_received(fake) == "Versión 1."


def test_bad_file_refused_on_sighup(
    server: PuenteProcess, sdk: openai.OpenAI, fake: FakeOpenAI
) -> None:
    _write(server, "personas: [{name: guia, model: fake-model}]\n")
    mark = len(server.logs())
    server.signal(signal.SIGHUP)
    refused = "reload refused, keeping the running configuration"
    _eventually(lambda: refused in _logs_since(server, mark))
    assert "a persona needs 'system' text or 'rules'" in _logs_since(server, mark)
    assert server.proc is not None and server.proc.poll() is None
    sdk.chat.completions.create(model="guia", messages=USER)
    assert _system_received(fake) == "Versión 1."
