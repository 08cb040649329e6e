"""Keys and usage in one SQLite file (the default): stdlib ``sqlite3`` on three threads.

Reads (a key lookup when the key cache misses) and writes (usage batches) each get their own
connection on their own thread, so a batch being written never holds up a lookup: in WAL mode
readers do not wait for the writer. ``synchronous=NORMAL`` in WAL mode keeps every commit across a
process crash and costs no fsync per batch.

A third connection, on a thread of its own, tells the key cache when keys may have changed
(``key_epoch``): every ``WATCH_INTERVAL`` it reads ``PRAGMA data_version``, which moves whenever
any other connection committed — this process's writer, ``puente keys revoke``, another replica
on the same file — and only then counts the keys again. (Asking on the event loop's thread on
every request instead made requests slower than the lookup it saved: bench/README.md.)
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

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

_BUSY_TIMEOUT = 10.0  # seconds a connection waits for another's write lock

_INSERT_USAGE = (  # constant columns, like every query built here
    f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in USAGE_COLUMNS)})"
)


class _Thread:
    """One connection, used only by the one thread that opened it."""

    def __init__(self, path: Path, name: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=_BUSY_TIMEOUT)
        conn.row_factory = sqlite3.Row
        _wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._conn is None:
                self._conn = self._open()
            return work(self._conn)
        except sqlite3.IntegrityError as exc:
            raise StorageError(f"SQLite constraint failed: {exc}") from None
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite {self._path}: {exc}") from None

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, work)

    async def close(self) -> None:
        def close(conn: sqlite3.Connection) -> None:
            conn.close()

        if self._conn is not None:
            await self.run(close)
            self._conn = None
        self._executor.shutdown(wait=True)


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. While another connection holds the write lock of a file not yet in WAL,
    the switch answers "database is locked" at once instead of waiting out the busy timeout:
    replicas (or a CLI) opening a new file together failed to start now and then (4 of 150
    tries with four at once). So it waits here, as long as a write would."""
    deadline = time.monotonic() + _BUSY_TIMEOUT
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _transaction(conn: sqlite3.Connection, work: Callable[[], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


# How often the key watch looks, and how long what it saw is trusted without a newer look (its
# thread may wait behind a busy file).
WATCH_INTERVAL = 0.05
_WATCH_TRUSTED_FOR = 1.0

# What changes whenever a key is created (one more row) or revoked (one more revoked_at): keys
# are never deleted and a revocation is never undone, so both counts only grow.
_KEY_FINGERPRINT = "SELECT COUNT(*), COUNT(revoked_at) FROM api_keys"


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"SQLite {path}"
        self._reader = _Thread(path, "puente-sqlite-read")
        self._writer = _Thread(path, "puente-sqlite-write")
        self._watcher = _Thread(path, "puente-sqlite-watch")
        self._watching: asyncio.Task[None] | None = None
        self._watched_at = -_WATCH_TRUSTED_FOR
        self._fingerprint: tuple[int, int] | None = None

    def key_epoch(self) -> tuple[int, int] | None:
        """Changes within ``WATCH_INTERVAL`` of a key change committed by any connection; ``None``
        when the watch has not answered lately (the caller then asks the database itself)."""
        if self._watching is None:
            self._watching = asyncio.get_running_loop().create_task(self._watch_keys())
        if time.monotonic() - self._watched_at > _WATCH_TRUSTED_FOR:
            return None
        return self._fingerprint

    async def _watch_keys(self) -> None:
        seen: int | None = None

        def look(conn: sqlite3.Connection) -> tuple[int, tuple[int, int] | None]:
            version = conn.execute("PRAGMA data_version").fetchall()[0][0]
            if version == seen:
                return version, self._fingerprint
            # Counted after reading the version: a commit in between is seen now and again at
            # the next look, never missed.
            count, revoked = conn.execute(_KEY_FINGERPRINT).fetchall()[0]
            return version, (count, revoked)

        while True:
            try:
                seen, fingerprint = await self._watcher.run(look)
            except StorageError:
                seen = self._fingerprint = None  # not trusted until a look succeeds again
            else:
                self._fingerprint = fingerprint
                self._watched_at = time.monotonic()
            await asyncio.sleep(WATCH_INTERVAL)

    async def migrate(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {self.path.parent}: {exc.strerror}") from None

        def apply(conn: sqlite3.Connection) -> int:
            conn.execute(migrations.CREATE_LEDGER.format(real="REAL"))

            def steps() -> int:
                row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
                current = int(row[0] or 0)
                for step in migrations.pending(current):
                    for statement in step.sqlite:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                        (step.version, step.description, time.time()),
                    )
                    current = step.version
                return current

            return _transaction(conn, steps)

        return await self._writer.run(apply)

    async def create_key(self, key: ApiKey) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
                    key_params(key),
                )
            except sqlite3.IntegrityError:
                raise KeyNameTaken(key.name) from None

        await self._writer.run(insert)

    async def find_key(self, key_hash: str) -> ApiKey | None:
        return await self._one("key_hash", key_hash)

    async def get_key(self, name: str) -> ApiKey | None:
        return await self._one("name", name)

    async def _one(self, column: str, value: str) -> ApiKey | None:
        def select(conn: sqlite3.Connection) -> ApiKey | None:
            sql = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE {column} = ?"  # noqa: S608
            row = conn.execute(sql, (value,)).fetchone()
            return None if row is None else key_from_row(row)

        return await self._reader.run(select)

    async def list_keys(self) -> list[ApiKey]:
        def select(conn: sqlite3.Connection) -> list[ApiKey]:
            sql = f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, name"  # noqa: S608
            rows = conn.execute(sql)
            return [key_from_row(row) for row in rows]

        return await self._reader.run(select)

    async def revoke_key(self, name: str, at: float) -> ApiKey | None:
        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (at, name),
            )

        await self._writer.run(update)
        return await self.get_key(name)

    async def any_keys(self) -> bool:
        def select(conn: sqlite3.Connection) -> bool:
            return conn.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None

        return await self._reader.run(select)

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        params = [usage_params(row) for row in rows]

        def insert(conn: sqlite3.Connection) -> None:
            _transaction(conn, lambda: conn.executemany(_INSERT_USAGE, params))

        await self._writer.run(insert)

    async def usage_totals(
        self, since_day: str, until_day: str, key_name: str | None = None
    ) -> list[UsageTotal]:
        sql = (
            "SELECT day, key_name, model, COUNT(*),"
            " SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END),"
            " SUM(prompt_tokens), SUM(completion_tokens)"
            " FROM usage WHERE day >= ? AND day <= ?"
        )
        args: tuple[str, ...] = (since_day, until_day)
        if key_name is not None:
            sql += " AND key_name = ?"
            args += (key_name,)
        sql += " GROUP BY day, key_name, model ORDER BY day, COALESCE(key_name, ''), model"

        def select(conn: sqlite3.Connection) -> list[UsageTotal]:
            return [UsageTotal(*row) for row in conn.execute(sql, args)]

        return await self._reader.run(select)

    async def tokens_since(self, ts: float) -> dict[str, int]:
        def select(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT key_name, SUM(prompt_tokens + completion_tokens) FROM usage"
                " WHERE ts >= ? AND key_name IS NOT NULL GROUP BY key_name",
                (ts,),
            )
            return {name: int(total) for name, total in rows}

        return await self._reader.run(select)

    async def put_response(self, row: StoredResponse) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO responses ({RESPONSE_COLUMNS})"  # noqa: S608
                " VALUES (?,?,?,?,?,?,?)",
                response_params(row),
            )

        await self._writer.run(insert)

    async def get_response(self, response_id: str) -> StoredResponse | None:
        def select(conn: sqlite3.Connection) -> StoredResponse | None:
            sql = f"SELECT {RESPONSE_COLUMNS} FROM responses WHERE id = ?"  # noqa: S608
            row = conn.execute(sql, (response_id,)).fetchone()
            return None if row is None else response_from_row(row)

        return await self._reader.run(select)

    async def delete_response(self, response_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

        return await self._writer.run(delete)

    async def prune_responses(self, now: float) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM responses WHERE expires_at <= ?", (now,)).rowcount

        return await self._writer.run(delete)

    async def aclose(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
            self._watching = None
        await self._watcher.close()
        await self._reader.close()
        await self._writer.close()
