"""Per-request values that logs and upstream calls pick up without passing them around."""

from __future__ import annotations

import logging
from contextvars import ContextVar

request_id: ContextVar[str] = ContextVar("request_id", default="")
request_started: ContextVar[float] = ContextVar("request_started", default=0.0)
"""``time.perf_counter()`` when the ASGI server handed the request over (set by the request-id
middleware, the first of Puente's to see every request), so a request's duration and overhead
include routing, reading the body and authentication; 0 outside a request."""


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"
        return True
