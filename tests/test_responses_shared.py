"""Stored responses outlive the gateway that made them: found again after a restart on SQLite,
and shared by two gateways on one Postgres (made on one, continued and deleted on the other)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.access_support import ADMIN, admin_headers, unique
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente
from tests.services import fresh_database


def config(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    model = {"name": "fake-model", "provider": "openai_compatible", "base_url": fake.base_url}
    return {"models": [model], **extra}


def sdk(server: InProcessPuente, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def test_a_stored_response_survives_a_restart(fake: FakeOpenAI, tmp_path: Path) -> None:
    with InProcessPuente(config(fake, auth="none"), tmp_path) as first:
        made = sdk(first).responses.create(model="fake-model", input="remember me")
    with InProcessPuente(config(fake, auth="none"), tmp_path) as second:
        client = sdk(second)
        assert client.responses.retrieve(made.id).output_text == made.output_text
        client.responses.create(model="fake-model", input="again", previous_response_id=made.id)
    assert fake.state.received[-1]["messages"][0] == {"role": "user", "content": "remember me"}


@pytest.mark.services
def test_two_gateways_on_one_postgres_share_stored_responses(
    fake: FakeOpenAI, postgres_server: str, tmp_path: Path
) -> None:
    shared = config(fake, database_url=fresh_database(postgres_server))
    env = {"PUENTE_ADMIN_KEY": ADMIN}
    with (
        InProcessPuente(shared, tmp_path, env=env, name="a") as a,
        InProcessPuente(shared, tmp_path, env=env, name="b") as b,
    ):
        created = httpx.post(
            a.url + "/admin/keys", json={"name": unique("shared")}, headers=admin_headers()
        )
        key = created.json()["key"]
        made = sdk(a, key).responses.create(model="fake-model", input="first")
        on_b = sdk(b, key)
        assert on_b.responses.retrieve(made.id).id == made.id
        on_b.responses.create(model="fake-model", input="second", previous_response_id=made.id)
        assert fake.state.received[-1]["messages"][0]["content"] == "first"
        on_b.responses.delete(made.id)
        with pytest.raises(openai.NotFoundError):
            sdk(a, key).responses.retrieve(made.id)
    assert not (tmp_path / "puente.db").exists()  # nothing went to SQLite
