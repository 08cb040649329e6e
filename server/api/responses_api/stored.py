"""Stored responses: kept with ``store`` (the default), found by id by the key that made them.

A conversation is a chain of ``previous_response_id``s; continuing it replays every earlier
turn's input items and output items (function calls and their outputs included) before the new
input, as OpenAI does. Rows live in the access store's ``responses`` table (SQLite or Postgres,
so every replica sees them); rows older than ``responses.retention_days`` are not found and are
deleted at most once an hour, and a response larger than ``responses.max_bytes`` is answered but
not kept (logged).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from server.access.storage import StorageError, Store, StoredResponse
from server.api.responses_api.request import JSON, Converted, new_id
from server.config import ResponsesConfig
from server.errors import InvalidRequest, NotFound, ServiceUnavailable

log = logging.getLogger("puente.responses")

_PRUNE_EVERY = 3600.0
_MAX_CHAIN = 1000  # a conversation longer than this is surely a loop in the data
_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
}


def with_ids(items: list[JSON]) -> list[JSON]:
    """Input items as OpenAI lists them: each with a ``type`` and an ``id``, a message's text
    as a list of parts."""
    out = []
    for item in items:
        kind = item.get("type", "message")
        item_id = item.get("id") or new_id(_ID_PREFIX.get(kind, "item"))
        listed = {**item, "type": kind, "id": item_id}
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            listed["content"] = [{"type": part, "text": item["content"]}]
            if part == "output_text":
                listed["content"][0]["annotations"] = []
        if kind in _ID_PREFIX and kind != "reasoning":
            listed.setdefault("status", "completed")
        out.append(listed)
    return out


def not_found(response_id: str, param: str | None = None) -> NotFound:
    what = "Previous response" if param == "previous_response_id" else "Response"
    return NotFound(f"{what} with id '{response_id}' not found.", param=param)


class ResponseStore:
    def __init__(
        self, store: Store, config: ResponsesConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._pruned_at = 0.0

    @property
    def _oldest(self) -> float:
        return self._clock() - self._config.retention_days * 86400

    async def _get(self, response_id: str, key_name: str | None) -> StoredResponse | None:
        try:
            stored = await self._store.get_response(response_id, key_name)
        except StorageError as exc:
            log.error("response store failed: %s", exc)
            raise ServiceUnavailable("Stored responses are unavailable right now.") from None
        if stored is None or stored.created_at < self._oldest:
            return None
        return stored

    async def get(
        self, response_id: str, key_name: str | None, param: str | None = None
    ) -> StoredResponse:
        stored = await self._get(response_id, key_name)
        if stored is None:
            raise not_found(response_id, param)
        return stored

    async def history(self, response_id: str, key_name: str | None) -> list[JSON]:
        """Every item of the conversation up to and including ``response_id``, oldest first."""
        turns: list[StoredResponse] = []
        next_id: str | None = response_id
        while next_id is not None:
            if len(turns) >= _MAX_CHAIN:
                raise InvalidRequest(
                    "The conversation is too long to continue.", param="previous_response_id"
                )
            turn = await self.get(next_id, key_name, "previous_response_id")
            turns.append(turn)
            next_id = turn.previous_response_id
        items: list[JSON] = []
        for turn in reversed(turns):
            items += turn.input_items
            items += turn.response.get("output") or []
        return items

    async def save(self, converted: Converted, response: JSON, key_name: str | None) -> bool:
        """Keep ``response`` (unless ``store: false``); False when it was not kept."""
        if not converted.store:
            return False
        stored = StoredResponse(
            id=converted.response_id,
            key_name=key_name,
            created_at=float(converted.created_at),
            previous_response_id=converted.previous_response_id,
            input_items=with_ids(converted.input_items),
            response=response,
        )
        size = len(orjson.dumps(stored.input_items)) + len(orjson.dumps(response))
        if size > self._config.max_bytes:
            log.warning(
                "response %s not stored: %d bytes is over responses.max_bytes (%d)",
                converted.response_id,
                size,
                self._config.max_bytes,
            )
            return False
        try:
            await self._store.put_response(stored)
            if self._clock() - self._pruned_at >= _PRUNE_EVERY:
                self._pruned_at = self._clock()
                pruned = await self._store.prune_responses(self._oldest)
                if pruned:
                    log.info("deleted %d stored responses past retention", pruned)
        except StorageError as exc:
            # The answer is already made; a client continuing it will get a clear 404.
            log.error("response %s not stored: %s", converted.response_id, exc)
            return False
        return True

    async def delete(self, response_id: str, key_name: str | None) -> None:
        if await self._get(response_id, key_name) is None:
            raise not_found(response_id)
        try:
            await self._store.delete_response(response_id, key_name)
        except StorageError as exc:
            log.error("response store failed: %s", exc)
            raise ServiceUnavailable("Stored responses are unavailable right now.") from None


def item_page(items: list[JSON], *, order: str, after: str | None, limit: int) -> JSON:
    """``GET /v1/responses/{id}/input_items``: a cursor page, newest first unless ``asc``."""
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid value for 'order': expected 'asc' or 'desc'.", param="order")
    if not 1 <= limit <= 100:
        raise InvalidRequest("Invalid value for 'limit': expected 1 to 100.", param="limit")
    ordered = items if order == "asc" else list(reversed(items))
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise InvalidRequest(f"No input item with id '{after}'.", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    page = ordered[:limit]
    data: list[Any] = page
    return {
        "object": "list",
        "data": data,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ordered) > limit,
    }
