"""``provider: gemini``: Google Gemini (the Gemini API, ``generativelanguage.googleapis.com``),
translated both ways in ``gemini_translate`` (requests) and ``gemini_answer`` (answers).

``generateContent``, the hot path, is posted directly (``vendor_http``) as plain JSON; the
official ``google-genai`` SDK builds, once per provider, the URL prefix and the headers it would
send itself (``_build_request``), and its exceptions carry the vendor's errors (statuses and error
objects inside a stream) to ``vendor_errors``. Embeddings go through the SDK (on the same aiohttp
session)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx2
import orjson
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from server.config import ModelConfig
from server.errors import InvalidRequest
from server.pipeline.request import JSON, ChatRequest, StreamChunk, UpstreamRequest
from server.providers.cloud import CloudClients
from server.providers.embeddings import embed_in_batches
from server.providers.gemini_answer import StreamTranslator, to_completion
from server.providers.gemini_embeddings import embed_request, to_embedding_list
from server.providers.gemini_translate import build_request
from server.providers.sdk_base import SDKProvider
from server.providers.tasks import check_task
from server.providers.vendor_errors import GEMINI
from server.providers.vendor_http import VendorHTTP

# The SDK puts the model name into the request's URL path: a client's name (``gemini/*``) may
# only be a plain model id (``models/``/``tunedModels/`` prefix allowed), never ``..``, ``?``,
# ``#`` or an escaped ``/`` that would point the request somewhere else.
_MODEL_ID = re.compile(r"^(?:(?:models|tunedModels)/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_model_id(name: str) -> str:
    if not _MODEL_ID.match(name) or ".." in name:
        raise InvalidRequest(f"'{name}' is not a valid Gemini model name.", param="model")
    return name


def _status_error(code: Any, body: Any, response: httpx2.Response | None) -> BaseException:
    """The SDK's exception for an error status (``errors.APIError.raise_error``)."""
    status = code if isinstance(code, int) else 0
    if 400 <= status < 500:
        return genai_errors.ClientError(status, body, response)
    if 500 <= status < 600:
        return genai_errors.ServerError(status, body, response)
    return genai_errors.APIError(status, body, response)


def _status_error_from_response(response: httpx2.Response) -> BaseException:
    """As ``errors.APIError.raise_for_async_response`` reads an error answer."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = {"message": response.text, "status": response.reason_phrase}
    return _status_error(response.status_code, body, response)


def _raise_error_object(data: Any) -> None:
    """An error object in place of an answer (``{"error": {...}}``, as Gemini sends one inside a
    stream) raised as the SDK raises it."""
    if isinstance(data, dict) and "error" in data:
        error = data["error"] if isinstance(data["error"], dict) else {}
        raise _status_error(error.get("code"), data, None)


# Most inputs one batchEmbedContents request takes.
EMBEDDING_BATCH = 100


class GeminiProvider(SDKProvider):
    kind = "gemini"
    vendor = "Gemini"
    errors = GEMINI
    # pydantic: the SDK validates embedding answers against its types (a count that is text);
    # UnknownApiResponseError: a chat answer that does not fit the API (``gemini_answer``).
    caught = (
        genai_errors.APIError,
        genai_errors.UnknownApiResponseError,
        httpx2.HTTPError,
        pydantic.ValidationError,
    )

    def __init__(self, config: ModelConfig, cloud: CloudClients) -> None:
        super().__init__(config)
        self.images = cloud.images
        self.client = genai.Client(
            vertexai=False,  # never switched on by GOOGLE_GENAI_USE_VERTEXAI in the environment
            api_key=config.api_key or "none",
            http_options=types.HttpOptions(
                base_url=config.base_url,
                headers=config.headers or None,
                # The SDK takes one number (milliseconds) for every phase: the read timeout.
                timeout=int(config.timeouts.read * 1000),
                httpx_async_client=cloud.http,
                retry_options=types.HttpRetryOptions(attempts=1),  # Puente's router retries
            ),
        )
        # What the SDK would send with every request, asked once: the versioned base URL
        # (``…/v1/``) and its headers (key, client headers, user agent, server timeout).
        base = self.client._api_client._build_request("post", "", {}, None)
        self.url_prefix = base.url
        self.wire = VendorHTTP(cloud, config, base.headers, _status_error_from_response)

    def _url(self, model: str, stream: bool) -> str:
        # As the SDK names a Gemini API model (``t_model``): ``models/`` unless already prefixed.
        if not model.startswith(("models/", "tunedModels/")):
            model = "models/" + model
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{self.url_prefix}{model}:{method}"

    async def complete(self, request: ChatRequest) -> JSON:
        check_task(self.config, "chat")
        model = check_model_id(request.upstream_model)
        body = await build_request(request, self.images)
        return await self.call(self._post(self._url(model, stream=False), body, request.model))

    async def _post(self, url: str, body: JSON, model: str) -> JSON:
        data = await self.wire.whole(url, body)
        _raise_error_object(data)
        return to_completion(data, model)

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        check_task(self.config, "chat")
        check_model_id(request.upstream_model)  # before anything is opened
        return self.open_stream(self._chunks(request))

    async def _chunks(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        body = await build_request(request, self.images)
        translator = StreamTranslator(request.model)
        url = self._url(check_model_id(request.upstream_model), stream=True)
        async with self.wire.post(url, body) as response:
            async for events in self.wire.events(response):
                for _, data in events:
                    try:
                        parsed = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise genai_errors.UnknownApiResponseError(
                            "a stream event is not JSON"
                        ) from None
                    _raise_error_object(parsed)
                    for chunk in translator.feed(parsed):
                        yield chunk
        for chunk in translator.finish():
            yield chunk

    # -- embeddings (server/providers/base.py); legacy completions are not translated ----------
    # Gemini has no text-completion API, and a prompt passed off as a chat turn answers
    # differently from what a completions client expects: without ``complete_text`` the pipeline
    # answers 400 naming /v1/chat/completions (README "Embeddings and legacy completions").

    async def embed(self, request: UpstreamRequest) -> JSON:
        check_task(self.config, "embeddings")
        limit = self.config.embedding_batch or EMBEDDING_BATCH
        return await embed_in_batches(request.upstream_body(), limit, self._embed)

    async def _embed(self, body: JSON) -> JSON:
        model = check_model_id(body["model"])
        texts, config = embed_request(body)
        # One Content per input: given plain strings, the SDK joins them into one content for
        # the models it takes for multimodal embedders (gemini-embedding-2), and N inputs would
        # come back as one vector.
        contents = [types.Content(role="user", parts=[types.Part(text=text)]) for text in texts]
        response = await self.call(
            self.client.aio.models.embed_content(model=model, contents=contents, config=config)
        )
        return to_embedding_list(response, texts, body["model"])
