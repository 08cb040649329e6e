"""Per-key limits on one Puente (limits kept in memory): requests and tokens per minute, exact
under concurrent load, and token budgets per day and month that survive a restart."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from server.access.keys import KeySpec, Limits, mint
from server.access.periods import until_next_day
from server.access.ratelimit import MemoryLimiter
from tests.access_support import (
    ADMIN,
    TOKENS_PER_REQUEST,
    USER,
    chat,
    cli_create,
    create_key,
    eventually,
    unique,
)
from tests.conftest import gateway_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import PuenteProcess, free_port


@pytest.fixture(scope="module")
def server(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PuenteProcess]:
    workdir: Path = tmp_path_factory.mktemp("limits")
    env = {"PUENTE_ADMIN_KEY": ADMIN}
    with PuenteProcess(gateway_config(fake_upstream), workdir, env=env) as proc:
        yield proc


async def burst(base_url: str, key: str, n: int) -> list[object]:
    async with openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0) as client:
        calls = [
            client.chat.completions.create(model="fake-model", messages=USER) for _ in range(n)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)


def key_tokens(server: PuenteProcess, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("puente_key_tokens_total{") and f'key="{name}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_requests_per_minute_are_exact_under_concurrent_load(server: PuenteProcess) -> None:
    key = create_key(server, unique("rpm"), rpm=5)
    results = await burst(server.base_url, key, 12)
    answered = [r for r in results if not isinstance(r, BaseException)]
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert (len(answered), len(limited)) == (5, 7), results

    refusal = limited[0].response
    assert 1 <= int(refusal.headers["retry-after"]) <= 60
    assert refusal.headers["x-ratelimit-limit-requests"] == "5"
    assert refusal.headers["x-ratelimit-remaining-requests"] == "0"
    assert re.fullmatch(r"(\d+m)?\d+s", refusal.headers["x-ratelimit-reset-requests"])
    error = refusal.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "5 requests per minute" in error["message"]


def test_tokens_per_minute_refuse_once_used_up(server: PuenteProcess) -> None:
    key = create_key(server, unique("tpm"), tpm=20)
    # 8 tokens a request: the third starts at 16 < 20 and is answered; the fourth is not.
    statuses = [chat(server, key).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = chat(server, key)
    assert "20 tokens per minute" in refused.json()["error"]["message"]
    assert refused.headers["x-ratelimit-limit-tokens"] == "20"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


def test_streamed_tokens_count_against_the_limit(server: PuenteProcess) -> None:
    name = unique("tpm-stream")
    key = create_key(server, name, tpm=20)
    with openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0) as client:
        for n in range(1, 4):
            stream = client.chat.completions.create(model="fake-model", messages=USER, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            # Tokens are counted when a stream ends (after its last byte was sent).
            eventually(lambda n=n: key_tokens(server, name) == n * TOKENS_PER_REQUEST)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="fake-model", messages=USER, stream=True)


def test_limits_are_per_key(server: PuenteProcess) -> None:
    tight = create_key(server, unique("tight"), rpm=1)
    other = create_key(server, unique("other"), rpm=1)
    free = create_key(server, unique("free"))
    assert [chat(server, tight).status_code for _ in range(2)] == [200, 429]
    assert chat(server, other).status_code == 200
    assert all(chat(server, free).status_code == 200 for _ in range(15))


def test_a_daily_budget_cuts_off_and_survives_a_restart(
    fake_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    config = gateway_config(fake_upstream)
    (tmp_path / "puente.yaml").write_text(yaml.safe_dump(config))
    key = cli_create(tmp_path / "puente.yaml", "daily", "--budget-day", "20")
    with PuenteProcess(config, tmp_path) as proc:
        assert [chat(proc, key).status_code for _ in range(3)] == [200, 200, 200]
        refused = chat(proc, key)
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "budget_exceeded"
        assert error["message"].startswith(
            "Key 'daily' has used its daily token budget (20 tokens); it renews at 00:00 UTC"
        )
        wait = int(refused.headers["retry-after"])
        assert abs(wait - until_next_day(datetime.now(UTC).timestamp())) < 5

        proc.stop()  # SIGTERM; what was used is in the database now
        proc.start()
        assert chat(proc, key).status_code == 429


def test_a_monthly_budget_cuts_off(server: PuenteProcess) -> None:
    key = create_key(server, unique("monthly"), budget_month=10)
    assert [chat(server, key).status_code for _ in range(3)] == [200, 200, 429]
    message = chat(server, key).json()["error"]["message"]
    assert "monthly token budget (10 tokens)" in message


# -- the limiter's clock -----------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_the_minute_slides_second_by_second() -> None:
    clock = Clock(1_000_000.25)
    limiter = MemoryLimiter(clock)
    _, key = mint(KeySpec(name="k", limits=Limits(rpm=3, tpm=40)))
    assert [(await limiter.admit(key)).refused for _ in range(4)] == [None, None, None, "requests"]
    clock.now += 30
    assert (await limiter.admit(key)).refused == "requests"
    refused = await limiter.admit(key)
    assert refused.retry_after == pytest.approx(1_000_000 + 60 - clock.now)
    clock.now = 1_000_060.0  # the first second has left the window
    assert (await limiter.admit(key)).refused is None

    limiter.settle(key, 50)
    clock.now += 59
    assert (await limiter.admit(key)).refused == "tokens"
    clock.now += 1
    assert (await limiter.admit(key)).refused is None


async def test_a_daily_budget_renews_at_utc_midnight() -> None:
    midnight = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    clock = Clock(midnight - 1)
    limiter = MemoryLimiter(clock)
    _, key = mint(KeySpec(name="k", limits=Limits(budget_day=100, budget_month=1000)))
    limiter.settle(key, 100)
    refused = await limiter.admit(key)
    assert refused.refused == "budget_day" and refused.retry_after == pytest.approx(1)
    clock.now = midnight + 1
    assert (await limiter.admit(key)).refused is None
    limiter.settle(key, 900)  # a new month, too: February's 100 no longer count
    assert (await limiter.admit(key)).refused == "budget_day"


def test_puente_does_not_start_when_redis_is_unreachable(
    fake_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    config = {**gateway_config(fake_upstream), "redis_url": f"redis://127.0.0.1:{free_port()}"}
    path = tmp_path / "puente.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--config", str(path), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot reach Redis" in done.stderr
