"""Keys and usage in Postgres (``database_url: postgresql://…``), shared by every replica.

Replicas starting together race to migrate; a transaction-scoped advisory lock makes one of them
apply the steps while the others wait and then find nothing left to do.

Every key change (create, revoke) sends a ``NOTIFY puente_keys`` in its transaction; each replica
keeps one connection that LISTENs and moves ``key_epoch`` on, so its key cache forgets what it
knew within the time a notification takes to arrive (milliseconds). While that connection is
down, ``key_epoch`` is ``None`` and every request asks the database, as before the cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg

from server.access.keys import ApiKey
from server.access.storage import migrations
from server.access.storage.base import (
    KeyNameTaken,
    StorageError,
    StoredResponse,
    UsageRow,
    UsageTotal,
)
from server.access.storage.codec import (
    KEY_COLUMNS,
    RESPONSE_COLUMNS,
    USAGE_COLUMNS,
    key_from_row,
    key_params,
    response_from_row,
    response_params,
    usage_params,
)

T = TypeVar("T")

log = logging.getLogger("puente.access")

KEYS_CHANNEL = "puente_keys"
# How long after a failed LISTEN connection the next attempt is made.
_RELISTEN_AFTER = 1.0

# Any fixed number; it only has to be the same in every replica.
_MIGRATION_LOCK = 0x70_75_65_6E_74_65  # "puente"

_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def _where(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"Postgres {host}{port}{parts.path}"


class PostgresStore:
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self._url = url
        self._sizes = (min_size, max_size)
        self._pool: asyncpg.Pool | None = None
        self.description = _where(url)
        self._listener: asyncpg.Connection | None = None
        self._listening: asyncio.Task[None] | None = None
        self._next_listen = 0.0
        self._epoch = 0
        self._trusted = False

    # -- the key cache's epoch: LISTEN puente_keys ---------------------------------------------

    def key_epoch(self) -> int | None:
        """Moves on with every key change any replica makes (and whenever the LISTEN connection
        was re-made: what happened while it was down is unknown); ``None`` while not listening."""
        if self._trusted:
            return self._epoch
        if self._listening is None and time.monotonic() >= self._next_listen:
            self._listening = asyncio.get_running_loop().create_task(self._listen())
        return None

    async def _listen(self) -> None:
        try:
            conn = await asyncpg.connect(self._url, timeout=10)
            await conn.add_listener(KEYS_CHANNEL, self._changed)
            conn.add_termination_listener(self._lost)
        except _DRIVER_ERRORS as exc:
            log.warning("%s: cannot LISTEN for key changes: %s", self.description, exc)
            self._next_listen = time.monotonic() + _RELISTEN_AFTER
            return
        finally:
            self._listening = None
        self._listener = conn
        self._epoch += 1
        self._trusted = True

    def _changed(self, *_: object) -> None:
        self._epoch += 1

    def _lost(self, *_: object) -> None:
        self._trusted = False
        self._listener = None
        self._epoch += 1
        self._next_listen = time.monotonic() + _RELISTEN_AFTER

    async def _run(self, work: Callable[[asyncpg.pool.PoolConnectionProxy], Awaitable[T]]) -> T:
        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._url, min_size=self._sizes[0], max_size=self._sizes[1], timeout=10
                )
            async with self._pool.acquire() as conn:
                return await work(conn)
        except asyncpg.UniqueViolationError:
            raise
        except _DRIVER_ERRORS as exc:
            raise StorageError(f"{self.description}: {type(exc).__name__}: {exc}") from None

    async def migrate(self) -> int:
        async def apply(conn: asyncpg.pool.PoolConnectionProxy) -> int:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute(migrations.CREATE_LEDGER.format(real="DOUBLE PRECISION"))
                latest = await conn.fetchval("SELECT MAX(version) FROM schema_migrations")
                current = int(latest or 0)
                for step in migrations.pending(current):
                    for statement in step.postgres:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO schema_migrations VALUES ($1, $2, $3)",
                        step.version,
                        step.description,
                        time.time(),
                    )
                    current = step.version
                return current

        return await self._run(apply)

    async def create_key(self, key: ApiKey) -> None:
        async def insert(conn: asyncpg.pool.PoolConnectionProxy) -> None:
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO api_keys ({KEY_COLUMNS})"  # noqa: S608 (constant columns)
                    " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
                    *key_params(key),
                )
                await conn.execute("SELECT pg_notify($1, $2)", KEYS_CHANNEL, key.name)

        try:
            await self._run(insert)
        except asyncpg.UniqueViolationError:
            raise KeyNameTaken(key.name) from None

    async def find_key(self, key_hash: str) -> ApiKey | None:
        return await self._one("key_hash", key_hash)

    async def get_key(self, name: str) -> ApiKey | None:
        return await self._one("name", name)

    async def _one(self, column: str, value: str) -> ApiKey | None:
        sql = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE {column} = $1"  # noqa: S608

        async def select(conn: asyncpg.pool.PoolConnectionProxy) -> ApiKey | None:
            row = await conn.fetchrow(sql, value)
            return None if row is None else key_from_row(row)

        return await self._run(select)

    async def list_keys(self) -> list[ApiKey]:
        async def select(conn: asyncpg.pool.PoolConnectionProxy) -> list[ApiKey]:
            sql = f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, name"  # noqa: S608
            rows = await conn.fetch(sql)
            return [key_from_row(row) for row in rows]

        return await self._run(select)

    async def revoke_key(self, name: str, at: float) -> ApiKey | None:
        async def update(conn: asyncpg.pool.PoolConnectionProxy) -> None:
            async with conn.transaction():
                await conn.execute(
                    "UPDATE api_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
                    at,
                    name,
                )
                # Delivered to every listening replica when the transaction commits.
                await conn.execute("SELECT pg_notify($1, $2)", KEYS_CHANNEL, name)

        await self._run(update)
        return await self.get_key(name)

    async def any_keys(self) -> bool:
        async def select(conn: asyncpg.pool.PoolConnectionProxy) -> bool:
            return await conn.fetchval("SELECT 1 FROM api_keys LIMIT 1") is not None

        return await self._run(select)

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        records = [usage_params(row) for row in rows]

        async def insert(conn: asyncpg.pool.PoolConnectionProxy) -> None:
            await conn.copy_records_to_table("usage", records=records, columns=USAGE_COLUMNS)

        await self._run(insert)

    async def usage_totals(
        self, since_day: str, until_day: str, key_name: str | None = None
    ) -> list[UsageTotal]:
        sql = (
            "SELECT day, key_name, model, COUNT(*),"
            " SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END),"
            " SUM(prompt_tokens), SUM(completion_tokens)"
            " FROM usage WHERE day >= $1 AND day <= $2"
        )
        args: list[str] = [since_day, until_day]
        if key_name is not None:
            sql += " AND key_name = $3"
            args.append(key_name)
        sql += " GROUP BY day, key_name, model ORDER BY day, COALESCE(key_name, ''), model"

        async def select(conn: asyncpg.pool.PoolConnectionProxy) -> list[UsageTotal]:
            rows = await conn.fetch(sql, *args)
            return [UsageTotal(r[0], r[1], r[2], *(int(v) for v in r[3:])) for r in rows]

        return await self._run(select)

    async def tokens_since(self, ts: float) -> dict[str, int]:
        async def select(conn: asyncpg.pool.PoolConnectionProxy) -> dict[str, int]:
            rows = await conn.fetch(
                "SELECT key_name, SUM(prompt_tokens + completion_tokens) FROM usage"
                " WHERE ts >= $1 AND key_name IS NOT NULL GROUP BY key_name",
                ts,
            )
            return {row[0]: int(row[1]) for row in rows}

        return await self._run(select)

    async def put_response(self, row: StoredResponse) -> None:
        async def insert(conn: asyncpg.pool.PoolConnectionProxy) -> None:
            await conn.execute(
                f"INSERT INTO responses ({RESPONSE_COLUMNS})"  # noqa: S608
                " VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (id) DO NOTHING",
                *response_params(row),
            )

        await self._run(insert)

    async def get_response(self, response_id: str) -> StoredResponse | None:
        async def select(conn: asyncpg.pool.PoolConnectionProxy) -> StoredResponse | None:
            sql = f"SELECT {RESPONSE_COLUMNS} FROM responses WHERE id = $1"  # noqa: S608
            row = await conn.fetchrow(sql, response_id)
            return None if row is None else response_from_row(row)

        return await self._run(select)

    async def delete_response(self, response_id: str) -> bool:
        async def delete(conn: asyncpg.pool.PoolConnectionProxy) -> bool:
            status = await conn.execute("DELETE FROM responses WHERE id = $1", response_id)
            return str(status) != "DELETE 0"

        return await self._run(delete)

    async def prune_responses(self, now: float) -> int:
        async def delete(conn: asyncpg.pool.PoolConnectionProxy) -> int:
            status = await conn.execute("DELETE FROM responses WHERE expires_at <= $1", now)
            return int(str(status).split()[-1])

        return await self._run(delete)

    async def aclose(self) -> None:
        self._trusted = False
        if self._listening is not None:
            self._listening.cancel()
            await asyncio.gather(self._listening, return_exceptions=True)
            self._listening = None
        if self._listener is not None:
            listener, self._listener = self._listener, None
            listener.remove_termination_listener(self._lost)
            try:
                await listener.close(timeout=5)
            except _DRIVER_ERRORS:
                listener.terminate()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
