"""Personas: named experts applied on the server, so every client gets them with no prompt.

A persona is a public model name that resolves to a configured model plus a server-side system
message (``system`` text, ``rules`` and the farewell instruction), default sampling parameters and
hard caps. What the client's own system messages do is the persona's ``client_system`` policy:
``append`` (kept, after the persona's), ``ignore`` (dropped) or ``reject`` (400).

The farewell itself (marker → exact text) is ``server.personas.farewell``; this module only tells
the model about the marker and hands the gateway what it needs to substitute it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from server.errors import InvalidRequest
from server.personas.config import Caps, PersonaConfig, Sampling
from server.pipeline.request import JSON, ChatRequest
from server.pipeline.system_role import SYSTEM_ROLES


def _number(value: Any) -> float | None:
    """A numeric parameter as the schema accepted it (lax: ``"0.5"`` passes validation)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _cap(body: JSON, key: str, cap: float | None) -> None:
    if cap is None:
        return
    value = _number(body.get(key))
    if value is not None and value > cap:
        body[key] = cap


def _apply_sampling(body: JSON, defaults: Sampling, caps: Caps) -> None:
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        default = getattr(defaults, key)
        if default is not None and body.get(key) is None:
            body[key] = default
    no_limit = body.get("max_tokens") is None and body.get("max_completion_tokens") is None
    if defaults.max_tokens is not None and no_limit:
        body["max_tokens"] = defaults.max_tokens
    _cap(body, "temperature", caps.temperature)
    _cap(body, "top_p", caps.top_p)
    if caps.n is not None and (_number(body.get("n")) or 1) > caps.n:
        body["n"] = caps.n
    if caps.max_tokens is not None:
        limits = [k for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None]
        for key in limits:
            _cap(body, key, caps.max_tokens)
        if not limits:
            body["max_tokens"] = caps.max_tokens


class Persona:
    """A configured persona, its system prompt rendered once."""

    __slots__ = ("config", "system_prompt")

    def __init__(self, config: PersonaConfig) -> None:
        self.config = config
        self.system_prompt = config.system_prompt()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model(self) -> str:
        return self.config.model

    def apply(self, request: ChatRequest) -> ChatRequest:
        """The request rewritten for the target model: persona system message first, the client's
        system messages per the policy, sampling within the caps. ``request.model`` stays the
        persona's name, which is what the response's ``model`` field shows."""
        messages = request.messages
        policy = self.config.client_system
        if policy != "append" and any(m.get("role") in SYSTEM_ROLES for m in messages):
            if policy == "reject":
                raise InvalidRequest(
                    f"The persona '{self.name}' does not accept system messages: "
                    "send only user and assistant messages.",
                    param="messages",
                    code="system_messages_not_allowed",
                )
            messages = [m for m in messages if m.get("role") not in SYSTEM_ROLES]
        body = {
            **request.body,
            "messages": [{"role": "system", "content": self.system_prompt}, *messages],
        }
        _apply_sampling(body, self.config.defaults, self.config.caps)
        return request.with_body(body)

    def card(self, created: int) -> dict[str, Any]:
        """This persona as ``/v1/models`` lists it."""
        card: dict[str, Any] = {
            "id": self.name,
            "object": "model",
            "created": created,
            "owned_by": "puente",
        }
        if self.config.description:
            card["description"] = self.config.description
        return card


class Personas:
    """The persona table: name → persona, in configuration order."""

    def __init__(self, configs: list[PersonaConfig] | None = None) -> None:
        self._by_name = {config.name: Persona(config) for config in configs or []}

    def get(self, name: str) -> Persona | None:
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[Persona]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)
