"""Prometheus metrics, all prefixed ``puente_``, in a registry owned by the app (not global).

Latency buckets reach from sub-millisecond (gateway overhead) to minutes (long generations).
The series every request changes, on the event loop (``Pipeline.finish``), are ``LoopCounter`` /
``LoopHistogram``: the same exposition, no lock per increment (``loop_metrics.py``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.observability.loop_metrics import LoopCounter, LoopHistogram

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = LoopCounter(
            "puente_requests_total",
            "Chat completion requests answered, by public model, provider and HTTP status.",
            ["model", "provider", "status"],
            registry=r,
        )
        self.duration = LoopHistogram(
            "puente_request_duration_seconds",
            "Time from request received to the last byte of the answer.",
            ["model", "provider"],
            buckets=_LATENCY,
            registry=r,
        )
        self.ttft = LoopHistogram(
            "puente_time_to_first_token_seconds",
            "Streaming: time from request received to the first chunk sent to the client.",
            ["model", "provider"],
            buckets=_LATENCY,
            registry=r,
        )
        self.output_tokens = LoopCounter(
            "puente_output_tokens_total",
            "Completion tokens generated, as reported by the upstream.",
            ["model", "provider"],
            registry=r,
        )
        self.prompt_tokens = LoopCounter(
            "puente_prompt_tokens_total",
            "Prompt tokens processed, as reported by the upstream.",
            ["model", "provider"],
            registry=r,
        )
        self.in_flight = Gauge(
            "puente_requests_in_flight",
            "Chat completion requests being answered now.",
            ["model"],
            registry=r,
        )
        self.upstream_errors = LoopCounter(
            "puente_upstream_errors_total",
            "Failed upstream calls, by kind (connection, timeout, upstream_status, protocol …).",
            ["model", "provider", "kind"],
            registry=r,
        )
        self.overhead = LoopHistogram(
            "puente_gateway_overhead_seconds",
            "Time the gateway itself added: total time (from when the HTTP server handed the "
            "request over) minus time waiting on the upstream.",
            ["model", "provider"],
            buckets=_OVERHEAD,
            registry=r,
        )
        self.farewells = Counter(
            "puente_persona_farewells_total",
            "Answers where a persona's model gave the farewell marker and Puente its farewell.",
            ["persona"],
            registry=r,
        )
        # The persona scope check (server/personas/scope.py): how often, how long, how much.
        self.scope_checks = Counter(
            "puente_persona_scope_checks_total",
            "Persona scope checks, by verdict: in_scope, out_of_scope, failed (answered anyway).",
            ["persona", "verdict"],
            registry=r,
        )
        self.scope_check_duration = Histogram(
            "puente_persona_scope_check_seconds",
            "Time a persona scope check took, failed ones included.",
            ["persona"],
            buckets=_LATENCY,
            registry=r,
        )
        self.scope_check_tokens = Counter(
            "puente_persona_scope_check_tokens_total",
            "Tokens persona scope checks used, by kind (prompt, completion).",
            ["persona", "kind"],
            registry=r,
        )
        # Resilience (server/resilience/); breaker states and queue depths are read at scrape.
        self.retries = Counter(
            "puente_retries_total",
            "Upstream attempts retried after a retryable failure, by public model.",
            ["model"],
            registry=r,
        )
        self.fallbacks = Counter(
            "puente_fallbacks_total",
            "Requests handed to a fallback model, by the model that failed and the one tried next.",
            ["from", "to"],
            registry=r,
        )
        self.responses_stored = Counter(
            "puente_responses_stored_total",
            "Responses API answers kept for later (stored), or not kept: too large for"
            " responses.max_bytes (too_large) or the database failed (failed).",
            ["outcome"],
            registry=r,
        )
