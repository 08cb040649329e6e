"""OpenAI embeddings ↔ Gemini ``batchEmbedContents``, both ways (pure functions).

OpenAI → Gemini: each ``input`` string is one content of one text part; ``dimensions`` is
``outputDimensionality``; a Gemini ``task_type`` (``RETRIEVAL_QUERY``, ``RETRIEVAL_DOCUMENT`` …)
may ride along as an extra field. Token ids cannot be translated (Gemini's tokenizer is not
OpenAI's): 400. ``user`` has no Gemini counterpart and is dropped.

Gemini → OpenAI: ``embeddings[i].values`` becomes ``data[i].embedding`` (floats; the front door
encodes base64), and ``usageMetadata.promptTokenCount`` the usage. The Gemini API does not always
report tokens for embeddings; then usage is estimated as Puente's admission does (about four
bytes a token), so budgets still count something.
"""

from __future__ import annotations

from typing import Any

from google.genai import types

from server.errors import InvalidRequest, UpstreamProtocolError
from server.pipeline.request import JSON
from server.providers.embeddings import inputs_of


def embed_request(body: JSON) -> tuple[list[str], types.EmbedContentConfig]:
    texts = inputs_of(body.get("input"))
    if not all(isinstance(text, str) for text in texts):
        raise InvalidRequest(
            "Gemini embeds text only: 'input' must be a string or a list of strings, not "
            "token ids.",
            param="input",
            code="invalid_value",
        )
    config: dict[str, Any] = {}
    if (dimensions := body.get("dimensions")) is not None:
        config["output_dimensionality"] = dimensions
    if isinstance(task_type := body.get("task_type"), str):
        config["task_type"] = task_type
    return texts, types.EmbedContentConfig(**config)


def to_embedding_list(response: types.EmbedContentResponse, texts: list[str], model: str) -> JSON:
    embeddings = response.embeddings or []
    if len(embeddings) != len(texts):
        raise UpstreamProtocolError(
            f"Gemini answered {len(embeddings)} embeddings for {len(texts)} inputs."
        )
    usage = response.usage_metadata
    prompt = usage.prompt_token_count if usage is not None else None
    if prompt is None:
        prompt = sum(len(text.encode()) // 4 + 1 for text in texts)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": list(e.values or [])}
            for i, e in enumerate(embeddings)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
