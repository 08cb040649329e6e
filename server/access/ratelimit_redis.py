"""The limiter's counts in Redis, so several Puente replicas share each key's limits exactly.

Each admission is one Lua script: Redis runs a script alone, so reading the windows, checking
them and taking a request cannot interleave with another replica doing the same. The clock is
Redis's own (``TIME``), so replicas whose clocks drift still agree on the window. Keys carry the
key name in a hash tag (``{name}``) so one script's keys share a slot on Redis Cluster.
"""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.access import periods
from server.access.keys import ApiKey
from server.access.ratelimit import WINDOW, Decision, LimitName, Reservation
from server.errors import ServiceUnavailable

log = logging.getLogger("puente.access")

# KEYS: requests window, tokens window (hashes second → count), day tokens, month tokens.
# ARGV: rpm, tpm, budget_day, budget_month (0: no limit), window, tokens to reserve against the
# budgets, day ttl, month ttl.
# Returns {verdict, requests used, requests reset ms, tokens used, tokens reset ms, budget used,
# retry ms}: a reset is when the window is empty again, a retry when it is below its limit.
_ADMIT = """
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[5])

local function load(key)
  local flat = redis.call('HGETALL', key)
  local live, stale, total = {}, {}, 0
  for i = 1, #flat, 2 do
    local s, n = tonumber(flat[i]), tonumber(flat[i + 1])
    if s <= sec - window then
      stale[#stale + 1] = flat[i]
    else
      live[#live + 1] = {s, n}
      total = total + n
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  return total, live
end

local function wait_ms(live, total, limit)
  for _, bucket in ipairs(live) do
    if total < limit then return 0 end
    total = total - bucket[2]
    if total < limit then return math.ceil((bucket[1] + window - now) * 1000) end
  end
  return 0
end

-- Milliseconds until every bucket has left the window (OpenAI's "reset to initial state").
local function reset_ms(live)
  if #live == 0 then return 0 end
  return math.ceil((live[#live][1] + window - now) * 1000)
end

local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local budget_day, budget_month = tonumber(ARGV[3]), tonumber(ARGV[4])
-- The windows are read first so that every answer, a refusal too, shows exact counts.
local tokens_used, tokens_live = 0, {}
if tpm > 0 then tokens_used, tokens_live = load(KEYS[2]) end
local requests_used, requests_live = 0, {}
if rpm > 0 then requests_used, requests_live = load(KEYS[1]) end
local requests_reset, tokens_reset = reset_ms(requests_live), reset_ms(tokens_live)
if budget_day > 0 then
  local used = tonumber(redis.call('GET', KEYS[3]) or '0')
  if used >= budget_day then
    return {'budget_day', requests_used, requests_reset, tokens_used, tokens_reset, used, 0}
  end
end
if budget_month > 0 then
  local used = tonumber(redis.call('GET', KEYS[4]) or '0')
  if used >= budget_month then
    return {'budget_month', requests_used, requests_reset, tokens_used, tokens_reset, used, 0}
  end
end
if tpm > 0 and tokens_used >= tpm then
  local wait = wait_ms(tokens_live, tokens_used, tpm)
  return {'tokens', requests_used, requests_reset, tokens_used, tokens_reset, 0, wait}
end
if rpm > 0 then
  if requests_used >= rpm then
    local wait = wait_ms(requests_live, requests_used, rpm)
    return {'requests', requests_used, requests_reset, tokens_used, tokens_reset, 0, wait}
  end
  redis.call('HINCRBY', KEYS[1], sec, 1)
  redis.call('EXPIRE', KEYS[1], window + 1)
  requests_used = requests_used + 1
  requests_reset = math.ceil((sec + window - now) * 1000)
end
local reserve = tonumber(ARGV[6])
if reserve > 0 and (budget_day > 0 or budget_month > 0) then
  redis.call('INCRBY', KEYS[3], reserve)
  redis.call('EXPIRE', KEYS[3], ARGV[7])
  redis.call('INCRBY', KEYS[4], reserve)
  redis.call('EXPIRE', KEYS[4], ARGV[8])
else
  reserve = 0
end
return {'ok', requests_used, requests_reset, tokens_used, tokens_reset, 0, 0, reserve}
"""

# KEYS: tokens window, day tokens, month tokens. ARGV: tokens, window, day ttl, month ttl,
# tokens reserved on this day, on this month (given back: the tokens used replace them).
_SETTLE = """
local sec = tonumber(redis.call('TIME')[1])
local n = tonumber(ARGV[1])
if n > 0 then
  redis.call('HINCRBY', KEYS[1], sec, n)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]) + 1)
end
local function adjust(key, delta, ttl)
  local v = redis.call('INCRBY', key, delta)
  if v < 0 then redis.call('SET', key, 0) end
  redis.call('EXPIRE', key, ttl)
end
adjust(KEYS[2], n - tonumber(ARGV[5]), ARGV[3])
adjust(KEYS[3], n - tonumber(ARGV[6]), ARGV[4])
return 1
"""

_DAY_TTL = 2 * 86400
_MONTH_TTL = 32 * 86400


def _keys(name: str, now: float) -> list[str]:
    base = f"puente:{{{name}}}"
    return [
        f"{base}:requests",
        f"{base}:tokens",
        f"{base}:day:{periods.day_of(now)}",
        f"{base}:month:{periods.month_of(now)}",
    ]


class RedisLimiter:
    def __init__(self, url: str) -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
        )
        self._admit = self._client.register_script(_ADMIT)
        self._settle = self._client.register_script(_SETTLE)

    async def ping(self) -> None:
        await self._client.ping()

    async def admit(self, key: ApiKey, reserve: int = 0) -> Decision:
        limits = key.limits
        args = [
            limits.rpm or 0,
            limits.tpm or 0,
            limits.budget_day or 0,
            limits.budget_month or 0,
            WINDOW,
            max(0, reserve),
            _DAY_TTL,
            _MONTH_TTL,
        ]
        now = time.time()
        try:
            reply = await self._admit(keys=_keys(key.name, now), args=args)
        except RedisError as exc:
            # Fail closed: a limiter that cannot count must not wave every request through.
            log.error("rate limiter: Redis failed: %s", exc)
            raise ServiceUnavailable(
                "Rate limits cannot be checked right now; try again shortly.", retry_after=1
            ) from None
        verdict = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        requests_used, requests_ms, tokens_used, tokens_ms, budget_used, retry_ms = map(
            int, reply[1:7]
        )
        if verdict == "ok":
            reserved = int(reply[7])
            reservation = (
                Reservation(reserved, periods.day_of(now), periods.month_of(now))
                if reserved
                else None
            )
            return Decision(
                requests_used=requests_used,
                requests_reset=requests_ms / 1000,
                tokens_used=tokens_used,
                tokens_reset=tokens_ms / 1000,
                reservation=reservation,
            )
        refused: LimitName
        if verdict == "budget_day":
            refused, retry = "budget_day", periods.until_next_day(now)
        elif verdict == "budget_month":
            refused, retry = "budget_month", periods.until_next_month(now)
        elif verdict == "tokens":
            refused, retry = "tokens", retry_ms / 1000
        else:
            refused, retry = "requests", retry_ms / 1000
        return Decision(
            refused,
            retry,
            requests_used=requests_used,
            requests_reset=requests_ms / 1000,
            tokens_used=tokens_used,
            tokens_reset=tokens_ms / 1000,
            budget_used=budget_used,
        )

    async def settle(
        self, key: ApiKey, tokens: int, reservation: Reservation | None = None
    ) -> None:
        name, now = key.name, time.time()
        keys = _keys(name, now)[1:]
        # A reservation made on a day (month) that has ended is not taken back from this one.
        day = reservation.tokens if reservation and reservation.day == periods.day_of(now) else 0
        month = (
            reservation.tokens if reservation and reservation.month == periods.month_of(now) else 0
        )
        args = [tokens, WINDOW, _DAY_TTL, _MONTH_TTL, day, month]
        try:
            await self._settle(keys=keys, args=args)
        except RedisError as exc:
            log.warning("rate limiter: %d tokens of key %s not counted: %s", tokens, name, exc)

    async def seed(self, day: dict[str, int], month: dict[str, int]) -> None:
        """Fill in budgets Redis does not have (a fresh Redis); counts it has are newer."""
        now = time.time()
        async with self._client.pipeline(transaction=False) as pipe:
            for name, used in day.items():
                pipe.set(_keys(name, now)[2], used, nx=True, ex=_DAY_TTL)
            for name, used in month.items():
                pipe.set(_keys(name, now)[3], used, nx=True, ex=_MONTH_TTL)
            await pipe.execute()

    async def aclose(self) -> None:
        await self._client.aclose()
