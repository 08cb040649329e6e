"""Who is calling: the key in ``Authorization: Bearer …`` (or ``x-api-key``) → a ``Principal``,
and what that principal may do: which models (404 for the others, exactly as for a model that
does not exist, so the catalogue does not leak) and how much (429 past a limit or a budget).

When is a key needed? ``auth: keys`` — always; ``auth: none`` — never; unset — as soon as a key
exists or ``PUENTE_ADMIN_KEY`` is set. Before that, requests are served without a key, but only
while Puente listens on a loopback address (``puente serve`` refuses any other address then).
A presented key is ignored while no key is needed: SDKs always send one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

from server.access.keycache import KeyCache, Missing
from server.access.keys import ApiKey, hash_secret, same_hash
from server.access.metrics import ANONYMOUS, AccessMetrics
from server.access.periods import day_of
from server.access.ratelimit import WINDOW, Decision, Limiter, Reservation
from server.access.storage import KeyNameTaken, StorageError, Store, UsageRow
from server.access.usage import UsageRecorder
from server.config import AuthMode
from server.errors import ModelNotFound, RateLimited, ServiceUnavailable, Unauthorized
from server.observability.loop_metrics import LoopCounter
from server.pipeline.record import RequestRecord

log = logging.getLogger("puente.access")

T = TypeVar("T")

# How long "no key exists yet" is believed before asking the database again.
_NO_KEYS_RECHECK = 1.0


def presented_secret(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = headers.get("x-api-key")
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def _unauthorized(message: str, code: str) -> Unauthorized:
    error = Unauthorized(message, code=code)
    error.headers["WWW-Authenticate"] = "Bearer"
    return error


_MISSING = (
    "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' "
    "(or in an 'x-api-key' header)."
)
_NO_KEYS_EXPOSED = (
    "Puente has no API keys and listens on a non-loopback address, so it serves no one. "
    "Create a key with 'puente keys create NAME', or set 'auth: none'."
)


_STATE_MESSAGES = {
    "expired": "This API key has expired.",
    "revoked": "This API key has been revoked.",
}


@dataclass(slots=True)
class Principal:
    """The caller of one request: a key, or nobody when no key is needed."""

    key: ApiKey | None
    access: Access

    @property
    def name(self) -> str | None:
        return None if self.key is None else self.key.name

    def may_use(self, model: str) -> bool:
        return self.key is None or self.key.allows(model)

    def admit(self, model: str, reserve: int = 0) -> Awaitable[Admitted]:
        """404 for a model this key may not use, 429 over a limit; otherwise count the request,
        hold ``reserve`` tokens against its budgets, and return the ``x-ratelimit-*`` headers
        its answer carries (none for a key without ``rpm``/``tpm``)."""
        return self.access.admit(self, model, reserve)  # its coroutine: no second frame


@dataclass(frozen=True, slots=True)
class Admitted:
    headers: Mapping[str, str]
    reservation: Reservation | None = None
    """Given back when the request ends (``Access.on_request_end``)."""


# Shared and never mutated: the admission of every key without limits (and of no key at all).
_NO_LIMITS = Admitted(MappingProxyType({}))


class Access:
    def __init__(
        self,
        *,
        mode: AuthMode | None,
        store: Store,
        limiter: Limiter,
        recorder: UsageRecorder,
        metrics: AccessMetrics,
        admin_hash: str | None,
        loopback: bool,
    ) -> None:
        self.mode = mode
        self.store = store
        self.limiter = limiter
        self.recorder = recorder
        self.metrics = metrics
        self.admin_hash = admin_hash
        self.loopback = loopback
        self._keys_exist = admin_hash is not None
        self._checked_at = 0.0
        self._seen: dict[str, ApiKey] = {}
        self.known = KeyCache()
        self._anonymous = Principal(None, self)
        self._series: dict[tuple[str, str], _KeySeries] = {}

    # -- authentication ------------------------------------------------------------------------

    async def _open(self) -> bool:
        """Whether requests are served without a key right now (see the module's docstring)."""
        if self.mode is not None:
            return self.mode == "none"
        now = time.monotonic()
        if not self._keys_exist and now - self._checked_at >= _NO_KEYS_RECHECK:
            self._keys_exist = await self.stored(self.store.any_keys())
            self._checked_at = now
        return self.loopback and not self._keys_exist

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        if self.mode == "none":
            return self._anonymous
        secret = presented_secret(headers)
        if secret is None:
            if await self._open():
                return self._anonymous
            self.metrics.auth_failures.labels("missing").inc()
            if self.mode is None and not self._keys_exist:
                raise _unauthorized(_NO_KEYS_EXPOSED, "no_api_keys")
            raise _unauthorized(_MISSING, "missing_api_key")
        digest = hash_secret(secret)
        key = await self._find(digest)
        if key is None or not same_hash(key.key_hash, digest):
            if await self._open():
                return self._anonymous  # SDKs send some key even when none is needed
            self.metrics.auth_failures.labels("invalid").inc()
            raise _unauthorized("Incorrect API key provided.", "invalid_api_key")
        self._keys_exist = True
        state = key.state()
        if state != "active":
            self.metrics.auth_failures.labels(state).inc()
            raise _unauthorized(_STATE_MESSAGES[state], f"{state}_api_key")
        self._seen[key.name] = key
        return Principal(key, self)

    async def _find(self, digest: str) -> ApiKey | None:
        """The key with this digest: from memory when the store says no key changed since it
        was read (``server/access/keycache.py``), else from the database."""
        epoch = self.store.key_epoch()
        known = self.known.get(digest, epoch)
        if not isinstance(known, Missing):
            return known
        generation = self.known.generation
        key = await self.stored(self.store.find_key(digest))
        self.known.put(digest, key, epoch, generation)
        return key

    async def revoke(self, name: str, at: float) -> ApiKey | None:
        """Revoke in the database; this process refuses the key from the very next request
        (other replicas: see ``server/access/keycache.py``)."""
        try:
            return await self.stored(self.store.revoke_key(name, at))
        finally:
            self.known.forget_all()

    def is_admin(self, headers: Mapping[str, str]) -> bool:
        secret = presented_secret(headers)
        if self.admin_hash is None or secret is None:
            return False
        return same_hash(self.admin_hash, hash_secret(secret))

    def key_created(self) -> None:
        self._keys_exist = True
        self.known.forget_all()  # its digest may have been presented (and remembered) before

    async def stored(self, work: Awaitable[T]) -> T:
        """A call to the key and usage database; its failure is a 503 for the client (a name
        already taken is the caller's to answer)."""
        try:
            return await work
        except KeyNameTaken:
            raise
        except StorageError as exc:
            log.error("key database failed: %s", exc)
            raise ServiceUnavailable(
                "The key database is unavailable; try again shortly.", retry_after=1
            ) from None

    # -- admission -----------------------------------------------------------------------------

    async def admit(self, principal: Principal, model: str, reserve: int) -> Admitted:
        key = principal.key
        if key is None:
            return _NO_LIMITS
        if not key.allows(model):
            raise ModelNotFound.named(model)
        limits = key.limits
        if not (limits.rpm or limits.counts_tokens):
            return _NO_LIMITS
        decision = await self.limiter.admit(key, reserve)
        if decision.refused is not None:
            self.metrics.limited.labels(key.name, decision.refused).inc()
            raise _refusal(key, decision)
        return Admitted(ratelimit_headers(key, decision), decision.reservation)

    # -- the end of every request (a Gateway listener) -----------------------------------------

    async def on_request_end(self, record: RequestRecord) -> None:
        name = record.principal
        label = name or ANONYMOUS
        series = self._series.get((label, record.model))
        if series is None:
            # Key names and configured model names: as small as the keys and the config.
            series = self._series[label, record.model] = _KeySeries(
                self.metrics, label, record.model
            )
        series.requests(record.status).add()
        if record.prompt_tokens:
            series.prompt.add(record.prompt_tokens)
        if record.completion_tokens:
            series.completion.add(record.completion_tokens)
        tokens = record.prompt_tokens + record.completion_tokens
        key = self._seen.get(name) if name else None
        reservation = record.reservation if isinstance(record.reservation, Reservation) else None
        if key is not None and key.limits.counts_tokens and (tokens or reservation):
            await self.limiter.settle(key, tokens, reservation)
        now = time.time()
        self.recorder.add(
            UsageRow(  # by position: the fields in their order, without matching keywords
                now,
                day_of(now),
                record.request_id,
                name,
                record.model,
                record.persona,
                record.provider,
                record.stream,
                record.status,
                record.prompt_tokens,
                record.completion_tokens,
                round(record.duration * 1000, 3),
            )
        )

    async def aclose(self) -> None:
        try:
            await self.recorder.aclose()
        finally:
            try:
                await self.limiter.aclose()
            finally:
                await self.store.aclose()


class _KeySeries:
    """One (key, model)'s counters, looked up once instead of three times a request."""

    __slots__ = ("_by_status", "_labels", "_requests", "completion", "prompt")

    def __init__(self, metrics: AccessMetrics, key: str, model: str) -> None:
        self._requests, self._labels = metrics.requests, (key, model)
        self._by_status: dict[int, LoopCounter] = {}
        self.prompt: LoopCounter = metrics.tokens.labels(key, model, "prompt")
        self.completion: LoopCounter = metrics.tokens.labels(key, model, "completion")

    def requests(self, status: int) -> LoopCounter:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._requests.labels(*self._labels, str(status))
        return child


def _duration(seconds: float, *, at_least: int = 1) -> str:
    """A wait in OpenAI's (Go's) style, rounded up to whole seconds: ``1s``, ``6m0s``,
    ``5h12m0s``."""
    whole = max(at_least, math.ceil(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _reset(seconds: float) -> str:
    """``x-ratelimit-reset-*``: ``0s`` for a window already empty."""
    whole = math.ceil(seconds)
    if 0 <= whole <= WINDOW:
        return _RESETS[whole]  # every answer shows one of these: made once
    return _duration(seconds, at_least=0)


_RESETS = tuple(_duration(seconds, at_least=0) for seconds in range(WINDOW + 1))

# Shared and never mutated: the answer to every key without rpm/tpm (and to no key at all).
_NO_HEADERS: dict[str, str] = {}


def ratelimit_headers(key: ApiKey, decision: Decision) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers from the counts the limiter saw when it decided, so a
    200 and a 429 show the same thing the same way, with no second look at the limiter."""
    limits = key.limits
    if not (limits.rpm or limits.tpm):
        return _NO_HEADERS
    headers: dict[str, str] = {}
    if limits.rpm:
        headers["x-ratelimit-limit-requests"] = str(limits.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, limits.rpm - decision.requests_used))
        headers["x-ratelimit-reset-requests"] = _reset(decision.requests_reset)
    if limits.tpm:
        headers["x-ratelimit-limit-tokens"] = str(limits.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, limits.tpm - decision.tokens_used))
        headers["x-ratelimit-reset-tokens"] = _reset(decision.tokens_reset)
    return headers


def _refusal(key: ApiKey, decision: Decision) -> RateLimited:
    limits = key.limits
    headers = ratelimit_headers(key, decision)
    wait = _duration(decision.retry_after)
    name = key.name
    if decision.refused == "requests":
        message = f"Rate limit reached for key '{name}': {limits.rpm} requests per minute."
    elif decision.refused == "tokens":
        message = f"Rate limit reached for key '{name}': {limits.tpm} tokens per minute."
    elif decision.refused == "budget_day":
        return RateLimited(
            f"Key '{name}' has used its daily token budget ({limits.budget_day} tokens); "
            f"it renews at 00:00 UTC, in {wait}.",
            retry_after=decision.retry_after,
            code="budget_exceeded",
            headers=headers,
        )
    else:
        return RateLimited(
            f"Key '{name}' has used its monthly token budget ({limits.budget_month} tokens); "
            f"it renews on the 1st at 00:00 UTC, in {wait}.",
            retry_after=decision.retry_after,
            code="budget_exceeded",
            headers=headers,
        )
    return RateLimited(
        f"{message} Try again in {wait}.", retry_after=decision.retry_after, headers=headers
    )
