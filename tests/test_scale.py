"""Two Puente replicas sharing a real Postgres (keys, usage) and a real Redis (limits) act as
one: limits exact under concurrent load spread over both, a budget used up on one refused on the
other, a key revoked through one refused by the other, usage from both in one place."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.access_support import (
    ADMIN,
    TOKENS_PER_REQUEST,
    USER,
    admin_headers,
    chat,
    cli,
    create_key,
    eventually,
    unique,
    usage,
)
from tests.conftest import gateway_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.services import fresh_database
from tests.support import PuenteProcess

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def replicas(
    fake_upstream: FakeOpenAI,
    postgres_server: str,
    redis_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PuenteProcess, PuenteProcess]]:
    workdir: Path = tmp_path_factory.mktemp("scale")
    config: dict[str, Any] = {
        **gateway_config(fake_upstream),
        "database_url": fresh_database(postgres_server),
        "redis_url": redis_server,
    }
    env = {"PUENTE_ADMIN_KEY": ADMIN}
    a = PuenteProcess(config, workdir, env=env, name="a")
    b = PuenteProcess(config, workdir, env=env, name="b")
    # Started together on an empty database: both race to migrate it.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda p: p.start(), (a, b)))
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()
    assert not (workdir / "puente.db").exists()  # nothing went to SQLite


async def test_requests_per_minute_are_exact_across_two_replicas(
    replicas: tuple[PuenteProcess, PuenteProcess],
) -> None:
    a, b = replicas
    key = create_key(a, unique("shared-rpm"), rpm=10)
    clients = [openai.AsyncOpenAI(base_url=p.base_url, api_key=key, max_retries=0) for p in (a, b)]
    try:
        calls = [
            clients[i % 2].chat.completions.create(model="fake-model", messages=USER)
            for i in range(30)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for client in clients:
            await client.close()
    answered = [r for r in results if not isinstance(r, BaseException)]
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert (len(answered), len(limited)) == (10, 20), results
    assert limited[0].response.headers["x-ratelimit-limit-requests"] == "10"
    assert 1 <= int(limited[0].response.headers["retry-after"]) <= 60


def test_both_replicas_count_down_the_same_requests_left(
    replicas: tuple[PuenteProcess, PuenteProcess],
) -> None:
    a, b = replicas
    key = create_key(a, unique("shared-headers"), rpm=6, tpm=1000)
    clients = [openai.OpenAI(base_url=p.base_url, api_key=key, max_retries=0) for p in (a, b)]
    remaining = []
    try:
        for i in range(6):
            client = clients[i % 2]
            if i % 3 == 2:
                with client.chat.completions.with_streaming_response.create(
                    model="fake-model", messages=USER, stream=True
                ) as streamed:
                    headers = streamed.headers
            else:
                headers = client.chat.completions.with_raw_response.create(
                    model="fake-model", messages=USER
                ).headers
            remaining.append(headers["x-ratelimit-remaining-requests"])
            assert headers["x-ratelimit-limit-tokens"] == "1000"
        with pytest.raises(openai.RateLimitError) as refused:
            clients[0].chat.completions.create(model="fake-model", messages=USER)
    finally:
        for client in clients:
            client.close()
    assert remaining == ["5", "4", "3", "2", "1", "0"]
    assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_tokens_per_minute_and_budgets_are_shared(
    replicas: tuple[PuenteProcess, PuenteProcess],
) -> None:
    a, b = replicas
    tpm = create_key(a, unique("shared-tpm"), tpm=20)
    daily = create_key(b, unique("shared-day"), budget_day=20)
    for key in (tpm, daily):
        statuses = []
        for i in range(4):
            # Tokens are counted (in Redis) before an answer is sent: no pause needed here.
            statuses.append(chat((a, b)[i % 2], key).status_code)
        assert statuses == [200, 200, 200, 429], statuses
        assert chat(a, key).status_code == chat(b, key).status_code == 429
    message = chat(a, daily).json()["error"]["message"]
    assert "daily token budget (20 tokens)" in message


async def test_a_budget_holds_under_a_burst_spread_over_both_replicas(
    replicas: tuple[PuenteProcess, PuenteProcess],
) -> None:
    a, b = replicas
    key = create_key(a, unique("shared-burst"), budget_day=50)
    clients = [openai.AsyncOpenAI(base_url=p.base_url, api_key=key, max_retries=0) for p in (a, b)]
    try:
        calls = [
            clients[i % 2].chat.completions.create(model="fake-model", messages=USER)
            for i in range(30)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for client in clients:
            await client.close()
    answered = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    # Each admitted request holds its estimate (1024 tokens) against the shared budget until it
    # ends, so requests at once get one answer between them; however the machine happens to
    # order them, no more than the 7 that 50 tokens pay for (8 each) are answered, never 30.
    assert 1 <= len(answered) <= 7, results
    assert len(answered) + len(refused) == 30
    assert all(r.code == "budget_exceeded" for r in refused)
    # Its hold is given back when it ends: the key can spend the rest of its budget.
    assert chat(b, key).status_code == 200


def test_a_key_revoked_through_one_replica_is_refused_by_the_other(
    replicas: tuple[PuenteProcess, PuenteProcess],
) -> None:
    a, b = replicas
    name = unique("shared-revoke")
    key = create_key(a, name)
    assert chat(b, key).status_code == 200
    assert httpx.delete(a.url + f"/admin/keys/{name}", headers=admin_headers()).status_code == 200
    assert chat(a, key).status_code == 401  # at once on the replica that revoked it
    # b remembered the key; it forgets it when Postgres's NOTIFY arrives (milliseconds).
    eventually(lambda: chat(b, key).status_code == 401, what="b refusing the revoked key")
    refused = chat(b, key)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "revoked_api_key"


def test_usage_from_both_replicas_lands_in_one_database(
    replicas: tuple[PuenteProcess, PuenteProcess],
) -> None:
    a, b = replicas
    name = unique("shared-usage")
    key = create_key(a, name)
    for i in range(12):
        assert chat((a, b)[i % 3 == 0], key).status_code == 200

    def totals() -> list[dict[str, Any]]:
        return usage(b, key=name)

    eventually(lambda: sum(t["requests"] for t in totals()) == 12, what="12 usage rows")
    assert totals()[0]["total_tokens"] == 12 * TOKENS_PER_REQUEST

    # The CLI works on the same Postgres as the replicas.
    done = cli(a.config_path, "usage", "--key", name, "--json")
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)[0]["requests"] == 12
    listed = cli(a.config_path, "list")
    assert name in listed.stdout and key not in listed.stdout


def test_stopping_a_replica_loses_no_usage_rows(
    replicas: tuple[PuenteProcess, PuenteProcess],
) -> None:
    a, b = replicas
    name = unique("shared-stop")
    key = create_key(b, name)
    with httpx.Client(headers={"x-api-key": key}) as client:
        for _ in range(25):
            r = client.post(
                a.base_url + "/chat/completions", json={"model": "alias", "messages": USER}
            )
            assert r.status_code == 200
    a.stop()  # SIGTERM right away: its last rows are written on the way out
    try:
        assert "Application shutdown complete" in a.logs()
        assert usage(b, key=name)[0]["requests"] == 25
    finally:
        a.start()
