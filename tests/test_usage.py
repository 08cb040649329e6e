"""Usage records: one row per request, written off the request path, totals per key and model
by day through the admin API, the CLI and Prometheus — and none lost when Puente is stopped."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client import CollectorRegistry

from server.access.metrics import AccessMetrics
from server.access.storage import SQLiteStore, UsageRow
from server.access.usage import UsageRecorder
from tests.access_support import (
    ADMIN,
    TOKENS_PER_REQUEST,
    USER,
    cli,
    create_key,
    eventually,
    unique,
    usage,
)
from tests.conftest import gateway_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente
from tests.support import PuenteProcess


def config_with_persona(fake: FakeOpenAI) -> dict[str, Any]:
    config = gateway_config(fake)
    config["personas"] = [{"name": "guia", "model": "fake-model", "system": "Eres un guía."}]
    return config


@pytest.fixture(scope="module")
def server(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    workdir: Path = tmp_path_factory.mktemp("usage")
    env = {"PUENTE_ADMIN_KEY": ADMIN}
    with InProcessPuente(config_with_persona(fake_upstream), workdir, env=env) as proc:
        yield proc


def totals(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        if row["key"] == key:
            out[row["model"]] = {
                k: row[k] for k in ("requests", "errors", "prompt_tokens", "completion_tokens")
            }
    return out


def counter(server: InProcessPuente, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_usage_totals_match_the_requests_sent(server: InProcessPuente) -> None:
    alice, bob = unique("alice"), unique("bob")
    keys = {alice: create_key(server, alice), bob: create_key(server, bob)}
    seen: dict[str, dict[str, int]] = {alice: {}, bob: {}}

    async def send(name: str, model: str, stream: bool) -> None:
        async with openai.AsyncOpenAI(
            base_url=server.base_url, api_key=keys[name], max_retries=0
        ) as client:
            if stream:
                chunks = await client.chat.completions.create(
                    model=model,
                    messages=USER,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                usage_seen = None
                async for chunk in chunks:
                    usage_seen = chunk.usage or usage_seen
            else:
                answer = await client.chat.completions.create(model=model, messages=USER)
                usage_seen = answer.usage
            assert usage_seen is not None
            mine = seen[name].setdefault(model, 0)
            seen[name][model] = mine + usage_seen.total_tokens

    work = [send(alice, "fake-model", i % 2 == 0) for i in range(10)]
    work += [send(alice, "guia", False) for _ in range(3)]
    work += [send(bob, "alias", True) for _ in range(4)]
    await asyncio.gather(*work)
    async with httpx.AsyncClient() as raw:
        failing = await raw.post(
            server.base_url + "/chat/completions",
            json={"model": "fake-model", "messages": USER, "fake": {"status": 500}},
            headers={"x-api-key": keys[bob]},
        )
    assert failing.status_code == 502

    expected = {
        alice: {"fake-model": (10, 0), "guia": (3, 0)},
        bob: {"alias": (4, 0), "fake-model": (1, 1)},
    }

    def written() -> bool:
        rows = usage(server)
        return all(
            {m: (t["requests"], t["errors"]) for m, t in totals(rows, name).items()} == want
            for name, want in expected.items()
        )

    eventually(written, what="usage rows")
    rows = usage(server)
    for name in (alice, bob):
        for model, tokens in seen[name].items():
            got = totals(rows, name)[model]
            assert got["prompt_tokens"] + got["completion_tokens"] == tokens, (name, model)
    assert totals(rows, alice)["fake-model"]["completion_tokens"] == 10 * 4

    # The CLI reads the same database and says the same.
    done = cli(server.config_path, "usage", "--key", alice, "--json")
    assert done.returncode == 0, done.stderr
    from_cli = {row["model"]: row for row in yaml.safe_load(done.stdout)}
    assert from_cli["guia"]["requests"] == 3
    assert from_cli["fake-model"]["total_tokens"] == seen[alice]["fake-model"]
    table = cli(server.config_path, "usage", "--key", bob).stdout
    assert table.splitlines()[0].split() == [
        "DAY",
        "KEY",
        "MODEL",
        "REQUESTS",
        "ERRORS",
        "PROMPT",
        "COMPLETION",
        "TOTAL",
    ]

    # And so does Prometheus, by key name.
    assert counter(server, "puente_key_requests_total", key=alice) == 13
    assert counter(server, "puente_key_requests_total", key=bob, status="502") == 1
    assert counter(server, "puente_key_tokens_total", key=bob) == seen[bob]["alias"]


def test_usage_rows_say_what_each_request_was(server: InProcessPuente) -> None:
    name = unique("rows")
    key = create_key(server, name)
    with openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0) as client:
        client.chat.completions.create(model="guia", messages=USER)
        list(client.chat.completions.create(model="alias", messages=USER, stream=True))
    db = server.workdir / "puente.db"

    def rows() -> list[sqlite3.Row]:
        with sqlite3.connect(db) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(
                "SELECT * FROM usage WHERE key_name = ? ORDER BY id", (name,)
            ).fetchall()

    eventually(lambda: len(rows()) == 2, what="two rows")
    persona, streamed = rows()
    assert (persona["model"], persona["persona"], persona["stream"]) == ("guia", "guia", 0)
    assert (streamed["model"], streamed["persona"], streamed["stream"]) == ("alias", None, 1)
    for row in (persona, streamed):
        assert row["provider"] == "openai_compatible" and row["status"] == 200
        assert row["completion_tokens"] == 4 and row["latency_ms"] > 0
        assert len(row["request_id"]) >= 16


def test_stopping_puente_loses_no_usage_rows(fake_upstream: FakeOpenAI, tmp_path: Path) -> None:
    env = {"PUENTE_ADMIN_KEY": ADMIN}
    proc = PuenteProcess(gateway_config(fake_upstream), tmp_path, env=env)
    with proc:
        key = create_key(proc, "busy")
        slow: list[int] = []

        def stream_slowly() -> None:
            # Still streaming when SIGTERM arrives: Puente finishes it, then writes its row.
            with httpx.stream(
                "POST",
                proc.base_url + "/chat/completions",
                json={
                    "model": "fake-model",
                    "messages": USER,
                    "stream": True,
                    "fake": {"delay": 0.1},
                },
                headers={"x-api-key": key},
                timeout=30,
            ) as r:
                slow.append(r.status_code)
                slow.append(len(list(r.iter_lines())))

        background = threading.Thread(target=stream_slowly)
        background.start()
        with httpx.Client(headers={"x-api-key": key}) as client:
            for _ in range(40):
                r = client.post(
                    proc.base_url + "/chat/completions",
                    json={"model": "fake-model", "messages": USER},
                )
                assert r.status_code == 200
        proc.stop()  # SIGTERM right away: most rows are still waiting in memory
        assert "Application shutdown complete" in proc.logs()
        background.join(30)
        assert slow and slow[0] == 200

        with sqlite3.connect(tmp_path / "puente.db") as conn:
            count, tokens = conn.execute(
                "SELECT COUNT(*), SUM(prompt_tokens + completion_tokens) FROM usage"
                " WHERE key_name = 'busy'"
            ).fetchone()
        assert count == 41
        assert tokens == 41 * TOKENS_PER_REQUEST

        proc.start()
        assert usage(proc, key="busy")[0]["requests"] == 41


async def test_the_usage_writer_stops_when_a_row_wakes_it_as_it_is_stopped(
    tmp_path: Path,
) -> None:
    """A stop that lands just as new rows woke the writer still ends it (asyncio.wait_for
    swallowed that cancellation, and shutdown then waited for the writer forever)."""
    store = SQLiteStore(tmp_path / "usage.db")
    await store.migrate()
    recorder = UsageRecorder(store, AccessMetrics(CollectorRegistry()), batch_size=1, interval=60)
    recorder.start()
    await asyncio.sleep(0)  # the writer waits to be woken
    row = UsageRow(1.0, "1970-01-01", "r1", "k", "m", None, "fake", False, 200, 1, 1, 1.0)
    recorder.add(row)  # a full batch: it wakes the writer...
    await asyncio.sleep(0)  # ...which is about to resume
    closing = asyncio.ensure_future(recorder.aclose())
    done, _ = await asyncio.wait({closing}, timeout=30)
    if not done:
        closing.cancel()
        await store.aclose()
        pytest.fail("the usage writer did not stop")
    assert closing.result() is None
    assert recorder.pending == 0
    with sqlite3.connect(tmp_path / "usage.db") as conn:
        assert conn.execute("SELECT request_id FROM usage").fetchall() == [("r1",)]
    await store.aclose()
