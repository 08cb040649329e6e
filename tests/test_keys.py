"""API keys end to end: created over HTTP and with the CLI, used from the openai SDK, limited to
some models, revoked, expired; never shown again, never logged; and the safe default that keeps
a key-less Puente off the network."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.access_support import (
    ADMIN,
    SECRETS,
    USER,
    admin_headers,
    chat,
    cli,
    cli_create,
    create_key,
    eventually,
    unique,
)
from tests.conftest import gateway_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente
from tests.support import PuenteProcess, free_port


@pytest.fixture(scope="module")
def server(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    workdir: Path = tmp_path_factory.mktemp("keys")
    env = {"PUENTE_ADMIN_KEY": ADMIN}
    with InProcessPuente(gateway_config(fake_upstream), workdir, env=env) as proc:
        yield proc


def sdk(server: InProcessPuente, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


# -- creating and using a key ------------------------------------------------------------------


def test_a_key_created_over_http_works_from_the_openai_sdk(server: InProcessPuente) -> None:
    name = unique("app")
    r = httpx.post(
        server.url + "/admin/keys", json={"name": name}, headers=admin_headers(), timeout=10
    )
    assert r.status_code == 201
    body = r.json()
    secret = body["key"]
    SECRETS.append(secret)
    assert secret.startswith("sk-pnt-") and len(secret) > 40
    assert body["name"] == name and body["models"] == ["*"] and body["state"] == "active"
    assert body["hint"] == f"sk-pnt-…{secret[-4:]}"
    assert "key_hash" not in body

    with sdk(server, secret) as client:
        answer = client.chat.completions.create(model="fake-model", messages=USER)
        assert answer.choices[0].message.content == "Hello! You said: hi"
        stream = client.chat.completions.create(model="alias", messages=USER, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == "Hello! You said: hi"


async def test_a_key_works_from_the_async_sdk_and_in_x_api_key(server: InProcessPuente) -> None:
    secret = create_key(server, unique("async"))
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key=secret, max_retries=0
    ) as client:
        answer = await client.chat.completions.create(model="fake-model", messages=USER)
        assert answer.choices[0].message.content == "Hello! You said: hi"
    async with httpx.AsyncClient() as raw:
        r = await raw.post(
            server.base_url + "/chat/completions",
            json={"model": "fake-model", "messages": USER},
            headers={"x-api-key": secret},
        )
    assert r.status_code == 200


def test_the_cli_creates_keys_that_work_at_once(server: InProcessPuente) -> None:
    secret = cli_create(server.config_path, unique("cli"), "--models", "fake-model")
    assert secret.startswith("sk-pnt-")
    assert chat(server, secret).status_code == 200


# -- refusals ----------------------------------------------------------------------------------


def test_no_key_or_a_wrong_key_is_401(server: InProcessPuente) -> None:
    r = chat(server, None)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "authentication_error"
    assert r.json()["error"]["code"] == "missing_api_key"

    wrong = "sk-pnt-" + "x" * 43
    with sdk(server, wrong) as client, pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="fake-model", messages=USER)
    assert caught.value.status_code == 401
    assert wrong not in caught.value.response.text
    assert caught.value.body == {
        "message": "Incorrect API key provided.",
        "type": "authentication_error",
        "param": None,
        "code": "invalid_api_key",
    }
    assert httpx.get(server.base_url + "/models").status_code == 401


def test_a_model_the_key_may_not_use_looks_like_one_that_does_not_exist(
    server: InProcessPuente,
) -> None:
    secret = create_key(server, unique("narrow"), models=["fake-model", "vendor/*"])
    with sdk(server, secret) as client:
        listed = {m.id for m in client.models.list()}
        assert listed == {"fake-model"}
        assert client.chat.completions.create(model="vendor/thing", messages=USER).choices

        forbidden = chat(server, secret, model="alias")
        unknown = chat(server, secret, model="no-such-model")
        assert forbidden.status_code == unknown.status_code == 404
        assert forbidden.json() == {
            "error": {
                "message": "The model 'alias' does not exist.",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        }
        assert unknown.json()["error"]["message"] == "The model 'no-such-model' does not exist."

        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("alias")
        # Not even a configured-but-disabled model's hint about its variable leaks.
        hidden = httpx.get(server.base_url + "/models/needs-key", headers={"x-api-key": secret})
        assert hidden.json()["error"]["message"] == "The model 'needs-key' does not exist."
        assert client.models.retrieve("fake-model").id == "fake-model"


def test_revoking_with_the_cli_takes_effect_at_once(server: InProcessPuente) -> None:
    name = unique("revoke-cli")
    secret = create_key(server, name)
    assert chat(server, secret).status_code == 200
    done = cli(server.config_path, "revoke", name)
    assert done.returncode == 0, done.stderr
    assert f"Revoked key '{name}'" in done.stdout
    # The server remembered the key; its watch on the SQLite file sees the revocation within
    # 50 ms (server/access/keycache.py).
    eventually(lambda: chat(server, secret).status_code == 401, what="the key refused")
    r = chat(server, secret)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "revoked_api_key"
    assert r.json()["error"]["message"] == "This API key has been revoked."


def test_revoking_over_http_takes_effect_on_the_next_request(server: InProcessPuente) -> None:
    name = unique("revoke-http")
    secret = create_key(server, name)
    assert chat(server, secret).status_code == 200
    r = httpx.delete(server.url + f"/admin/keys/{name}", headers=admin_headers())
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    assert chat(server, secret).status_code == 401
    missing = httpx.delete(server.url + "/admin/keys/nobody", headers=admin_headers())
    assert missing.status_code == 404


def test_an_expired_key_is_401(server: InProcessPuente) -> None:
    secret = create_key(server, unique("brief"), expires="1s")
    time.sleep(1.1)
    r = chat(server, secret)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "expired_api_key"


# -- management --------------------------------------------------------------------------------


def test_listing_shows_names_and_hints_never_keys(server: InProcessPuente) -> None:
    name = unique("listed")
    secret = create_key(server, name, rpm=7, budget_day=1000, models=["fake-*"])
    listing = httpx.get(server.url + "/admin/keys", headers=admin_headers()).json()["data"]
    mine = next(k for k in listing if k["name"] == name)
    assert mine["rpm"] == 7 and mine["budget_day"] == 1000 and mine["models"] == ["fake-*"]
    assert mine["hint"] == f"sk-pnt-…{secret[-4:]}"
    one = httpx.get(server.url + f"/admin/keys/{name}", headers=admin_headers()).json()
    assert one == mine

    done = cli(server.config_path, "list")
    assert done.returncode == 0 and name in done.stdout
    as_json = cli(server.config_path, "list", "--json")
    for text in (str(listing), done.stdout, as_json.stdout):
        assert secret not in text
        assert secret[7:] not in text


def test_the_admin_api_needs_the_admin_key(server: InProcessPuente) -> None:
    secret = create_key(server, unique("not-admin"))
    for headers in ({}, {"Authorization": f"Bearer {secret}"}, admin_headers("wrong" * 5)):
        r = httpx.get(server.url + "/admin/keys", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(server.url + "/admin/keys", headers={"x-api-key": ADMIN}).status_code == 200


def test_creating_a_key_checks_what_it_is_given(server: InProcessPuente) -> None:
    def post(body: dict[str, Any]) -> httpx.Response:
        return httpx.post(server.url + "/admin/keys", json=body, headers=admin_headers())

    name = unique("twice")
    assert post({"name": name}).status_code == 201
    taken = post({"name": name})
    assert taken.status_code == 400 and taken.json()["error"]["code"] == "key_name_taken"
    bad = post({"name": "has spaces"})
    assert bad.status_code == 400 and "name" in bad.json()["error"]["message"]
    assert post({"name": unique("x"), "rpm": 0}).status_code == 400
    assert post({"name": unique("x"), "colour": "red"}).status_code == 400
    assert post({"name": unique("x"), "expires": "soonish"}).status_code == 400
    huge = post({"name": unique("x"), "rpm": 2**63})
    assert huge.status_code == 400 and huge.json()["error"]["param"] == "rpm"


def test_the_admin_key_is_checked_before_the_body_is_read(server: InProcessPuente) -> None:
    # An outsider learns nothing about what the endpoint accepts: every body gets the same 401.
    for content in (b"{not json", b'{"name": 3}', b'{"name": "ok-name"}'):
        r = httpx.post(server.url + "/admin/keys", content=content)
        assert r.status_code == 401, content
        assert r.json()["error"]["type"] == "authentication_error"
    bad = httpx.post(server.url + "/admin/keys", content=b"{not json", headers=admin_headers())
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"


def test_keys_never_reach_logs_error_bodies_or_the_upstream(
    server: InProcessPuente, fake: FakeOpenAI
) -> None:
    name = unique("secretive")
    secret = create_key(server, name, models=["fake-model"], rpm=1)
    bodies = [
        chat(server, secret).text,
        chat(server, secret).text,  # 429
        chat(server, secret, model="alias").text,  # 404
        chat(server, secret[:-1] + "Z").text,  # 401
    ]
    httpx.delete(server.url + f"/admin/keys/{name}", headers=admin_headers())
    bodies.append(chat(server, secret).text)
    for body in bodies:
        assert secret not in body and secret[7:] not in body
    assert all(
        secret not in str(headers) and ADMIN not in str(headers) for headers in fake.state.headers
    )
    logs = server.logs()
    assert "chat model=" in logs  # the log is where it should be, and has the requests
    for known in [*SECRETS, ADMIN]:
        assert known not in logs
        assert known[7:] not in logs


# -- safe defaults -----------------------------------------------------------------------------


def _serve(
    workdir: Path, config: dict[str, Any], host: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    path = workdir / "puente.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--config",
            str(path),
            "--host",
            host,
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=workdir,
        env=env,
    )


def test_without_keys_puente_refuses_to_listen_beyond_loopback(
    fake_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    config = gateway_config(fake_upstream)
    done = _serve(tmp_path, config, "0.0.0.0")
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in done.stderr
    assert "auth: none" in done.stderr


def test_auth_none_or_a_key_lets_puente_listen_beyond_loopback(
    fake_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    open_config = {**gateway_config(fake_upstream), "auth": "none"}
    with PuenteProcess(open_config, tmp_path, name="open", host="0.0.0.0") as proc:
        assert chat(proc, None).status_code == 200

    keyed = tmp_path / "keyed"
    keyed.mkdir()
    config = keyed / "puente.yaml"
    config.write_text(yaml.safe_dump(gateway_config(fake_upstream)))
    secret = cli_create(config, "first")
    with PuenteProcess(gateway_config(fake_upstream), keyed, host="0.0.0.0") as proc:
        assert chat(proc, None).status_code == 401
        assert chat(proc, secret).status_code == 200


def test_on_loopback_without_keys_any_client_is_served(client: openai.OpenAI) -> None:
    # The session's Puente (tests/conftest.py) has no keys: SDKs still send one, ignored.
    assert client.chat.completions.create(model="fake-model", messages=USER).choices
    assert "alias" in {m.id for m in client.models.list()}


def test_a_placeholder_admin_key_is_refused(fake_upstream: FakeOpenAI, tmp_path: Path) -> None:
    env = {**os.environ, "PUENTE_ADMIN_KEY": "changeme"}
    done = _serve(tmp_path, gateway_config(fake_upstream), "127.0.0.1", env=env)
    assert done.returncode == 2
    assert "PUENTE_ADMIN_KEY is too short" in done.stderr
    assert "changeme" not in done.stderr
