"""The ``personas:`` entries of the configuration file: what a persona is, validated at load.

How a persona is applied to a request is ``server/personas/persona.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class Scope(_Strict):
    """What a persona answers about, checked before it answers (``server/personas/scope.py``).

    With ``check`` on (the default), each question is first classified on the persona's own
    model; one out of scope gets the exact farewell without the model being asked to answer.
    """

    description: Annotated[str, Field(min_length=1)]
    in_scope: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    """Example questions the persona answers (shown to the classifier; `puente personas check`
    asks them too)."""
    out_of_scope: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    """Example questions that get the farewell."""
    check: bool = True
    """``on``: classify every question first (one short extra call); ``off``: the marker only."""
    timeout: Annotated[float, Field(gt=0)] = 20.0
    """Seconds the check may take; past that the persona answers as if it were off."""
    threshold: float | None = None
    """Decide by the log-probabilities of the labels ``yes`` / ``no`` instead of a JSON verdict:
    in scope when ``ln(P(yes) / P(no)) >= threshold``. A small model leans to "yes"; a threshold
    calibrated on the examples corrects that (``bench/PERSONAS.md``). Needs a model whose API
    returns ``top_logprobs`` (the local vLLM engine, OpenAI); on one that does not, every check
    fails and the marker alone answers. Unset: the JSON verdict, which any provider gives."""


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
    scope: Scope | None = None
    """What the persona answers about; with ``scope.check`` on, Puente enforces it."""
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
        if self.checks_scope and not self.farewell:
            raise ValueError("a scope that is checked needs a 'farewell' to answer with")
        return self

    @property
    def checks_scope(self) -> bool:
        return self.scope is not None and self.scope.check

    def system_prompt(self) -> str:
        parts = [self.system.strip()] if self.system.strip() else []
        if self.rules:
            parts.append("\n".join(f"- {rule}" for rule in self.rules))
        if self.farewell:
            parts.append(self.farewell_instruction.replace("{marker}", self.marker))
        return "\n\n".join(parts)


def check_targets(
    personas: list[PersonaConfig], model_names: set[str], serves: Callable[[str], bool]
) -> None:
    """Each persona's model and fallbacks are configured (``serves``: some model entry answers to
    that name); names are unique and differ from model names.

    Raises ``ValueError`` naming the persona (the config loader turns it into its error line).
    """
    seen: set[str] = set()
    for persona in personas:
        if persona.name in seen:
            raise ValueError(f"persona name {persona.name!r} is used twice")
        if persona.name in model_names:
            raise ValueError(f"persona {persona.name!r} has the same name as a model")
        seen.add(persona.name)
        for target in [persona.model, *(persona.fallbacks or [])]:
            if not serves(target):
                raise ValueError(f"persona {persona.name!r}: model {target!r} is not configured")
