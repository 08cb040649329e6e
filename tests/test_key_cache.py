"""The key cache (server/access/keycache.py): a known key costs no database round trip, and a
revocation still holds — at once in the process that made it; within the key watch's interval
(50 ms) in the other processes on the same SQLite file; within a NOTIFY's delay on the other
replicas sharing a Postgres — and a replica that lost its LISTEN connection stops trusting what
it remembered."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest

from tests.access_support import ADMIN, USER, admin_headers, chat, create_key, eventually, unique
from tests.conftest import gateway_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente
from tests.services import fresh_database


def _pair(
    config: dict[str, Any], workdir: Path
) -> Iterator[tuple[InProcessPuente, InProcessPuente]]:
    env = {"PUENTE_ADMIN_KEY": ADMIN}
    with (
        InProcessPuente(config, workdir, env=env, name="a") as a,
        InProcessPuente(config, workdir, env=env, name="b") as b,
    ):
        yield a, b


@pytest.fixture(scope="module")
def on_sqlite(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[InProcessPuente, InProcessPuente]]:
    """Two Puentes whose configurations sit in one folder: one SQLite file (puente.db) for both."""
    yield from _pair(gateway_config(fake_upstream), tmp_path_factory.mktemp("keycache"))


def _revoke(server: InProcessPuente, name: str) -> None:
    r = httpx.delete(server.url + f"/admin/keys/{name}", headers=admin_headers(), timeout=10)
    assert r.status_code == 200, r.text


def _listening(server: InProcessPuente, key: str) -> bool:
    """Whether ``server`` trusts its key cache (it starts listening on its first keyed request)."""
    assert chat(server, key).status_code in (200, 401)
    return bool(server.runtime.access.store._trusted)


def _sdk(server: InProcessPuente, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def test_a_key_revoked_on_one_replica_is_refused_by_the_other_on_sqlite(
    on_sqlite: tuple[InProcessPuente, InProcessPuente],
) -> None:
    a, b = on_sqlite
    name = unique("cached")
    key = create_key(a, name)
    with _sdk(b, key) as client:
        for _ in range(3):  # known to b now, from memory
            assert client.chat.completions.create(model="fake-model", messages=USER).id
        _revoke(a, name)
        assert chat(a, key).json()["error"]["code"] == "revoked_api_key"  # at once where revoked
        # b forgets it at its next look at the file (WATCH_INTERVAL, 50 ms).
        eventually(lambda: chat(b, key).status_code == 401, what="b refusing the revoked key")
        with pytest.raises(openai.AuthenticationError) as refused:
            client.chat.completions.create(model="fake-model", messages=USER)
    assert refused.value.code == "revoked_api_key"


def test_a_known_key_is_read_from_the_database_once(
    on_sqlite: tuple[InProcessPuente, InProcessPuente],
) -> None:
    a, _ = on_sqlite
    key = create_key(a, unique("read-once"))
    store = a.runtime.access.store
    eventually(lambda: chat(a, key).status_code == 200 and store._fingerprint is not None)
    looked_up: list[str] = []
    find_key = store.find_key

    async def counting(digest: str) -> Any:
        looked_up.append(digest)
        return await find_key(digest)

    store.find_key = counting  # type: ignore[method-assign]
    try:
        statuses = [chat(a, key).status_code for _ in range(5)]
        wrong = [chat(a, "sk-pnt-not-a-key").status_code for _ in range(3)]
    finally:
        del store.find_key
    assert statuses == [200] * 5 and wrong == [401] * 3
    # Each digest is read at most once (usage rows written meanwhile change the file, not the
    # keys, so nothing is forgotten).
    assert len(looked_up) == len(set(looked_up)) <= 2, looked_up


def test_a_key_created_after_its_secret_was_refused_works_at_once(
    on_sqlite: tuple[InProcessPuente, InProcessPuente],
) -> None:
    a, b = on_sqlite
    # Any digest refused once is remembered as unknown; a new key must not be hidden by that.
    assert chat(b, "sk-pnt-unknown-one").status_code == 401
    key = create_key(a, unique("fresh"))
    assert chat(b, key).status_code == 200


# -- Postgres: two replicas, LISTEN/NOTIFY ---------------------------------------------------


@pytest.fixture(scope="module")
def on_postgres(
    fake_upstream: FakeOpenAI, postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[InProcessPuente, InProcessPuente]]:
    config = {**gateway_config(fake_upstream), "database_url": fresh_database(postgres_server)}
    yield from _pair(config, tmp_path_factory.mktemp("keycache-pg"))


@pytest.mark.services
def test_a_key_revoked_on_one_replica_is_refused_by_the_other_on_postgres(
    on_postgres: tuple[InProcessPuente, InProcessPuente],
) -> None:
    a, b = on_postgres
    name = unique("pg-cached")
    key = create_key(a, name)
    eventually(lambda: _listening(b, key), what="b listening")
    for _ in range(3):
        assert chat(b, key).status_code == 200
    _revoke(a, name)
    assert chat(a, key).json()["error"]["code"] == "revoked_api_key"  # at once where revoked
    # Elsewhere within a NOTIFY's delay (milliseconds), bounded here only by the test's patience.
    eventually(lambda: chat(b, key).status_code == 401, what="b refusing the revoked key")
    assert chat(b, key).json()["error"]["code"] == "revoked_api_key"


@pytest.mark.services
def test_a_replica_that_lost_its_listen_connection_does_not_trust_its_cache(
    on_postgres: tuple[InProcessPuente, InProcessPuente], postgres_server: str
) -> None:
    a, b = on_postgres
    name = unique("pg-lost")
    key = create_key(a, name)
    eventually(lambda: _listening(b, key), what="b listening")
    assert chat(b, key).status_code == 200
    listener = b.runtime.access.store._listener
    assert listener is not None
    pid = listener.get_server_pid()

    async def terminate() -> None:
        conn = await asyncpg.connect(postgres_server)
        try:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await conn.close()

    asyncio.run(terminate())
    eventually(lambda: b.runtime.access.store._listener is not listener, what="b noticing")
    # Served while b cannot hear changes (so not remembered), then revoked: b still refuses.
    assert chat(b, key).status_code == 200
    _revoke(a, name)
    assert chat(b, key).json()["error"]["code"] == "revoked_api_key"
    # And b listens again, so known keys are served from memory again.
    eventually(lambda: _listening(b, key), what="b listening again")
    assert chat(b, key).status_code == 401
