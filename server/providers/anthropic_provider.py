"""``provider: anthropic``: Claude, its requests translated in ``anthropic_translate`` and its
answers in ``anthropic_answer``; a Messages request from ``/v1/messages`` is forwarded as it came
(``anthropic_native``).

Messages requests, the hot path, are posted directly (``vendor_http``) with the headers the
official ``anthropic`` SDK would send; answers and stream events are read as plain JSON, checked
field by field (``anthropic_answer``); errors — statuses and ``event: error`` in a stream — become
the SDK's own exceptions, built by the SDK, mapped once in ``vendor_errors``. count_tokens goes
through the SDK itself (on the same aiohttp session)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager

import anthropic
import httpx2
import orjson
from anthropic.types import MessageTokensCount

from server.config import ModelConfig
from server.pipeline.request import JSON, ChatRequest, StreamChunk
from server.providers.anthropic_answer import StreamTranslator, to_completion
from server.providers.anthropic_native import (
    FORWARDED_HEADERS,
    NativeChunk,
    NativeCompletion,
    NativeMessages,
)
from server.providers.anthropic_translate import build_params
from server.providers.cloud import CloudClients, sdk_timeout
from server.providers.sdk_base import SDKProvider
from server.providers.vendor_errors import ANTHROPIC
from server.providers.vendor_http import VendorHTTP

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
        self._url = str(self.client.base_url).rstrip("/") + "/v1/messages"
        # What the SDK sends: its version and client headers, the key, the entry's headers.
        sdk_headers = {**self.client.default_headers, **self.client.auth_headers}
        headers = {k: v for k, v in sdk_headers.items() if isinstance(v, str)}
        self.wire = VendorHTTP(cloud, config, headers, self.client._make_status_error_from_response)

    async def complete(self, request: ChatRequest) -> JSON:
        if isinstance(request, NativeMessages):
            return await self._forward(request)
        data = await self.call(self._post(build_params(request, self.config)))
        return to_completion(data, request.model)

    async def _post(self, body: JSON, headers: dict[str, str] | None = None) -> JSON:
        data = await self.wire.whole(self._url, body, headers)
        if not isinstance(data, dict):
            raise httpx2.DecodingError("the answer is not a JSON object")
        return data

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        if isinstance(request, NativeMessages):
            return self.open_stream(self._forwarded_chunks(request))
        return self.open_stream(self._chunks(request))

    async def _events(
        self, body: JSON, headers: dict[str, str] | None = None
    ) -> AsyncGenerator[JSON, None]:
        """The stream's events, parsed (each a JSON object); ``event: error`` raised as the SDK
        raises it."""
        async with self.wire.post(self._url, {**body, "stream": True}, headers) as response:
            async for events in self.wire.events(response):
                for name, data in events:
                    if name == "ping" or not name:
                        continue  # the SDK skips both
                    try:
                        parsed = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise httpx2.DecodingError("a stream event is not JSON") from None
                    if name == "error":
                        answer = httpx2.Response(
                            response.status,
                            headers=response.raw_headers,
                            request=httpx2.Request("POST", self._url),
                        )
                        raise self.client._make_status_error(
                            f"{parsed}", body=parsed, response=answer
                        )
                    if not isinstance(parsed, dict):
                        raise httpx2.DecodingError("a stream event is not a JSON object")
                    yield parsed

    async def _chunks(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        translator = StreamTranslator(request.model)
        events = self._events(build_params(request, self.config))
        try:
            async for event in events:
                for chunk in translator.feed(event):
                    yield chunk
            translator.check_finished()
        finally:
            await events.aclose()

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
        data = await self.call(
            self._post(request.vendor_body(stream=False), self._headers(request))
        )
        return NativeCompletion(to_completion(data, request.model), data)

    async def _forwarded_chunks(self, request: NativeMessages) -> AsyncGenerator[StreamChunk, None]:
        translator = StreamTranslator(request.model)
        stream = self._events(request.vendor_body(stream=True), self._headers(request))
        events: list[JSON] = []  # those that made no chunk yet (ping, block stops, signatures)
        try:
            async for event in stream:
                events.append(event)
                for chunk in translator.feed(event):
                    yield NativeChunk(chunk.data, events)
                    events = []
            translator.check_finished()
        finally:
            await stream.aclose()

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
