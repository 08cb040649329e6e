"""``provider: anthropic``: Claude through the official ``anthropic`` SDK, translated both ways in
``anthropic_translate``."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager

import anthropic
import httpx2

from server.config import ModelConfig
from server.pipeline.request import JSON, ChatRequest, StreamChunk
from server.providers.anthropic_translate import StreamTranslator, build_params, to_completion
from server.providers.cloud import CloudClients, sdk_timeout
from server.providers.sdk_base import SDKProvider
from server.providers.vendor_errors import ANTHROPIC

DEFAULT_BASE_URL = "https://api.anthropic.com"


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
        params = build_params(request, self.config)
        message = await self.call(self.client.messages.create(**params))
        return to_completion(message, request.model)

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
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
