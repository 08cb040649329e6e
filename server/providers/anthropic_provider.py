"""``provider: anthropic``: Claude through the official ``anthropic`` SDK, translated both ways in
``anthropic_translate``; a Messages request from ``/v1/messages`` is forwarded as it came
(``anthropic_native``)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager

import anthropic
import httpx2
from anthropic import AsyncStream
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent

from server.config import ModelConfig
from server.pipeline.request import JSON, ChatRequest, StreamChunk
from server.providers.anthropic_native import (
    FORWARDED_HEADERS,
    NativeChunk,
    NativeCompletion,
    NativeMessages,
)
from server.providers.anthropic_translate import StreamTranslator, build_params, to_completion
from server.providers.cloud import CloudClients, sdk_timeout
from server.providers.sdk_base import SDKProvider
from server.providers.vendor_errors import ANTHROPIC

DEFAULT_BASE_URL = "https://api.anthropic.com"
# Fields of a Messages body that count_tokens refuses: they shape a generation, not the input.
_NOT_COUNTED = frozenset(
    {
        "max_tokens",
        "stream",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "service_tier",
        "extra_body",
        "container",
        "inference_geo",
        "speed",
    }
)


class AnthropicProvider(SDKProvider):
    kind = "anthropic"
    vendor = "Anthropic"
    errors = ANTHROPIC
    caught = (anthropic.AnthropicError, httpx2.HTTPError)

    def __init__(self, config: ModelConfig, cloud: CloudClients) -> None:
        super().__init__(config)
        # Key and URL given explicitly so the SDK never reads ANTHROPIC_* variables or profiles.
        # ``headers`` can pin another API version: {"anthropic-version": "2023-06-01"}.
        self.client = anthropic.AsyncAnthropic(
            api_key=config.api_key or "none",
            base_url=config.base_url or DEFAULT_BASE_URL,
            timeout=sdk_timeout(config),
            max_retries=0,  # Puente's router decides about retries
            default_headers=config.headers or None,
            http_client=cloud.http,
            open_telemetry=False,
        )

    async def complete(self, request: ChatRequest) -> JSON:
        if isinstance(request, NativeMessages):
            return await self._forward(request)
        params = build_params(request, self.config)
        message = await self.call(self.client.messages.create(**params))
        return to_completion(message, request.model)

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        if isinstance(request, NativeMessages):
            return self.open_stream(self._forwarded_chunks(request))
        return self.open_stream(self._chunks(request))

    async def _chunks(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        params = build_params(request, self.config)
        translator = StreamTranslator(request.model)
        stream = await self.client.messages.create(**params, stream=True)
        try:
            async for event in stream:
                for chunk in translator.feed(event):
                    yield chunk
            translator.check_finished()
        finally:
            await stream.close()

    # -- Messages requests forwarded as they came -------------------------------------------------

    def _headers(self, request: NativeMessages) -> dict[str, str]:
        """The client's version and betas, unless the model entry pins its own."""
        pinned = {name.lower() for name in self.config.headers}
        return {
            name: value
            for name, value in request.anthropic_headers.items()
            if name in FORWARDED_HEADERS and name not in pinned
        }

    async def _forward(self, request: NativeMessages) -> JSON:
        message = await self.call(
            self.client.post(
                "/v1/messages",
                cast_to=Message,
                body=request.vendor_body(stream=False),
                options={"headers": self._headers(request)},
            )
        )
        return NativeCompletion(to_completion(message, request.model), message.to_dict())

    async def _forwarded_chunks(self, request: NativeMessages) -> AsyncGenerator[StreamChunk, None]:
        translator = StreamTranslator(request.model)
        stream = await self.client.post(
            "/v1/messages",
            cast_to=Message,
            body=request.vendor_body(stream=True),
            options={"headers": self._headers(request)},
            stream=True,
            stream_cls=AsyncStream[RawMessageStreamEvent],
        )
        events: list[JSON] = []  # those that made no chunk yet (ping, block stops, signatures)
        try:
            async for event in stream:
                events.append(event.to_dict())
                for chunk in translator.feed(event):
                    yield NativeChunk(chunk.data, events)
                    events = []
            translator.check_finished()
        finally:
            await stream.close()

    # -- count_tokens (``TokenCounter``) ----------------------------------------------------------

    async def count_tokens(self, request: ChatRequest) -> int:
        """Anthropic's own count: the client's body as it came, or the translated one (a
        persona's), each without what only a generation takes."""
        if isinstance(request, NativeMessages):
            body, headers = request.vendor_body(stream=False), self._headers(request)
        else:
            body, headers = build_params(request, self.config), {}
        counted = {k: v for k, v in body.items() if k not in _NOT_COUNTED}
        result = await self.call(
            self.client.post(
                "/v1/messages/count_tokens",
                cast_to=MessageTokensCount,
                body=counted,
                options={"headers": headers},
            )
        )
        return result.input_tokens
