"""``provider: gemini``: Google Gemini (the Gemini API, ``generativelanguage.googleapis.com``)
through the official ``google-genai`` SDK, translated both ways in ``gemini_translate``."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager

import httpx2
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

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

# The SDK puts the model name into the request's URL path: a client's name (``gemini/*``) may
# only be a plain model id (``models/``/``tunedModels/`` prefix allowed), never ``..``, ``?``,
# ``#`` or an escaped ``/`` that would point the request somewhere else.
_MODEL_ID = re.compile(r"^(?:(?:models|tunedModels)/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_model_id(name: str) -> str:
    if not _MODEL_ID.match(name) or ".." in name:
        raise InvalidRequest(f"'{name}' is not a valid Gemini model name.", param="model")
    return name


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

    async def complete(self, request: ChatRequest) -> JSON:
        check_task(self.config, "chat")
        model = check_model_id(request.upstream_model)
        contents, config = await build_request(request, self.images)
        response = await self.call(
            self.client.aio.models.generate_content(model=model, contents=contents, config=config)
        )
        return to_completion(response, request.model)

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        check_task(self.config, "chat")
        check_model_id(request.upstream_model)  # before anything is opened
        return self.open_stream(self._chunks(request))

    async def _chunks(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        contents, config = await build_request(request, self.images)
        translator = StreamTranslator(request.model)
        stream = await self.client.aio.models.generate_content_stream(
            model=check_model_id(request.upstream_model), contents=contents, config=config
        )
        try:
            async for response in stream:
                for chunk in translator.feed(response):
                    yield chunk
            for chunk in translator.finish():
                yield chunk
        finally:
            # The SDK's stream is an async generator; closing it closes the HTTP response.
            await stream.aclose()  # type: ignore[attr-defined]

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
