"""``provider: gemini``: Google Gemini (the Gemini API, ``generativelanguage.googleapis.com``),
translated both ways in ``gemini_translate``.

``generateContent``, the hot path, is posted directly (``vendor_http``); the official
``google-genai`` SDK still builds each request (URL, headers, body: ``_build_request``) and each
answer's types, as it would itself, and its exceptions carry the vendor's errors (statuses and
error objects inside a stream) to ``vendor_errors``. Embeddings go through the SDK (on the same
aiohttp session)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import urlencode

import httpx2
import orjson
import pydantic
from google import genai
from google.genai import _common, types
from google.genai import errors as genai_errors
from google.genai.models import (
    _GenerateContentParameters_to_mldev,
    _GenerateContentResponse_from_mldev,
)

from server.config import ModelConfig
from server.errors import InvalidRequest
from server.pipeline.request import JSON, ChatRequest, StreamChunk, UpstreamRequest
from server.providers.cloud import CloudClients
from server.providers.embeddings import embed_in_batches
from server.providers.gemini_embeddings import embed_request, to_embedding_list
from server.providers.gemini_translate import StreamTranslator, build_request, to_completion
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


# Most inputs one batchEmbedContents request takes.
EMBEDDING_BATCH = 100


class GeminiProvider(SDKProvider):
    kind = "gemini"
    vendor = "Gemini"
    errors = GEMINI
    # pydantic: the SDK validates the vendor's answer against its types (a count that is text).
    caught = (
        genai_errors.APIError,
        genai_errors.UnknownApiResponseError,
        httpx2.HTTPError,
        pydantic.ValidationError,
    )

    def __init__(self, config: ModelConfig, cloud: CloudClients) -> None:
        super().__init__(config)
        self.images = cloud.images
        self.wire = VendorHTTP(cloud, config, {}, _status_error_from_response)
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

    def _http(
        self,
        model: str,
        contents: list[types.Content],
        config: types.GenerateContentConfig,
        stream: bool,
    ) -> tuple[str, JSON, dict[str, str], types._GenerateContentParameters]:
        """URL, body and headers the SDK would send, built by the SDK (``generate_content``)."""
        params = types._GenerateContentParameters(model=model, contents=contents, config=config)
        api = self.client._api_client
        built = _GenerateContentParameters_to_mldev(api, params, None, params)
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        path = f"{{model}}:{method}".format_map(built.get("_url") or {"model": model})
        if query := built.get("_query"):
            path += ("&" if "?" in path else "?") + urlencode(query)
        built.pop("config", None)
        body = _common.encode_unserializable_types(_common.convert_to_dict(built))
        request = api._build_request("post", path, body, None)
        return request.url, request.data, request.headers, params  # type: ignore[return-value]

    def _answer(
        self, data: Any, params: types._GenerateContentParameters
    ) -> types.GenerateContentResponse:
        """The answer's type, built as the SDK builds it."""
        config = params.config
        kwargs: dict[str, object] = (
            {
                "config": {
                    "response_schema": getattr(config, "response_schema", None),
                    "response_json_schema": getattr(config, "response_json_schema", None),
                    "include_all_fields": getattr(config, "include_all_fields", None),
                }
            }
            if config is not None
            else {}
        )
        converted = _GenerateContentResponse_from_mldev(data or {}, None, params)
        return types.GenerateContentResponse._from_response(response=converted, kwargs=kwargs)

    async def complete(self, request: ChatRequest) -> JSON:
        check_task(self.config, "chat")
        model = check_model_id(request.upstream_model)
        contents, config = await build_request(request, self.images)
        url, body, headers, params = self._http(model, contents, config, stream=False)
        response = await self.call(self._post(url, body, headers, params))
        return to_completion(response, request.model)

    async def _post(
        self,
        url: str,
        body: JSON,
        headers: dict[str, str],
        params: types._GenerateContentParameters,
    ) -> types.GenerateContentResponse:
        async with self.wire.post(url, body, headers) as response:
            data = await self.wire.json(response)
        if not isinstance(data, dict):
            raise genai_errors.UnknownApiResponseError("the answer is not a JSON object")
        return self._answer(data, params)

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        check_task(self.config, "chat")
        check_model_id(request.upstream_model)  # before anything is opened
        return self.open_stream(self._chunks(request))

    async def _chunks(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        contents, config = await build_request(request, self.images)
        translator = StreamTranslator(request.model)
        model = check_model_id(request.upstream_model)
        url, body, headers, params = self._http(model, contents, config, stream=True)
        async with self.wire.post(url, body, headers) as response:
            async for _, data in self.wire.events(response):
                try:
                    parsed = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise genai_errors.UnknownApiResponseError(
                        "a stream event is not JSON"
                    ) from None
                if isinstance(parsed, dict) and "error" in parsed:
                    # As the SDK raises an error object inside a stream.
                    error = parsed["error"] if isinstance(parsed["error"], dict) else {}
                    raise _status_error(error.get("code"), parsed, None)
                for chunk in translator.feed(self._answer(parsed, params)):
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
