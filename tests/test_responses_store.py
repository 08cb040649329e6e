"""Stored Responses API responses, on a real SQLite file and a real Postgres: kept per key,
found again after a restart, chained by ``previous_response_id``, deleted, and forgotten after
their retention."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openai.types.responses import ResponseItem
from pydantic import TypeAdapter

from server.access.storage import Store, open_store
from server.api.responses_api import convert, to_response
from server.api.responses_api.stored import ResponseStore, item_page
from server.config import ResponsesConfig
from server.errors import NotFound

ITEMS: TypeAdapter[Any] = TypeAdapter(ResponseItem)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'puente.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = open_store(url)
    await opened.migrate()
    yield opened
    await opened.aclose()


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000_000.0

    def __call__(self) -> float:
        return self.now


def answer(text: str) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


async def turn(
    responses: ResponseStore, body: dict[str, Any], key: str | None, reply: str
) -> tuple[str, list[dict[str, Any]]]:
    """One request through the converters and the store; (its id, the history it was given)."""
    history: list[dict[str, Any]] = []
    if body.get("previous_response_id"):
        history = await responses.history(body["previous_response_id"], key)
    converted = convert({"model": "m", **body}, history=history)
    await responses.save(converted, to_response(converted, answer(reply)), key)
    return converted.response_id, history


async def test_a_chain_replays_inputs_and_outputs(store: Store) -> None:
    responses = ResponseStore(store, ResponsesConfig())
    first, _ = await turn(responses, {"input": "one"}, "alice", "A1")
    calls = [
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ]
    second, _ = await turn(
        responses, {"input": calls, "previous_response_id": first}, "alice", "A2"
    )
    _, history = await turn(
        responses, {"input": "three", "previous_response_id": second}, "alice", "A3"
    )
    kinds = [(item["type"], item.get("role")) for item in history]
    assert kinds == [
        ("message", "user"),
        ("message", "assistant"),
        ("function_call", None),
        ("function_call_output", None),
        ("message", "assistant"),
    ]
    assert history[0]["content"] == [{"type": "input_text", "text": "one"}]
    for item in history:
        ITEMS.validate_python(item)  # as OpenAI lists them
    assert history[0]["id"].startswith("msg_")
    assert history[-1]["content"][0]["text"] == "A2"


async def test_only_the_key_that_made_it_sees_it(store: Store) -> None:
    responses = ResponseStore(store, ResponsesConfig())
    mine, _ = await turn(responses, {"input": "x"}, "alice", "A")
    anonymous, _ = await turn(responses, {"input": "x"}, None, "A")
    assert (await responses.get(mine, "alice")).response["output_text"] == "A"
    for response_id, key in ((mine, "bob"), (mine, None), (anonymous, "alice")):
        with pytest.raises(NotFound):
            await responses.get(response_id, key)
    with pytest.raises(NotFound) as caught:
        await responses.history(mine, "bob")
    assert caught.value.param == "previous_response_id"
    assert caught.value.message == f"Previous response with id '{mine}' not found."
    with pytest.raises(NotFound):
        await responses.delete(mine, "bob")
    assert await responses.get(mine, "alice")


async def test_delete_removes_it(store: Store) -> None:
    responses = ResponseStore(store, ResponsesConfig())
    response_id, _ = await turn(responses, {"input": "x"}, "alice", "A")
    await responses.delete(response_id, "alice")
    with pytest.raises(NotFound):
        await responses.get(response_id, "alice")
    with pytest.raises(NotFound):
        await responses.delete(response_id, "alice")


async def test_store_false_and_oversized_responses_keep_nothing(store: Store) -> None:
    responses = ResponseStore(store, ResponsesConfig(max_bytes=2000))
    unstored, _ = await turn(responses, {"input": "x", "store": False}, "alice", "A")
    big, _ = await turn(responses, {"input": "x" * 3000}, "alice", "A")
    for response_id in (unstored, big):
        with pytest.raises(NotFound):
            await responses.get(response_id, "alice")


async def test_retention_hides_then_deletes_old_responses(store: Store) -> None:
    clock = Clock()
    responses = ResponseStore(store, ResponsesConfig(retention_days=1), clock)
    converted = convert({"model": "m", "input": "old"})
    converted.created_at = int(clock.now)
    await responses.save(converted, to_response(converted, answer("A")), "alice")
    clock.now += 86400 + 1
    with pytest.raises(NotFound):
        await responses.get(converted.response_id, "alice")
    clock.now += 3600  # the next save prunes
    await turn(responses, {"input": "new"}, "alice", "B")
    assert await store.get_response(converted.response_id, "alice") is None


async def test_stored_responses_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'puente.db'}"
    first = open_store(url)
    await first.migrate()
    response_id, _ = await turn(ResponseStore(first, ResponsesConfig()), {"input": "x"}, "k", "A")
    await first.aclose()
    second = open_store(url)
    await second.migrate()
    stored = await ResponseStore(second, ResponsesConfig()).get(response_id, "k")
    assert stored.response["id"] == response_id
    await second.aclose()


def test_input_items_page_in_both_orders() -> None:
    items = [{"id": f"msg_{i}", "type": "message"} for i in range(5)]
    page = item_page(items, order="desc", after=None, limit=2)
    assert [i["id"] for i in page["data"]] == ["msg_4", "msg_3"] and page["has_more"]
    page = item_page(items, order="asc", after="msg_2", limit=20)
    assert [i["id"] for i in page["data"]] == ["msg_3", "msg_4"] and not page["has_more"]
    assert page["first_id"] == "msg_3" and page["last_id"] == "msg_4"
