"""Everything the app builds in its lifespan, in one typed object on ``app.state.runtime``."""

from __future__ import annotations

from dataclasses import dataclass

from server.access.auth import Access
from server.access.responses import ResponseStore
from server.config import Settings
from server.lifecycle.readiness import Readiness
from server.lifecycle.reloader import Reloader
from server.observability.metrics import Metrics
from server.pipeline.pipeline import Pipeline
from server.providers import Clients


@dataclass(slots=True)
class Runtime:
    settings: Settings
    """How Puente was started; the configuration served now is ``pipeline.snapshot.config``."""
    metrics: Metrics
    clients: Clients
    pipeline: Pipeline
    access: Access
    reloader: Reloader
    responses: ResponseStore
    """Stored responses (``/v1/responses``), in the key and usage database."""
    readiness: Readiness
    started_at: int
    metrics_key_hash: str | None = None
    """``PUENTE_METRICS_KEY``'s hash: ``/metrics`` then needs it (or the admin key)."""

    @property
    def draining(self) -> bool:
        return self.pipeline.drain.draining
