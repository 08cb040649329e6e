"""``provider: openai``: OpenAI, or any vendor that speaks its API at a ``base_url`` (DeepSeek,
Mistral, Groq, OpenRouter, Ollama …), through the official ``openai`` SDK.

No translation is needed: the client's body goes out as sent (only ``model`` swapped). Chat
completions, the hot path, are posted directly (``vendor_http``) and their answers relayed as
parsed JSON; embeddings and legacy completions go through the SDK (on the same aiohttp session).
What this provider adds over ``openai_compatible`` is OpenAI's own reading of errors — the SDK's
exception classes, built by the SDK from the vendor's answer, mapped once in ``vendor_errors``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai
import orjson

from server.config import ModelConfig
from server.errors import UpstreamProtocolError
from server.pipeline.request import JSON, ChatRequest, StreamChunk, UpstreamRequest
from server.providers.cloud import CloudClients, sdk_timeout
from server.providers.embeddings import embed_in_batches
from server.providers.sdk_base import SDKProvider
from server.providers.tasks import check_task
from server.providers.upstream_errors import check_usage
from server.providers.vendor_errors import OPENAI
from server.providers.vendor_http import VendorHTTP

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_DONE = b"[DONE]"

# Most inputs OpenAI takes in one embeddings request.
EMBEDDING_BATCH = 2048

_EMBEDDING_OWN = ("model", "input", "encoding_format")


def _stream_error(error: Any, url: str) -> openai.APIError:
    """An error event inside a stream, as the SDK raises it (``vendor_errors`` maps it)."""
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        message = "An error occurred during streaming"
    return openai.APIError(message, httpx2.Request("POST", url), body=error)


def _vendor(base_url: str | None) -> str:
    host = urlsplit(base_url or DEFAULT_BASE_URL).hostname or ""
    return "OpenAI" if host in ("", "api.openai.com") else host


class OpenAIProvider(SDKProvider):
    kind = "openai"
    errors = OPENAI
    caught = (openai.OpenAIError, httpx2.HTTPError)

    def __init__(self, config: ModelConfig, cloud: CloudClients) -> None:
        self.vendor = _vendor(config.base_url)
        super().__init__(config)
        # Given explicitly so the SDK never picks a key or URL up from OPENAI_* variables.
        self.client = openai.AsyncOpenAI(
            api_key=config.api_key or "none",
            base_url=config.base_url or DEFAULT_BASE_URL,
            timeout=sdk_timeout(config),
            max_retries=0,  # Puente's router decides about retries
            default_headers=config.headers or None,
            http_client=cloud.http,
        )
        self._chat_url = str(self.client.base_url.join("chat/completions"))
        headers = {"Authorization": f"Bearer {config.api_key or 'none'}", **config.headers}
        self.wire = VendorHTTP(cloud, config, headers, self.client._make_status_error_from_response)

    def _body(self, request: UpstreamRequest, stream: bool) -> JSON:
        body = {k: v for k, v in request.body.items() if k != "stream"}
        body["model"] = request.upstream_model
        if stream:
            body["stream"] = True
            if not request.include_usage:
                # Ask for usage anyway, to count tokens; the gateway drops that chunk.
                options = body.get("stream_options") or {}
                body["stream_options"] = {**options, "include_usage": True}
        return body

    async def complete(self, request: ChatRequest) -> JSON:
        check_task(self.config, "chat")
        data = await self.call(self._complete(request))
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            # Not JSON (a proxy's page, an event stream), or JSON of something else.
            raise UpstreamProtocolError(
                f"{self.vendor} answered model '{self.config.name}' with something that is not a "
                "chat completion."
            )
        check_usage(data.get("usage"), self.config.name)
        return data

    async def _complete(self, request: ChatRequest) -> Any:
        return await self.wire.whole(self._chat_url, self._body(request, stream=False))

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        check_task(self.config, "chat")
        return self.open_stream(self._chunks(request))

    async def _chunks(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        async with self.wire.post(self._chat_url, self._body(request, stream=True)) as response:
            async for events in self.wire.events(response):
                for _, data in events:
                    if data == _DONE:
                        return
                    try:
                        parsed = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise UpstreamProtocolError(
                            f"{self.vendor} sent model '{self.config.name}' an event that is "
                            "not JSON."
                        ) from None
                    if isinstance(parsed, dict) and parsed.get("error"):
                        raise _stream_error(parsed["error"], self._chat_url)
                    if not isinstance(parsed, dict):
                        raise UpstreamProtocolError(
                            f"{self.vendor} sent model '{self.config.name}' an event that is "
                            "not an object."
                        )
                    check_usage(parsed.get("usage"), self.config.name)
                    # Relayed as the vendor's bytes unless the gateway changes the chunk.
                    yield StreamChunk(data, parsed)

    # -- other abilities: embeddings and legacy completions (server/providers/base.py) ---------

    async def embed(self, request: UpstreamRequest) -> JSON:
        check_task(self.config, "embeddings")
        limit = self.config.embedding_batch or EMBEDDING_BATCH
        return await embed_in_batches(request.upstream_body(), limit, self._embed)

    async def _embed(self, body: JSON) -> JSON:
        # The vendor's JSON as it came: without ``encoding_format`` the SDK asks for base64 (and
        # would decode it into Python floats); the front door hands the client the format it
        # asked for, so nothing is decoded here only to be encoded again.
        extra = {k: v for k, v in body.items() if k not in _EMBEDDING_OWN}
        encoding = body.get("encoding_format")
        response = await self.call(
            self.client.embeddings.with_raw_response.create(
                model=body["model"],
                input=body["input"],
                encoding_format=encoding if encoding in ("float", "base64") else openai.omit,
                extra_body=extra,
            )
        )
        try:
            data = orjson.loads(response.http_response.content)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise UpstreamProtocolError(
                f"Model '{self.config.name}' answered with something that is not embeddings."
            )
        return data

    def _text_extra(self, request: UpstreamRequest, stream: bool) -> JSON:
        extra = {k: v for k, v in request.body.items() if k not in ("model", "prompt", "stream")}
        if stream and not request.include_usage:
            extra["stream_options"] = {**(extra.get("stream_options") or {}), "include_usage": True}
        return extra

    async def complete_text(self, request: UpstreamRequest) -> JSON:
        check_task(self.config, "completions")
        result = await self.call(
            self.client.completions.create(
                model=request.upstream_model,
                prompt=request.body.get("prompt"),
                extra_body=self._text_extra(request, stream=False),
            )
        )
        return result.to_dict(mode="json")

    def stream_text(
        self, request: UpstreamRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        check_task(self.config, "completions")
        return self.open_stream(self._text_chunks(request))

    async def _text_chunks(self, request: UpstreamRequest) -> AsyncGenerator[StreamChunk, None]:
        stream = await self.client.completions.create(
            model=request.upstream_model,
            prompt=request.body.get("prompt"),
            stream=True,
            extra_body=self._text_extra(request, stream=True),
        )
        try:
            async for chunk in stream:
                yield StreamChunk(data=chunk.to_dict(mode="json"))
        finally:
            await stream.close()
