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

from server.access.auth import _reset
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
from tests.inprocess import InProcessPuente
from tests.support import PuenteProcess, free_port


@pytest.fixture(scope="module")
def server(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    workdir: Path = tmp_path_factory.mktemp("limits")
    env = {"PUENTE_ADMIN_KEY": ADMIN}
    with InProcessPuente(gateway_config(fake_upstream), workdir, env=env) as proc:
        yield proc


async def burst(base_url: str, key: str, n: int) -> list[object]:
    async with openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0) as client:
        calls = [
            client.chat.completions.create(model="fake-model", messages=USER) for _ in range(n)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)


def key_tokens(server: InProcessPuente, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("puente_key_tokens_total{") and f'key="{name}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_requests_per_minute_are_exact_under_concurrent_load(server: InProcessPuente) -> None:
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


def test_tokens_per_minute_refuse_once_used_up(server: InProcessPuente) -> None:
    key = create_key(server, unique("tpm"), tpm=20)
    # 8 tokens a request: the third starts at 16 < 20 and is answered; the fourth is not.
    statuses = [chat(server, key).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = chat(server, key)
    assert "20 tokens per minute" in refused.json()["error"]["message"]
    assert refused.headers["x-ratelimit-limit-tokens"] == "20"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


def test_streamed_tokens_count_against_the_limit(server: InProcessPuente) -> None:
    name = unique("tpm-stream")
    key = create_key(server, name, tpm=20)
    with openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0) as client:
        for n in range(1, 4):
            stream = client.chat.completions.create(model="fake-model", messages=USER, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

            # Tokens are counted when a stream ends (after its last byte was sent).
            def counted(n: int = n) -> bool:
                return key_tokens(server, name) == n * TOKENS_PER_REQUEST

            eventually(counted)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="fake-model", messages=USER, stream=True)


def test_limits_are_per_key(server: InProcessPuente) -> None:
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


async def test_a_budget_holds_under_concurrent_requests(server: InProcessPuente) -> None:
    # Twenty requests at once against a budget of 50 tokens: admission holds what each may
    # spend (no max_tokens: an estimate of 1024) until it ends, so requests in flight together
    # get one answer between them. However the machine orders them, no more are answered than
    # the 7 that 50 tokens pay for (8 each), never twenty.
    name = unique("budget-burst")
    key = create_key(server, name, budget_day=50)
    results = await burst(server.base_url, key, 20)
    answered = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert 1 <= len(answered) <= 7, results
    assert len(refused) == 20 - len(answered)
    assert refused[0].code == "budget_exceeded"
    used = len(answered) * TOKENS_PER_REQUEST
    assert key_tokens(server, name) == used  # charged what it used, counted before answering
    # The holds were given back as answers ended: what is left of the budget serves again.
    left = -(-(50 - used) // TOKENS_PER_REQUEST) if used < 50 else 0
    statuses = [chat(server, key).status_code for _ in range(left + 1)]
    assert statuses == [200] * left + [429]


async def test_a_stated_max_tokens_is_what_is_held(server: InProcessPuente) -> None:
    # With max_tokens 5 each request may spend about 5 + its prompt: several fit at once.
    key = create_key(server, unique("budget-bounded"), budget_day=60)
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=key, max_retries=0) as sdk:
        calls = [
            sdk.chat.completions.create(model="fake-model", messages=USER, max_tokens=5)
            for _ in range(10)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
    answered = [r for r in results if not isinstance(r, BaseException)]
    assert 2 <= len(answered) < 10, results


def test_a_monthly_budget_cuts_off(server: InProcessPuente) -> None:
    key = create_key(server, unique("monthly"), budget_month=10)
    assert [chat(server, key).status_code for _ in range(3)] == [200, 200, 429]
    message = chat(server, key).json()["error"]["message"]
    assert "monthly token budget (10 tokens)" in message


# -- x-ratelimit-* on every answer ---------------------------------------------------------------

RESET = re.compile(r"(?:(\d+)m)?(\d+)s")


def reset_seconds(value: str) -> int:
    """OpenAI's duration (``1s``, ``6m0s``) in seconds; fails on anything else."""
    match = RESET.fullmatch(value)
    assert match, value
    return int(match[1] or 0) * 60 + int(match[2])


def test_every_answer_shows_the_requests_left(server: InProcessPuente) -> None:
    key = create_key(server, unique("headers-rpm"), rpm=5)
    remaining = []
    with openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0) as client:
        for stream in (False, True, False, True):
            if stream:
                with client.chat.completions.with_streaming_response.create(
                    model="fake-model", messages=USER, stream=True
                ) as streamed:
                    headers = streamed.headers
                    assert "".join(streamed.iter_lines())  # the answer itself still arrives
            else:
                raw = client.chat.completions.with_raw_response.create(
                    model="fake-model", messages=USER
                )
                assert raw.parse().choices[0].message.content
                headers = raw.headers
            assert headers["x-ratelimit-limit-requests"] == "5"
            # The window empties a minute after this request: the reset is (almost) a minute.
            assert 55 <= reset_seconds(headers["x-ratelimit-reset-requests"]) <= 60
            assert "x-ratelimit-limit-tokens" not in headers  # no tpm on this key
            remaining.append(headers["x-ratelimit-remaining-requests"])
        assert remaining == ["4", "3", "2", "1"]
        last = client.chat.completions.with_raw_response.create(model="fake-model", messages=USER)
        assert last.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="fake-model", messages=USER, stream=True)
    headers = refused.value.response.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(headers["retry-after"]) <= reset_seconds(headers["x-ratelimit-reset-requests"])


def test_tokens_headers_count_what_answers_used(server: InProcessPuente) -> None:
    name = unique("headers-tpm")
    key = create_key(server, name, rpm=100, tpm=1000)
    with openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0) as client:
        first = client.chat.completions.with_raw_response.create(model="fake-model", messages=USER)
        assert first.headers["x-ratelimit-limit-tokens"] == "1000"
        assert first.headers["x-ratelimit-remaining-tokens"] == "1000"
        assert first.headers["x-ratelimit-reset-tokens"] == "0s"  # nothing used yet
        eventually(lambda: key_tokens(server, name) == TOKENS_PER_REQUEST)
        with client.chat.completions.with_streaming_response.create(
            model="fake-model", messages=USER, stream=True
        ) as streamed:
            headers = streamed.headers
    assert headers["x-ratelimit-remaining-tokens"] == str(1000 - TOKENS_PER_REQUEST)
    assert 55 <= reset_seconds(headers["x-ratelimit-reset-tokens"]) <= 60
    assert headers["x-ratelimit-remaining-requests"] == "98"


def test_keys_without_limits_get_no_ratelimit_headers(server: InProcessPuente) -> None:
    free = create_key(server, unique("headers-free"))
    budget_only = create_key(server, unique("headers-budget"), budget_month=10_000)
    for key in (free, budget_only):
        with openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="fake-model", messages=USER
            )
            with client.chat.completions.with_streaming_response.create(
                model="fake-model", messages=USER, stream=True
            ) as streamed:
                headers = [*raw.headers, *streamed.headers]
        assert raw.status_code == streamed.status_code == 200
        assert not [h for h in headers if h.startswith("x-ratelimit")], headers


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

    await limiter.settle(key, 50)
    clock.now += 59
    assert (await limiter.admit(key)).refused == "tokens"
    clock.now += 1
    assert (await limiter.admit(key)).refused is None


async def test_decisions_carry_exact_counts_and_resets() -> None:
    clock = Clock(1_000_000.25)
    limiter = MemoryLimiter(clock)
    _, key = mint(KeySpec(name="k", limits=Limits(rpm=2, tpm=40, budget_day=50)))
    first = await limiter.admit(key)
    assert (first.requests_used, first.requests_reset, first.tokens_reset) == (1, 59.75, 0.0)
    await limiter.settle(key, 30)
    clock.now += 10
    second = await limiter.admit(key)
    assert (second.requests_used, second.tokens_used) == (2, 30)
    assert (second.requests_reset, second.tokens_reset) == (59.75, 49.75)
    refused = await limiter.admit(key)
    assert refused.refused == "requests" and refused.requests_used == 2
    assert refused.retry_after == pytest.approx(49.75)  # the first request leaves the window
    assert refused.requests_reset == pytest.approx(59.75)  # the second one leaves it
    await limiter.settle(key, 30)
    over = await limiter.admit(key)  # the budget refuses first, and still shows the windows
    assert over.refused == "budget_day" and (over.requests_used, over.tokens_used) == (2, 60)


async def test_a_daily_budget_renews_at_utc_midnight() -> None:
    midnight = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    clock = Clock(midnight - 1)
    limiter = MemoryLimiter(clock)
    _, key = mint(KeySpec(name="k", limits=Limits(budget_day=100, budget_month=1000)))
    await limiter.settle(key, 100)
    refused = await limiter.admit(key)
    assert refused.refused == "budget_day" and refused.retry_after == pytest.approx(1)
    clock.now = midnight + 1
    assert (await limiter.admit(key)).refused is None
    await limiter.settle(key, 900)  # a new month, too: February's 100 no longer count
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


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-3.0, "0s"),
        (0.0, "0s"),
        (0.2, "1s"),
        (30, "30s"),
        (59.75, "1m0s"),
        (60.0, "1m0s"),
        (60.5, "1m1s"),
        (3600.5, "1h0m1s"),
    ],
)
def test_reset_headers_are_written_as_openai_writes_them(seconds: float, shown: str) -> None:
    assert _reset(seconds) == shown
