"""Rows ↔ objects, the same for every database (the tables have the same columns)."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from server.access.keys import ApiKey, Limits
from server.access.storage.base import StoredResponse, UsageRow

KEY_COLUMNS = (
    "id, name, key_hash, hint, models, rpm, tpm, budget_day, budget_month,"
    " created_at, expires_at, revoked_at"
)

USAGE_COLUMNS = (
    "ts",
    "day",
    "request_id",
    "key_name",
    "model",
    "persona",
    "provider",
    "stream",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
)


def key_params(key: ApiKey) -> tuple[Any, ...]:
    return (
        key.id,
        key.name,
        key.key_hash,
        key.hint,
        orjson.dumps(list(key.models)).decode(),
        key.limits.rpm,
        key.limits.tpm,
        key.limits.budget_day,
        key.limits.budget_month,
        key.created_at,
        key.expires_at,
        key.revoked_at,
    )


class Row(Protocol):
    """A row by column name: ``sqlite3.Row`` and ``asyncpg.Record`` both are."""

    def __getitem__(self, column: str) -> Any: ...


def key_from_row(row: Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        key_hash=row["key_hash"],
        hint=row["hint"],
        models=tuple(orjson.loads(row["models"])),
        limits=Limits(
            rpm=row["rpm"],
            tpm=row["tpm"],
            budget_day=row["budget_day"],
            budget_month=row["budget_month"],
        ),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


def usage_params(row: UsageRow) -> tuple[Any, ...]:
    return (
        row.ts,
        row.day,
        row.request_id,
        row.key_name,
        row.model,
        row.persona,
        row.provider,
        row.stream,
        row.status,
        row.prompt_tokens,
        row.completion_tokens,
        row.latency_ms,
    )


RESPONSE_COLUMNS = "id, key_name, created_at, expires_at, model, input, response"


def response_params(row: StoredResponse) -> tuple[Any, ...]:
    return (
        row.id,
        row.key_name,
        row.created_at,
        row.expires_at,
        row.model,
        row.input,
        row.response,
    )


def response_from_row(row: Row) -> StoredResponse:
    return StoredResponse(
        id=row["id"],
        key_name=row["key_name"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        model=row["model"],
        input=row["input"],
        response=row["response"],
    )
