"""The schema, as numbered steps applied in order, once, at start (``schema_migrations`` says
which are in). A new step is appended here with the next number; a released step never changes.

Both dialects keep the same tables and columns so the stores' queries read alike. Times are Unix
seconds (float), ``day`` the UTC date as ``YYYY-MM-DD`` (what totals group by), and usage rows name
their key rather than reference it: keys are never deleted and their names never change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "api keys and usage rows",
        sqlite=(
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                key_hash TEXT NOT NULL UNIQUE,
                hint TEXT NOT NULL,
                models TEXT NOT NULL,
                rpm INTEGER, tpm INTEGER, budget_day INTEGER, budget_month INTEGER,
                created_at REAL NOT NULL, expires_at REAL, revoked_at REAL
            )""",
            """CREATE TABLE usage (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                ts REAL NOT NULL,
                day TEXT NOT NULL,
                request_id TEXT NOT NULL,
                key_name TEXT,
                model TEXT NOT NULL,
                persona TEXT,
                provider TEXT NOT NULL,
                stream INTEGER NOT NULL,
                status INTEGER NOT NULL,
                prompt_tokens INTEGER NOT NULL,
                completion_tokens INTEGER NOT NULL,
                latency_ms REAL NOT NULL
            )""",
            "CREATE INDEX usage_day_key ON usage (day, key_name)",
            "CREATE INDEX usage_ts ON usage (ts)",
        ),
        postgres=(
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                key_hash TEXT NOT NULL UNIQUE,
                hint TEXT NOT NULL,
                models TEXT NOT NULL,
                rpm INTEGER, tpm INTEGER, budget_day BIGINT, budget_month BIGINT,
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION,
                revoked_at DOUBLE PRECISION
            )""",
            """CREATE TABLE usage (
                id BIGSERIAL PRIMARY KEY,
                ts DOUBLE PRECISION NOT NULL,
                day TEXT NOT NULL,
                request_id TEXT NOT NULL,
                key_name TEXT,
                model TEXT NOT NULL,
                persona TEXT,
                provider TEXT NOT NULL,
                stream BOOLEAN NOT NULL,
                status INTEGER NOT NULL,
                prompt_tokens INTEGER NOT NULL,
                completion_tokens INTEGER NOT NULL,
                latency_ms DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX usage_day_key ON usage (day, key_name)",
            "CREATE INDEX usage_ts ON usage (ts)",
        ),
    ),
    Migration(
        2,
        "stored responses (POST /v1/responses)",
        sqlite=(
            """CREATE TABLE responses (
                id TEXT PRIMARY KEY,
                key_name TEXT,
                created_at REAL NOT NULL,
                expires_at REAL NOT NULL,
                model TEXT NOT NULL,
                input TEXT NOT NULL,
                response TEXT NOT NULL
            )""",
            "CREATE INDEX responses_expires ON responses (expires_at)",
        ),
        postgres=(
            """CREATE TABLE responses (
                id TEXT PRIMARY KEY,
                key_name TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                model TEXT NOT NULL,
                input TEXT NOT NULL,
                response TEXT NOT NULL
            )""",
            "CREATE INDEX responses_expires ON responses (expires_at)",
        ),
    ),
)

LATEST = MIGRATIONS[-1].version

CREATE_LEDGER = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at {real} NOT NULL)"
)


def pending(current: int) -> list[Migration]:
    return [m for m in MIGRATIONS if m.version > current]
