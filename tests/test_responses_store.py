"""Stored responses in the database: the same contract on SQLite and a real Postgres, shared by
two gateways on one Postgres, expired rows pruned, and a failed save that loses no answer."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
import pytest

from server.access.storage import Store, StoredResponse, open_store
from server.access.storage.migrations import LATEST
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente


def row(response_id: str, expires_at: float, key: str | None = "alice") -> StoredResponse:
    return StoredResponse(
        id=response_id,
        key_name=key,
        created_at=1.0,
        expires_at=expires_at,
        model="m",
        input='[{"type": "message"}]',
        response=f'{{"id": "{response_id}"}}',
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'puente.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = open_store(url)
    assert await opened.migrate() == LATEST
    yield opened
    await opened.aclose()


async def test_responses_are_kept_read_deleted_and_pruned(store: Store) -> None:
    await store.put_response(row("resp_a", expires_at=100.0))
    await store.put_response(row("resp_b", expires_at=300.0, key=None))
    assert await store.get_response("resp_a") == row("resp_a", 100.0)
    assert await store.get_response("resp_missing") is None
    assert await store.prune_responses(200.0) == 1
    assert await store.get_response("resp_a") is None
    assert await store.delete_response("resp_b") is True
    assert await store.delete_response("resp_b") is False


def gateway(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    return {
        "models": [
            {"name": "fake-model", "provider": "openai_compatible", "base_url": fake.base_url}
        ],
        **extra,
    }


@pytest.mark.services
def test_two_gateways_on_one_postgres_share_stored_responses(
    fake_upstream: FakeOpenAI, postgres_url: str, tmp_path: Path
) -> None:
    config = gateway(fake_upstream, database_url=postgres_url)
    one = InProcessPuente(config, tmp_path, name="one").start()
    two = InProcessPuente(config, tmp_path, name="two").start()
    stack = ExitStack()
    try:
        a = openai.OpenAI(base_url=one.base_url, api_key="none", max_retries=0)
        b = openai.OpenAI(base_url=two.base_url, api_key="none", max_retries=0)
        stack.enter_context(a)
        stack.enter_context(b)
        first = a.responses.create(model="fake-model", input="made on one")
        assert b.responses.retrieve(first.id).output_text == first.output_text
        follow = b.responses.create(
            model="fake-model", input="continued on two", previous_response_id=first.id
        )
        assert [m["role"] for m in fake_upstream.state.received[-1]["messages"]] == [
            "user",
            "assistant",
            "user",
        ]
        b.responses.delete(follow.id)
        with pytest.raises(openai.NotFoundError):
            a.responses.retrieve(follow.id)
    finally:
        stack.close()
        two.stop()
        one.stop()


def test_an_expired_response_is_not_found(fake_upstream: FakeOpenAI, tmp_path: Path) -> None:
    server = InProcessPuente(gateway(fake_upstream), tmp_path).start()
    closing = ExitStack()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        closing.enter_context(client)
        response = client.responses.create(model="fake-model", input="short-lived")
        with sqlite3.connect(tmp_path / "puente.db") as db:
            db.execute("UPDATE responses SET expires_at = 0 WHERE id = ?", (response.id,))
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="fake-model", input="x", previous_response_id=response.id)
    finally:
        closing.close()
        server.stop()


def test_a_failed_save_still_answers_and_is_counted(
    fake_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    server = InProcessPuente(gateway(fake_upstream), tmp_path).start()
    closing = ExitStack()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        closing.enter_context(client)
        client.responses.create(model="fake-model", input="first")  # the database is in use
        with sqlite3.connect(tmp_path / "puente.db") as db:
            db.execute("DROP TABLE responses")
        response = client.responses.create(model="fake-model", input="still answered")
        assert response.output_text == "Hello! You said: still answered"
        with client.responses.stream(model="fake-model", input="streamed too") as stream:
            assert stream.get_final_response().output_text == "Hello! You said: streamed too"
        metrics = server.runtime.metrics.responses_stored
        assert metrics.labels("failed")._value.get() == 2
        assert "not stored" in server.logs()
    finally:
        closing.close()
        server.stop()
