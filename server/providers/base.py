"""The interface every provider speaks, in OpenAI's own shapes.

A provider owns its authenticated client(s) for one configured model entry and translates to and
from its vendor's wire format inside its own module. It raises only ``server.errors`` types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

from server.pipeline.request import JSON, ChatRequest, StreamChunk

HealthState = Literal["ready", "loading", "down"]


@dataclass(frozen=True, slots=True)
class Health:
    state: HealthState
    detail: str = ""
    endpoints: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "ready"


class Provider(Protocol):
    """One configured model entry's way to an upstream."""

    kind: str
    """The metrics label and ``owned_by`` value: ``vllm``, ``openai``, ``anthropic`` …"""

    async def complete(self, request: ChatRequest) -> JSON:
        """A whole ``chat.completion`` object."""
        ...

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        """Open the upstream stream on enter (errors raised there keep their HTTP status);
        iterate ``chat.completion.chunk`` objects; the upstream is closed on exit."""
        ...

    async def health(self) -> Health: ...

    async def start(self) -> None:
        """Called once in the app's lifespan before serving (launch engines, warm pools)."""
        ...

    async def aclose(self) -> None: ...
