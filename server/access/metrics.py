"""Prometheus series of the access layer, labelled by key name (never by key)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from server.observability.loop_metrics import LoopCounter

ANONYMOUS = "-"
"""The ``key`` label of requests served without a key (``auth: none``, or no keys yet)."""


class AccessMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = LoopCounter(
            "puente_key_requests_total",
            "Chat completion requests, by key name, public model and HTTP status.",
            ["key", "model", "status"],
            registry=r,
        )
        self.tokens = LoopCounter(
            "puente_key_tokens_total",
            "Tokens used, by key name, public model and type (prompt or completion).",
            ["key", "model", "type"],
            registry=r,
        )
        self.limited = Counter(
            "puente_key_rate_limited_total",
            "Requests refused with 429, by key name and the limit they hit.",
            ["key", "limit"],
            registry=r,
        )
        self.auth_failures = Counter(
            "puente_auth_failures_total",
            "Requests refused with 401, by reason (missing, invalid, expired, revoked).",
            ["reason"],
            registry=r,
        )
        self.usage_written = Counter(
            "puente_usage_rows_written_total", "Usage rows written to the database.", registry=r
        )
        self.usage_dropped = Counter(
            "puente_usage_rows_dropped_total",
            "Usage rows dropped because the database failed for too long.",
            registry=r,
        )
