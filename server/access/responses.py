"""Stored responses: kept in the key and usage database (``responses`` table), per key.

A row keeps the conversation's input items (those of the responses it continued, then its own)
and the Response, so continuing it is one lookup however long the conversation. A response is
seen only by the key that made it (or, with no key, only by requests without one) and by the
admin (``PUENTE_ADMIN_KEY``, on the read and delete routes, ``ANY_KEY``); an expired
row is as good as gone and is deleted by a prune, run at most once an hour after a save.

Saving happens after the answer is complete; a save that fails is logged and counted
(``puente_responses_stored_total{outcome="failed"}``), never turned into an error for an answer
already given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from prometheus_client import Counter

from server.access.auth import Access
from server.access.storage import StorageError, StoredResponse
from server.config import ResponsesConfig
from server.errors import NotFound
from server.pipeline.request import JSON

log = logging.getLogger("puente.responses")

PRUNE_EVERY = 3600.0

ANY_KEY = object()
"""The owner the admin reads and deletes as: every key's responses."""

Owner = str | None | object
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Conversation:
    """A stored response, read back."""

    input: list[JSON]
    response: JSON

    @property
    def items(self) -> list[JSON]:
        """What a response continuing this one starts from: its input, then its output."""
        return [*self.input, *self.response.get("output", [])]


def not_found(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param=param, code="not_found")


class ResponseStore:
    """Built once in the app's lifespan (``Runtime.responses``)."""

    def __init__(
        self, access: Access, counter: Counter, settings: Callable[[], ResponsesConfig]
    ) -> None:
        self._access = access
        self._counter = counter
        self._config = settings
        """The ``responses:`` settings served now (a reload may change them)."""
        self._pruned_at = 0.0

    @property
    def _settings(self) -> tuple[float, int]:
        config = self._config()
        return config.retention_days * DAY, config.max_bytes

    async def _row(self, response_id: str, owner: Owner) -> StoredResponse | None:
        access = self._access
        row = await access.stored(access.store.get_response(response_id))
        foreign = owner is not ANY_KEY and row is not None and row.key_name != owner
        if row is None or foreign or row.expires_at <= time.time():
            return None  # another key's response is as unknown as a missing one
        return row

    async def load(self, response_id: str, owner: Owner, param: str | None = None) -> Conversation:
        row = await self._row(response_id, owner)
        if row is None:
            raise not_found(response_id, param)
        return Conversation(orjson.loads(row.input), orjson.loads(row.response))

    async def delete(self, response_id: str, owner: Owner) -> None:
        if await self._row(response_id, owner) is None:
            raise not_found(response_id)
        access = self._access
        await access.stored(access.store.delete_response(response_id))

    async def save(self, key_name: str | None, items: list[JSON], response: JSON) -> None:
        """Keep ``response`` (never raises: the answer is already the client's)."""
        counter = self._counter
        retention, max_bytes = self._settings
        now = time.time()
        input_text, response_text = orjson.dumps(items), orjson.dumps(response)
        size = len(input_text) + len(response_text)
        if size > max_bytes:
            log.warning(
                "response %s not stored: %d bytes, above responses.max_bytes (%d)",
                response["id"],
                size,
                max_bytes,
            )
            counter.labels("too_large").inc()
            return
        row = StoredResponse(
            id=response["id"],
            key_name=key_name,
            created_at=now,
            expires_at=now + retention,
            model=str(response.get("model", "")),
            input=input_text.decode(),
            response=response_text.decode(),
        )
        store = self._access.store
        try:
            await store.put_response(row)
        except StorageError as exc:
            log.error("response %s not stored: %s", response["id"], exc)
            counter.labels("failed").inc()
            return
        counter.labels("stored").inc()
        if now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            try:
                pruned = await store.prune_responses(now)
            except StorageError as exc:
                log.warning("pruning expired stored responses failed: %s", exc)
            else:
                if pruned:
                    log.info("pruned %d expired stored responses", pruned)
