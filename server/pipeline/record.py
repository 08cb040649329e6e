"""What one request did, for metrics, the log line and the usage row.

The pipeline owns the record from admission to the end: it is filled in as the request goes, and
handed to listeners exactly once, when the request is over (``Exchange.finish``). Its labels
(``model``, ``provider``) are configured names, never text a client sent, so a client cannot grow
the metric label set (a ``vendor/*`` entry is counted under ``vendor/*``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from server.errors import PuenteError

# What a client that went away is counted as (nginx's convention).
CLIENT_CLOSED = 499


def _count(value: Any) -> int:
    """A token count as an upstream reported it; anything that is not a non-negative int is 0
    (a negative count must not lower a budget, a string must not crash the request's end)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    api: str = "chat"
    """The front door: ``chat``, ``responses``, ``messages``, ``embeddings``, ``completions``."""
    principal: str | None = None
    stream: bool = False
    model: str = "unknown"
    """The configured entry (or persona) the request resolved to; ``unknown`` before that."""
    persona: str | None = None
    provider: str = ""
    answered_by: str = ""
    """The public name of the model that answered: the requested one, or a fallback."""
    status: int = 200
    error_kind: str | None = None
    started: float = field(default_factory=time.perf_counter)
    upstream_time: float = 0.0
    first_token: float | None = None
    duration: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    retried: bool = False
    """Puente itself retried or fell back: the client's SDK should not retry on top."""
    farewell: bool = False
    reservation: object = None
    """What admission held against the key's budgets (``server/access``), given back at the end."""

    def take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.prompt_tokens = _count(usage.get("prompt_tokens"))
            self.completion_tokens = _count(usage.get("completion_tokens"))

    def fail(self, error: PuenteError) -> None:
        self.status = error.status_code
        self.error_kind = error.kind

    def client_left(self) -> None:
        self.status = CLIENT_CLOSED


Listener = Callable[[RequestRecord], Awaitable[None]]
"""Told once of every finished request (the usage row, the limiter's settlement)."""
