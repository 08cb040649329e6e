"""What the access layer keeps, and the small interface every database behind it speaks.

StorageError            the database failed (unreachable, locked too long, broken schema)
KeyNameTaken            a key with that name exists (revoked keys keep their names)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from server.access.keys import ApiKey


class StorageError(Exception):
    """The database could not do what was asked; the message names the database, never a key."""


class KeyNameTaken(StorageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a key named {name!r} already exists")
        self.name = name


class UsageRow(NamedTuple):
    """One finished request. A named tuple: one is made on every request, at a fifth of what a
    frozen dataclass's ``__init__`` costs."""

    ts: float
    day: str
    request_id: str
    key_name: str | None
    model: str
    persona: str | None
    provider: str
    stream: bool
    status: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """Requests and tokens of one key on one model on one UTC day."""

    day: str
    key_name: str | None
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int

    def to_dict(self) -> dict[str, object]:
        return {
            "day": self.day,
            "key": self.key_name,
            "model": self.model,
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A Responses API answer kept for ``previous_response_id`` and ``GET /v1/responses/{id}``:
    ``input`` and ``response`` are JSON text (the conversation's input items, the Response)."""

    id: str
    key_name: str | None
    created_at: float
    expires_at: float
    model: str
    input: str
    response: str


class Store(Protocol):
    """Keys and usage rows. ``migrate`` runs once, before anything else."""

    description: str
    """Where the data lives, for logs (no password)."""

    async def migrate(self) -> int:
        """Bring the schema up to date; returns the schema version now in place."""
        ...

    def key_epoch(self) -> Hashable | None:
        """Cheap, without I/O on the event loop beyond shared memory: a value that changes
        whenever a key was created or revoked, by this process or any other on the same data;
        ``None`` when the store cannot tell right now (then nothing may be trusted from a
        cache). See ``server/access/keycache.py``."""
        ...

    async def create_key(self, key: ApiKey) -> None: ...

    async def find_key(self, key_hash: str) -> ApiKey | None: ...

    async def get_key(self, name: str) -> ApiKey | None: ...

    async def list_keys(self) -> list[ApiKey]: ...

    async def revoke_key(self, name: str, at: float) -> ApiKey | None:
        """Revoke (once: a second revoke keeps the first time); None when no such key."""
        ...

    async def any_keys(self) -> bool:
        """Whether a key was ever created (revoked ones count: revoking does not reopen)."""
        ...

    async def add_usage(self, rows: Sequence[UsageRow]) -> None: ...

    async def usage_totals(
        self, since_day: str, until_day: str, key_name: str | None = None
    ) -> list[UsageTotal]:
        """Totals per day, key and model for ``since_day`` ≤ day ≤ ``until_day``."""
        ...

    async def tokens_since(self, ts: float) -> dict[str, int]:
        """Tokens (prompt + completion) per key name in rows at or after ``ts``."""
        ...

    async def put_response(self, row: StoredResponse) -> None: ...

    async def get_response(self, response_id: str) -> StoredResponse | None: ...

    async def delete_response(self, response_id: str) -> bool:
        """Whether a row was deleted."""
        ...

    async def prune_responses(self, now: float) -> int:
        """Delete the responses expired at ``now``; returns how many."""
        ...

    async def aclose(self) -> None: ...
