"""What every embeddings provider shares: batches split to the upstream's limit and put back in
order, and vectors as OpenAI's base64 (little-endian float32, what the openai SDK decodes).

A request with more inputs than the upstream takes at once (OpenAI 2048, Gemini 100, or the
entry's ``embedding_batch``) goes out as several requests, one after another rather than at once:
a vendor's rate limit counts requests too, and the first failure ends the whole request with
that part's error.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Awaitable, Callable
from typing import Any

from server.pipeline.request import JSON


def inputs_of(value: Any) -> list[Any]:
    """The separate inputs of an embeddings ``input``: a string or one list of token ids is one
    input; a list of strings or of token-id lists is one input each."""
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return value
    return [value]


async def embed_in_batches(
    body: JSON, limit: int | None, embed: Callable[[JSON], Awaitable[JSON]]
) -> JSON:
    """``embed(body)``, split into parts of at most ``limit`` inputs when needed, and the parts'
    answers merged into one ``list`` whose ``index`` values count across the whole input."""
    inputs = inputs_of(body.get("input"))
    if limit is None or len(inputs) <= limit:
        return await embed(body)
    answers = [
        await embed({**body, "input": inputs[start : start + limit]})
        for start in range(0, len(inputs), limit)
    ]
    return merge(answers, [min(limit, len(inputs) - s) for s in range(0, len(inputs), limit)])


def merge(answers: list[JSON], sizes: list[int]) -> JSON:
    """Answers to consecutive parts (``sizes`` inputs each) as the answer to the whole."""
    data: list[JSON] = []
    prompt = total = 0
    offset = 0
    for answer, size in zip(answers, sizes, strict=True):
        for item in sorted(answer.get("data") or [], key=lambda item: int(item.get("index", 0))):
            data.append({**item, "index": offset + int(item.get("index", 0))})
        offset += size
        usage = answer.get("usage") or {}
        prompt += int(usage.get("prompt_tokens") or 0)
        total += int(usage.get("total_tokens") or 0)
    merged = {**answers[0], "data": data}
    merged["usage"] = {"prompt_tokens": prompt, "total_tokens": total}
    return merged


def to_base64(values: list[float]) -> str:
    """A vector as OpenAI sends it with ``encoding_format: base64``: float32, little-endian."""
    packed = array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def from_base64(text: str) -> list[float]:
    packed = array("f")
    packed.frombytes(base64.b64decode(text))
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tolist()


def encoded_as(answer: JSON, encoding_format: str) -> JSON:
    """``answer`` with every vector in ``encoding_format`` (``float`` or ``base64``), for an
    upstream that answered in the other one (Gemini has floats only)."""
    want_base64 = encoding_format == "base64"
    data = []
    for item in answer.get("data") or []:
        vector = item.get("embedding")
        if want_base64 and isinstance(vector, list):
            data.append({**item, "embedding": to_base64(vector)})
        elif not want_base64 and isinstance(vector, str):
            data.append({**item, "embedding": from_base64(vector)})
        else:
            data.append(item)
    return {**answer, "data": data}
