"""Building the access layer at start, and the check ``puente serve`` makes before listening."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time

from redis.exceptions import RedisError

from server.access import periods
from server.access.auth import Access
from server.access.keys import hash_secret
from server.access.metrics import AccessMetrics
from server.access.ratelimit import Limiter, MemoryLimiter
from server.access.ratelimit_redis import RedisLimiter
from server.access.storage import StorageError, Store, database_url, open_store
from server.access.usage import UsageRecorder
from server.config import Settings
from server.observability.metrics import Metrics

log = logging.getLogger("puente.access")

ADMIN_KEY_ENV = "PUENTE_ADMIN_KEY"
METRICS_KEY_ENV = "PUENTE_METRICS_KEY"
_MIN_ADMIN_KEY = 16


class StartRefused(Exception):
    """Puente must not start as configured; the message is one line that says why and what to do."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def admin_hash() -> str | None:
    secret = os.environ.get(ADMIN_KEY_ENV, "")
    if not secret:
        return None
    if len(secret) < _MIN_ADMIN_KEY:
        raise StartRefused(
            f"{ADMIN_KEY_ENV} is too short: use at least {_MIN_ADMIN_KEY} random characters "
            "(for example the output of 'openssl rand -hex 32')"
        )
    return hash_secret(secret)


def metrics_key_hash() -> str | None:
    """``PUENTE_METRICS_KEY``: when set, ``/metrics`` needs it (a scraper's bearer token), so key
    names and per-key usage are not shown to anyone who can reach the port."""
    secret = os.environ.get(METRICS_KEY_ENV, "")
    if not secret:
        return None
    if len(secret) < _MIN_ADMIN_KEY:
        raise StartRefused(
            f"{METRICS_KEY_ENV} is too short: use at least {_MIN_ADMIN_KEY} characters"
        )
    return hash_secret(secret)


async def open_migrated(settings: Settings, *, announce: bool = True) -> Store:
    store = open_store(database_url(settings))
    try:
        version = await store.migrate()
    except StorageError as exc:
        await store.aclose()
        raise StartRefused(f"cannot open the key and usage database: {exc}") from None
    if announce:
        log.info("keys and usage in %s (schema version %d)", store.description, version)
    return store


async def _check(settings: Settings) -> None:
    store = await open_migrated(settings, announce=False)
    try:
        has_keys = await store.any_keys()
    except StorageError as exc:
        raise StartRefused(f"cannot read the key database: {exc}") from None
    finally:
        await store.aclose()
    exposed = settings.config.auth is None and not is_loopback(settings.host)
    if exposed and not has_keys and admin_hash() is None:
        raise StartRefused(
            f"refusing to listen on {settings.host} without API keys: anyone who can reach it "
            "could use every model. Create a key ('puente keys create NAME'), set "
            f"{ADMIN_KEY_ENV}, listen on 127.0.0.1, or set 'auth: none' in the configuration."
        )
    if settings.config.redis_url:
        limiter = RedisLimiter(settings.config.redis_url)
        try:
            await limiter.ping()
        except RedisError as exc:
            raise StartRefused(f"cannot reach Redis (redis_url): {exc}") from None
        finally:
            await limiter.aclose()


def check_start(settings: Settings) -> None:
    """Raise ``StartRefused`` when Puente cannot serve ``settings``, or would serve every model
    to anyone: its database or Redis unreachable, or a non-loopback address without keys."""
    admin_hash()
    metrics_key_hash()
    asyncio.run(_check(settings))


async def _limiter(settings: Settings, store: Store) -> Limiter:
    url = settings.config.redis_url
    limiter: Limiter = RedisLimiter(url) if url else MemoryLimiter()
    now = time.time()
    try:
        day = await store.tokens_since(periods.day_start(now))
        month = await store.tokens_since(periods.month_start(now))
        await limiter.seed(day, month)
    except Exception:
        await limiter.aclose()
        raise
    return limiter


async def start_access(settings: Settings, metrics: Metrics) -> Access:
    """Open the store, build the limiter and start the usage writer. The caller makes
    ``Access.on_request_end`` hear every request's end."""
    admin = admin_hash()
    store = await open_migrated(settings)
    try:
        limiter = await _limiter(settings, store)
    except Exception:
        await store.aclose()
        raise
    access_metrics = AccessMetrics(metrics.registry)
    recorder = UsageRecorder(store, access_metrics)
    access = Access(
        mode=settings.config.auth,
        store=store,
        limiter=limiter,
        recorder=recorder,
        metrics=access_metrics,
        admin_hash=admin,
        loopback=is_loopback(settings.host),
    )
    recorder.start()
    return access
