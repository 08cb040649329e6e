"""Personas: named experts applied on the server, so every client gets them with no prompt.

A persona is a public model name that resolves to a configured model plus a server-side system
message (``system`` text, ``rules`` and the farewell instruction), default sampling parameters and
hard caps. What the client's own system messages do is the persona's ``client_system`` policy:
``append`` (kept, after the persona's), ``ignore`` (dropped) or ``reject`` (400).

The farewell itself (marker → exact text) is ``server.farewell``; this module only tells the model
about the marker and hands the gateway what it needs to substitute it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from server.errors import InvalidRequest, ModelNotFound
from server.protocol import JSON, ChatRequest
from server.system_role import SYSTEM_ROLES

if TYPE_CHECKING:
    # Only a type here: the router imports the config, which imports this module.
    from server.router import Router

ClientSystemPolicy = Literal["append", "ignore", "reject"]

DEFAULT_MARKER = "[[FAREWELL]]"
DEFAULT_FAREWELL_INSTRUCTION = (
    "If the question is outside your scope, or you do not know the answer, reply with exactly "
    "{marker} and nothing else."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sampling(_Strict):
    """Defaults, used where the client did not send the parameter."""

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None


class Caps(_Strict):
    """Upper bounds: a larger value from the client is lowered to the cap.

    Only ``max_tokens`` is also set when the client sent no limit at all. The others are left
    out when the client left them out, because some vendors refuse them outright (Anthropic's
    newer API versions, OpenAI's reasoning models); a persona that wants one sent every time
    sets it in ``defaults``.
    """

    max_tokens: Annotated[int, Field(ge=1)] | None = None
    """Bounds ``max_tokens`` and ``max_completion_tokens``; sent as ``max_tokens`` when the
    client gave neither."""
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1)] | None = None


class PersonaConfig(_Strict):
    name: Annotated[str, Field(min_length=1)]
    model: Annotated[str, Field(min_length=1)]
    """The configured model that answers for the persona (local or cloud)."""
    description: str | None = None
    system: str = ""
    rules: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    farewell: Annotated[str, Field(min_length=1)] | None = None
    """The exact text the client sees when the model answers with the marker."""
    marker: Annotated[str, Field(min_length=3)] = DEFAULT_MARKER
    farewell_instruction: str = DEFAULT_FAREWELL_INSTRUCTION
    """How the model is told about the marker; ``{marker}`` is replaced by the marker."""
    client_system: ClientSystemPolicy = "append"
    defaults: Sampling = Field(default_factory=Sampling)
    caps: Caps = Field(default_factory=Caps)
    fallbacks: list[str] | None = None
    """Models that answer, in order, when ``model`` fails with a retryable error; unset: the
    model's own ``fallbacks``. Each gets the persona's prompt, translated for its vendor."""

    @field_validator("marker", mode="after")
    @classmethod
    def _marker_is_visible(cls, marker: str) -> str:
        if marker != marker.strip():
            raise ValueError("the marker must not start or end with whitespace")
        return marker

    @field_validator("farewell_instruction", mode="after")
    @classmethod
    def _names_the_marker(cls, text: str) -> str:
        if "{marker}" not in text:
            raise ValueError("must contain {marker}, where the marker is written")
        return text

    @model_validator(mode="after")
    def _defaults_within_caps(self) -> PersonaConfig:
        for key in ("max_tokens", "temperature", "top_p"):
            default, cap = getattr(self.defaults, key), getattr(self.caps, key)
            if default is not None and cap is not None and default > cap:
                raise ValueError(f"defaults.{key} ({default}) is above caps.{key} ({cap})")
        if not self.system.strip() and not self.rules:
            raise ValueError("a persona needs 'system' text or 'rules'")
        return self

    def system_prompt(self) -> str:
        parts = [self.system.strip()] if self.system.strip() else []
        if self.rules:
            parts.append("\n".join(f"- {rule}" for rule in self.rules))
        if self.farewell:
            parts.append(self.farewell_instruction.replace("{marker}", self.marker))
        return "\n\n".join(parts)


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

    def shape(self, request: ChatRequest) -> None:
        """Rewrite the request for the target model: persona system message first, the client's
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
        request.body = body

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


def check_targets(personas: list[PersonaConfig], model_names: list[str]) -> None:
    """Each persona's model is configured; names are unique and differ from model names.

    Raises ``ValueError`` naming the persona (the config loader turns it into its error line).
    """
    exact = set(model_names)
    prefixes = [name[:-1] for name in model_names if name.endswith("/*")]
    seen: set[str] = set()
    for persona in personas:
        if persona.name in seen:
            raise ValueError(f"persona name {persona.name!r} is used twice")
        if persona.name in exact:
            raise ValueError(f"persona {persona.name!r} has the same name as a model")
        seen.add(persona.name)
        for target in [persona.model, *(persona.fallbacks or [])]:
            wildcard = any(target.startswith(p) and len(target) > len(p) for p in prefixes)
            if target not in exact and not wildcard:
                raise ValueError(f"persona {persona.name!r}: model {target!r} is not configured")


def persona_cards(personas: Personas, router: Router, created: int) -> list[dict[str, Any]]:
    """``/v1/models`` entries for the personas whose model can serve now."""
    cards = []
    for persona in personas:
        try:
            router.resolve(persona.model)
        except ModelNotFound:
            continue  # its model is disabled (a missing key): so is the persona
        cards.append(persona.card(created))
    return cards
