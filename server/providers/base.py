"""The interface every provider speaks, in OpenAI's own shapes.

A provider owns its authenticated client(s) for one configured model entry and translates to and
from its vendor's wire format inside its own module. It raises only ``server.errors`` types.

Every provider does chat (``Provider``). Other abilities are small opt-in interfaces that the
pipeline looks for: ``Embedder`` (``/v1/embeddings``), ``TextCompleter`` (legacy
``/v1/completions``), ``TokenCounter`` (exact ``count_tokens``) and ``EngineOwner`` (a
launched engine that a reload can hand over).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import aiohttp
import orjson

from server.config import ModelConfig
from server.errors import InvalidRequest
from server.pipeline.request import JSON, ChatRequest, StreamChunk, UpstreamRequest
from server.resilience.breaker import CircuitBreaker

HealthState = Literal["ready", "loading", "down"]

ChunkStream = AbstractAsyncContextManager[AsyncIterator[StreamChunk]]


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

    def stream(self, request: ChatRequest) -> ChunkStream:
        """Open the upstream stream on enter (errors raised there keep their HTTP status);
        iterate ``chat.completion.chunk`` objects; the upstream is closed on exit."""
        ...

    async def health(self) -> Health: ...

    def engine_state(self) -> str | None:
        """A launched engine's state (``starting``, ``loading``, ``ready``, ``down``); None for
        anything Puente does not launch."""
        ...

    def endpoint_breakers(self) -> list[tuple[str, CircuitBreaker]]:
        """The breaker of each balanced endpoint (URL, breaker); empty for a single vendor API."""
        ...

    async def start(self) -> None:
        """Called once in the app's lifespan before serving (launch engines, warm pools)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Embedder(Protocol):
    """``POST /v1/embeddings``: an OpenAI ``list`` of ``embedding`` objects."""

    async def embed(self, request: UpstreamRequest) -> JSON: ...


@runtime_checkable
class TextCompleter(Protocol):
    """Legacy ``POST /v1/completions``: ``text_completion`` objects, whole or as chunks."""

    async def complete_text(self, request: UpstreamRequest) -> JSON: ...

    def stream_text(self, request: UpstreamRequest) -> ChunkStream: ...


@runtime_checkable
class TokenCounter(Protocol):
    """Counts a chat request's input tokens exactly, with the model's own tokenizer and chat
    template (``POST /v1/messages/count_tokens``; others get an estimate)."""

    async def count_tokens(self, request: ChatRequest) -> int: ...


@runtime_checkable
class EngineOwner(Protocol):
    """A provider around an engine that Puente launched (``provider: vllm`` with ``launch:``).

    A reload asks it whether a changed entry can go on with the running engine (``successor``),
    hands the engine over at the swap (``take_engine``), or waits for a new one to be ready.
    """

    @property
    def replaces_engine(self) -> bool:
        """It launches an engine of its own (which a reload waits for before the swap)."""
        ...

    @property
    def engine_port(self) -> int | None:
        """The fixed ``launch.port`` its engine wants, if any."""
        ...

    def successor(
        self, config: ModelConfig, session: aiohttp.ClientSession
    ) -> EngineOwner | None: ...

    def take_engine(self, previous: EngineOwner) -> None: ...

    async def engine_ready(self, draining: Callable[[], bool]) -> None: ...


def request_payload(body: object) -> bytes:
    """``body`` as the JSON bytes to send upstream. orjson writes at most 255 levels of nesting
    but reads 1024, so a body it parsed may not be writable; only a client's content nests that
    deep, so it is the client's 400."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        raise InvalidRequest(
            "The request is nested too deeply to forward (more than 255 levels).",
            code="invalid_value",
        ) from None
