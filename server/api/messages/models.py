"""``GET /v1/models`` in Anthropic's shape, for clients that send ``anthropic-version``
(https://docs.anthropic.com/en/api/models-list): ``type: "model"``, ``id``, ``display_name``,
``created_at`` (RFC 3339), and the page fields ``has_more``, ``first_id``, ``last_id``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from server.errors import InvalidRequest
from server.pipeline.request import JSON

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def wants_anthropic(headers: Mapping[str, str]) -> bool:
    return "anthropic-version" in headers


def card(openai: Mapping[str, Any]) -> JSON:
    """An OpenAI model card → Anthropic's ``ModelInfo``."""
    created = datetime.fromtimestamp(int(openai.get("created") or 0), UTC)
    return {
        "type": "model",
        "id": openai["id"],
        "display_name": openai["id"],
        "created_at": created.isoformat().replace("+00:00", "Z"),
    }


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidRequest(f"limit: must be an integer from 1 to {MAX_LIMIT}", param="limit")
    return int(value)


def page(cards: list[JSON], query: Mapping[str, str]) -> JSON:
    """One page of ``cards`` (configuration order), as ``limit``, ``after_id`` and
    ``before_id`` ask."""
    ids = [c["id"] for c in cards]
    limit = _limit(query.get("limit"))
    after, before = query.get("after_id"), query.get("before_id")
    if before is not None and before in ids:
        end = ids.index(before)
        chosen = cards[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        start = ids.index(after) + 1 if after is not None and after in ids else 0
        chosen = cards[start : start + limit]
        has_more = start + limit < len(cards)
    return {
        "data": chosen,
        "has_more": has_more,
        "first_id": chosen[0]["id"] if chosen else None,
        "last_id": chosen[-1]["id"] if chosen else None,
    }
