"""Anthropic Messages requests forwarded as they came, for ``/v1/messages`` on a Claude model.

The Messages front door sends a ``NativeMessages``: the pipeline's neutral chat request (which
every other provider reads, a fallback's included) plus the client's own Messages body and its
``anthropic-version`` / ``anthropic-beta`` headers. The Anthropic provider sends that body as is
(only ``model`` swapped), so ``cache_control``, thinking blocks and their signatures, server tools
and betas reach Anthropic. It answers in the neutral shapes the pipeline works on (usage, renames,
records) and carries the vendor's own ``Message`` (``NativeCompletion``) or stream events
(``NativeChunk``) beside them, which the front door relays untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.pipeline.request import JSON, ChatRequest, StreamChunk

# The client headers that describe its body: forwarded with it.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


@dataclass(frozen=True, slots=True)
class NativeMessages(ChatRequest):
    messages_body: JSON = field(default_factory=dict)
    """The client's Messages body, as sent."""
    anthropic_headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def wrap(cls, chat: ChatRequest, body: JSON, headers: dict[str, str]) -> NativeMessages:
        return cls(
            body=chat.body,
            model=chat.model,
            upstream_model=chat.upstream_model,
            stream=chat.stream,
            include_usage=chat.include_usage,
            messages_body=body,
            anthropic_headers=headers,
        )

    def vendor_body(self, stream: bool) -> JSON:
        body = {**self.messages_body, "model": self.upstream_model}
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return body


class NativeCompletion(dict[str, Any]):
    """A ``chat.completion`` that also carries the vendor's ``Message`` as it came."""

    def __init__(self, completion: JSON, message: JSON) -> None:
        super().__init__(completion)
        self.message = message


class NativeChunk(StreamChunk):
    """A ``chat.completion.chunk`` with the vendor's stream events that led to it."""

    __slots__ = ("events",)

    def __init__(self, data: JSON, events: list[JSON]) -> None:
        super().__init__(data=data)
        self.events = events
