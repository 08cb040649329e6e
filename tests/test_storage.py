"""The key and usage store, the same contract on the real SQLite and on a real Postgres:
versioned migrations applied once, keys found by hash, revocation, usage totals per day."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from server.access.keys import KeySpec, Limits, hash_secret, mint
from server.access.storage import (
    KeyNameTaken,
    StorageError,
    Store,
    UsageRow,
    database_url,
    open_store,
)
from server.access.storage.migrations import LATEST, MIGRATIONS
from server.config import ConfigError, Settings


def row(
    key: str | None,
    model: str,
    day: str,
    tokens: tuple[int, int],
    status: int = 200,
    ts: float = 1_800_000_000.0,
) -> UsageRow:
    return UsageRow(
        ts=ts,
        day=day,
        request_id="r",
        key_name=key,
        model=model,
        persona=None,
        provider="openai_compatible",
        stream=False,
        status=status,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        latency_ms=1.5,
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


async def test_keys_are_found_by_hash_and_revoked_once(store: Store) -> None:
    assert not await store.any_keys()
    secret, key = mint(KeySpec("team-a", ("gpt-*",), Limits(rpm=5, budget_month=10**9)))
    await store.create_key(key)
    assert await store.any_keys()
    assert await store.find_key(hash_secret(secret)) == key
    assert await store.find_key(hash_secret(secret + "x")) is None
    assert await store.get_key("team-a") == key
    with pytest.raises(KeyNameTaken):
        await store.create_key(mint(KeySpec("team-a"))[1])

    revoked = await store.revoke_key("team-a", 1_900_000_000.0)
    assert revoked is not None and revoked.state() == "revoked"
    again = await store.revoke_key("team-a", 1_950_000_000.0)
    assert again is not None and again.revoked_at == 1_900_000_000.0
    assert await store.revoke_key("nobody", 1.0) is None
    assert [k.name for k in await store.list_keys()] == ["team-a"]
    assert await store.any_keys()  # a revoked key still counts: revoking does not reopen


async def test_usage_totals_group_by_day_key_and_model(store: Store) -> None:
    await store.add_usage(
        [
            row("a", "m1", "2027-01-01", (3, 4)),
            row("a", "m1", "2027-01-01", (1, 1), status=502),
            row("a", "m2", "2027-01-01", (10, 0)),
            row("b", "m1", "2027-01-02", (2, 2), ts=1_800_100_000.0),
            row(None, "m1", "2027-01-02", (5, 5)),
        ]
    )
    totals = await store.usage_totals("2027-01-01", "2027-01-02")
    assert [(t.day, t.key_name, t.model, t.requests, t.errors) for t in totals] == [
        ("2027-01-01", "a", "m1", 2, 1),
        ("2027-01-01", "a", "m2", 1, 0),
        ("2027-01-02", None, "m1", 1, 0),
        ("2027-01-02", "b", "m1", 1, 0),
    ]
    assert totals[0].to_dict()["total_tokens"] == 9
    only_b = await store.usage_totals("2027-01-01", "2027-12-31", "b")
    assert [(t.key_name, t.prompt_tokens, t.completion_tokens) for t in only_b] == [("b", 2, 2)]
    assert await store.usage_totals("2027-01-03", "2027-01-09") == []
    assert await store.tokens_since(1_800_050_000.0) == {"b": 4}


async def test_migrations_are_recorded_and_applied_once(store: Store) -> None:
    assert await store.migrate() == LATEST  # a second start finds nothing to do
    await store.add_usage([row("a", "m", "2027-01-01", (1, 1))])
    assert await store.migrate() == LATEST
    assert len(await store.usage_totals("2027-01-01", "2027-01-01")) == 1


async def test_replicas_starting_together_migrate_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [open_store(url) for _ in range(4)]
    assert await asyncio.gather(*(s.migrate() for s in stores)) == [LATEST] * 4
    for s in stores:
        await s.aclose()
    with sqlite3.connect(tmp_path / "shared.db") as conn:
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
    assert versions == [(m.version,) for m in MIGRATIONS]


@pytest.mark.services
async def test_postgres_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    stores = [open_store(postgres_url) for _ in range(4)]
    assert await asyncio.gather(*(s.migrate() for s in stores)) == [LATEST] * 4
    for s in stores:
        await s.aclose()
    conn = await asyncpg.connect(postgres_url)
    try:
        versions = await conn.fetch("SELECT version FROM schema_migrations")
    finally:
        await conn.close()
    assert [v[0] for v in versions] == [m.version for m in MIGRATIONS]


async def test_an_unreachable_database_is_a_storage_error(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    store = open_store(f"sqlite:///{blocked / 'sub' / 'puente.db'}")
    with pytest.raises(StorageError):
        await store.migrate()
    await store.aclose()
    postgres = open_store("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(StorageError) as caught:
        await postgres.migrate()
    assert "127.0.0.1:1" in str(caught.value)
    await postgres.aclose()


def test_where_the_sqlite_file_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUENTE_DATA_DIR", raising=False)
    path = tmp_path / "etc" / "puente.yaml"
    path.parent.mkdir()

    def url(text: str = "models: []\n") -> str:
        path.write_text(text)
        return database_url(Settings.from_file(path))

    assert url() == f"sqlite:///{tmp_path / 'etc' / 'puente.db'}"
    assert url("data_dir: ../data\n") == f"sqlite:///{tmp_path / 'data' / 'puente.db'}"
    assert url("database_url: sqlite:///keys.db\n") == f"sqlite:///{tmp_path / 'etc' / 'keys.db'}"
    assert url("database_url: ${UNSET_DB_URL:-}\n").endswith("/etc/puente.db")
    monkeypatch.setenv("PUENTE_DATA_DIR", str(tmp_path / "var"))
    assert url() == f"sqlite:///{tmp_path / 'var' / 'puente.db'}"
    pg = "postgresql://puente@db:5432/puente"
    assert url(f"database_url: {pg}\n") == pg
    with pytest.raises(ConfigError, match="'mysql' is not supported"):
        open_store("mysql://db/puente")


async def test_opening_waits_for_another_connections_lock_to_switch_to_wal(tmp_path: Path) -> None:
    # Switching to WAL answers "database is locked" at once instead of waiting like a write:
    # replicas creating the file together failed to start now and then.
    path = tmp_path / "shared.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # what a replica creating the file holds for a moment
    threading.Timer(0.2, other.execute, args=("COMMIT",)).start()
    store = open_store(f"sqlite:///{path}")
    try:
        assert await store.migrate() == LATEST
    finally:
        await store.aclose()
        other.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
