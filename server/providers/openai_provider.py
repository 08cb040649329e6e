"""``provider: openai``: OpenAI, or any vendor that speaks its API at a ``base_url`` (DeepSeek,
Mistral, Groq, OpenRouter, Ollama …), through the official ``openai`` SDK.

No translation is needed: the client's body goes out as sent (only ``model`` swapped), every field
the SDK has no argument for riding in ``extra_body``, and the SDK's objects come back as dicts.
What this provider adds over ``openai_compatible`` is the SDK's own handling of the vendor's
errors and stream framing, mapped once in ``vendor_errors``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, cast
from urllib.parse import urlsplit

import httpx2
import openai
import orjson
from openai.types.chat import ChatCompletion

from server.config import ModelConfig
from server.errors import UpstreamProtocolError
from server.pipeline.request import JSON, ChatRequest, StreamChunk, UpstreamRequest
from server.providers.cloud import CloudClients, sdk_timeout
from server.providers.embeddings import embed_in_batches
from server.providers.sdk_base import SDKProvider
from server.providers.tasks import check_task
from server.providers.upstream_errors import check_usage
from server.providers.vendor_errors import OPENAI

DEFAULT_BASE_URL = "https://api.openai.com/v1"

# Most inputs OpenAI takes in one embeddings request.
EMBEDDING_BATCH = 2048

_EMBEDDING_OWN = ("model", "input", "encoding_format")

# Sent as the SDK's own arguments; everything else in the body goes in ``extra_body``.
_OWN = ("model", "messages", "stream")


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

    def _extra(self, request: ChatRequest, stream: bool) -> JSON:
        extra = {k: v for k, v in request.body.items() if k not in _OWN}
        if stream and not request.include_usage:
            # Ask for usage anyway, to count tokens; the gateway drops that chunk for the client.
            extra["stream_options"] = {**(extra.get("stream_options") or {}), "include_usage": True}
        return extra

    async def complete(self, request: ChatRequest) -> JSON:
        check_task(self.config, "chat")
        result = await self.call(
            self.client.chat.completions.create(
                model=request.upstream_model,
                messages=cast(Any, request.messages),
                extra_body=self._extra(request, stream=False),
            )
        )
        if not isinstance(result, ChatCompletion):
            # The SDK hands back text when the answer is not JSON (an event stream, a proxy's
            # page): there is no completion in it.
            raise UpstreamProtocolError(
                f"{self.vendor} answered model '{self.config.name}' with something that is not a "
                "chat completion."
            )
        data = result.to_dict(mode="json")
        check_usage(data.get("usage"), self.config.name)  # the SDK does not validate answers
        return data

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        check_task(self.config, "chat")
        return self.open_stream(self._chunks(request))

    async def _chunks(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        stream = await self.client.chat.completions.create(
            model=request.upstream_model,
            messages=cast(Any, request.messages),
            stream=True,
            extra_body=self._extra(request, stream=True),
        )
        try:
            async for chunk in stream:
                data = chunk.to_dict(mode="json")
                check_usage(data.get("usage"), self.config.name)
                yield StreamChunk(data=data)
        finally:
            await stream.close()

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
