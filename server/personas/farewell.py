"""The farewell marker: the model says goodbye with a short marker, Puente says it exactly.

A persona's system prompt tells the model to answer with only a marker (``[[FAREWELL]]`` by
default) when a question is outside its scope or it does not know the answer. Puente replaces the
marker with the persona's ``farewell`` text, so the goodbye is guaranteed word for word instead of
paraphrased by the model:

- **The marker opens the answer** (possibly after whitespace or decoration such as quotes, ``**``
  or backticks: anything without a letter or digit): the answer is the farewell text, exactly.
- **The marker in the middle of an answer**: what the model wrote before it is kept (in a stream it
  has already been sent and cannot be taken back), the marker becomes the farewell text, and
  everything after the marker is dropped. The farewell ends the answer, so ``finish_reason`` is
  ``stop``.

Streaming holds back only text that could still turn out to be the marker: a partial marker at the
end of what arrived so far (fewer characters than the marker), and, before anything was sent,
leading whitespace or decoration up to the marker's length. Everything else goes out as it arrives,
so a normal answer's first words are not delayed waiting for the next chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from server.pipeline.request import JSON, StreamChunk

OnFarewell = Callable[[], None]


def _has_word(text: str) -> bool:
    return any(c.isalnum() for c in text)


def _partial_marker(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of ``marker``."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


class FarewellDetector:
    """One answer's text, fed piece by piece; returns what may be sent now."""

    __slots__ = ("_pending", "_started", "farewell", "marker", "said")

    def __init__(self, marker: str, farewell: str) -> None:
        if not marker:
            raise ValueError("the farewell marker must not be empty")
        self.marker = marker
        self.farewell = farewell
        self.said = False
        """True once the marker was seen (and the farewell sent in its place)."""
        self._pending = ""
        self._started = False

    def feed(self, text: str) -> str:
        if self.said:
            return ""
        pending = self._pending + text
        at = pending.find(self.marker)
        if at >= 0:
            before = pending[:at]
            if not self._started and not _has_word(before):
                before = ""  # only whitespace or decoration around the marker: drop it
            self.said = True
            self._pending = ""
            return before + self.farewell
        ready = pending[: len(pending) - _partial_marker(pending, self.marker)]
        if not self._started and not _has_word(ready) and len(ready) <= len(self.marker):
            # Nothing said yet but whitespace or decoration, which may still introduce the marker.
            self._pending = pending
            return ""
        self._pending = pending[len(ready) :]
        if ready:
            self._started = True
        return ready

    def flush(self) -> str:
        """The text still held back, at the end of the answer."""
        if self.said:
            return ""
        rest, self._pending = self._pending, ""
        return rest


def replace_in_completion(data: JSON, marker: str, farewell: str, on_farewell: OnFarewell) -> None:
    """Substitute the farewell in each choice of a whole ``chat.completion`` (in place)."""
    for choice in data.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(message, dict) or not isinstance(content, str):
            continue
        detector = FarewellDetector(marker, farewell)
        text = detector.feed(content) + detector.flush()
        if detector.said:
            message["content"] = text
            choice["finish_reason"] = "stop"
            on_farewell()


def _nothing_to_send(choice: Any) -> bool:
    if not isinstance(choice, dict) or choice.get("finish_reason") is not None:
        return False
    if choice.get("logprobs"):
        return False
    delta = choice.get("delta") or {}
    return set(delta) <= {"content"} and not delta.get("content")


async def replace_in_stream(
    chunks: AsyncIterator[StreamChunk], marker: str, farewell: str, on_farewell: OnFarewell
) -> AsyncIterator[StreamChunk]:
    """Relay ``chat.completion.chunk`` objects with the marker replaced, choice by choice.

    A chunk whose only content was held back is not sent at all; the held text goes out with the
    next chunk of that choice, at the latest with the one that carries its ``finish_reason``.
    """
    detectors: dict[int, FarewellDetector] = {}
    template: JSON = {}
    async for chunk in chunks:
        if chunk.is_usage_only:
            yield chunk
            continue
        data = chunk.data
        template = data
        choices = data.get("choices") or []
        for choice in choices:
            if isinstance(choice, dict):
                _replace_in_choice(choice, detectors, marker, farewell, on_farewell)
        if choices and all(_nothing_to_send(c) for c in choices):
            continue
        yield chunk
    # An upstream that ended without a finish_reason still gets its held-back text delivered.
    rest = [(i, d.flush()) for i, d in sorted(detectors.items())]
    rest = [(i, text) for i, text in rest if text]
    if rest and template:
        base = {k: v for k, v in template.items() if k not in ("choices", "usage")}
        base["choices"] = [
            {"index": i, "delta": {"content": text}, "finish_reason": None} for i, text in rest
        ]
        yield StreamChunk(data=base)


def _replace_in_choice(
    choice: JSON,
    detectors: dict[int, FarewellDetector],
    marker: str,
    farewell: str,
    on_farewell: OnFarewell,
) -> None:
    index = choice.get("index", 0)
    index = index if isinstance(index, int) else 0
    detector = detectors.get(index)
    if detector is None:
        detector = detectors[index] = FarewellDetector(marker, farewell)
    said_before = detector.said
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        delta = choice["delta"] = {}
    content = delta.get("content")
    if isinstance(content, str) and content:
        delta["content"] = detector.feed(content)
    if choice.get("finish_reason") is not None:
        tail = detector.flush()
        if tail:
            delta["content"] = (delta.get("content") or "") + tail
        if detector.said:
            choice["finish_reason"] = "stop"
    if detector.said and not said_before:
        on_farewell()
