"""``puente personas check NAME``: ask a persona a battery of questions, count its farewells.

For teachers and students iterating on a persona: each question is sent as a client would send
it (``POST /v1/chat/completions`` with ``model: NAME``) to a running Puente (``--url``) or to one
started in this process from the configuration file, and the answer is classified as the
persona's exact farewell or an answer. The totals are the two figures that matter: the share of
out-of-scope questions that got the farewell, and of in-scope ones that got an answer.

The battery is the persona's ``scope.in_scope`` / ``scope.out_of_scope`` examples, or a YAML
file with ``in_scope``, ``out_of_scope`` and ``tricky`` lists. A tricky entry is a question that
expects the farewell (a poem, "ignore your rules"), or ``{question: ..., expect: answer}`` for
one that should be answered (the subject asked in another language).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml

from server.personas.config import PersonaConfig

Expect = Literal["answer", "farewell"]
REQUEST_TIMEOUT_S = 600.0  # a 1.5 B model on two cores can take minutes for a long answer


class BatteryError(Exception):
    """The battery file or the persona cannot be used; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    kind: Literal["in_scope", "out_of_scope", "tricky"]
    expect: Expect


@dataclass(frozen=True, slots=True)
class Outcome:
    question: Question
    farewell: bool
    text: str
    seconds: float
    error: str | None = None

    @property
    def as_expected(self) -> bool:
        return self.error is None and self.farewell == (self.question.expect == "farewell")


def battery_from_persona(persona: PersonaConfig) -> list[Question]:
    scope = persona.scope
    if scope is None or not (scope.in_scope or scope.out_of_scope):
        raise BatteryError(
            f"persona {persona.name!r} declares no scope.in_scope / scope.out_of_scope "
            "questions: pass --file battery.yaml"
        )
    return [Question(q, "in_scope", "answer") for q in scope.in_scope] + [
        Question(q, "out_of_scope", "farewell") for q in scope.out_of_scope
    ]


def battery_from_file(path: Path) -> list[Question]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BatteryError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise BatteryError(f"{path}: expected a mapping with in_scope, out_of_scope, tricky")
    unknown = set(data) - {"in_scope", "out_of_scope", "tricky"}
    if unknown:
        raise BatteryError(f"{path}: unknown keys {sorted(unknown)}")
    questions: list[Question] = []
    for kind, expect in (("in_scope", "answer"), ("out_of_scope", "farewell")):
        for item in data.get(kind) or []:
            if not isinstance(item, str) or not item.strip():
                raise BatteryError(f"{path}: {kind} holds questions as strings, got {item!r}")
            questions.append(Question(item, kind, expect))  # type: ignore[arg-type]
    for item in data.get("tricky") or []:
        questions.append(_tricky(path, item))
    if not questions:
        raise BatteryError(f"{path} holds no questions")
    return questions


def _tricky(path: Path, item: Any) -> Question:
    if isinstance(item, str) and item.strip():
        return Question(item, "tricky", "farewell")
    if isinstance(item, dict) and isinstance(item.get("question"), str):
        expect = item.get("expect", "farewell")
        if expect not in ("answer", "farewell"):
            raise BatteryError(f"{path}: tricky 'expect' is answer or farewell, got {expect!r}")
        return Question(item["question"], "tricky", expect)
    raise BatteryError(f"{path}: a tricky entry is a string or {{question, expect}}, got {item!r}")


async def ask_all(
    client: httpx.AsyncClient,
    persona: PersonaConfig,
    questions: list[Question],
    on_outcome: Callable[[Outcome], None] = lambda outcome: None,
) -> list[Outcome]:
    """Ask each question in turn (one at a time: a local engine is the usual target)."""
    farewell = (persona.farewell or "").strip()
    outcomes = []
    for question in questions:
        started = time.perf_counter()
        body = {"model": persona.name, "messages": [{"role": "user", "content": question.text}]}
        try:
            response = await client.post("/v1/chat/completions", json=body)
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            outcome = Outcome(question, False, "", _since(started), f"{type(exc).__name__}")
        else:
            if response.status_code != 200:
                message = (data.get("error") or {}).get("message") if isinstance(data, dict) else ""
                error = f"HTTP {response.status_code}: {message}"
                outcome = Outcome(question, False, "", _since(started), error)
            else:
                text = _content(data)
                said = bool(farewell) and text.strip() == farewell
                outcome = Outcome(question, said, text, _since(started))
        outcomes.append(outcome)
        on_outcome(outcome)
    return outcomes


def _since(started: float) -> float:
    return time.perf_counter() - started


def _content(data: Any) -> str:
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


@asynccontextmanager
async def remote(url: str, key: str | None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    base = url.rstrip("/").removesuffix("/v1")
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=REQUEST_TIMEOUT_S
    ) as client:
        yield client


@asynccontextmanager
async def in_process(app: Any, key: str | None) -> AsyncIterator[httpx.AsyncClient]:
    """The app, started (its lifespan: providers, the engine) and asked over ASGI."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport,
            base_url="http://puente",
            headers=headers,
            timeout=REQUEST_TIMEOUT_S,
        ) as client,
    ):
        yield client


# -- the report ----------------------------------------------------------------------------------


def line(outcome: Outcome) -> str:
    """One question's result; an answer's first words on a second line, to see what was said."""
    said = "error" if outcome.error else "farewell" if outcome.farewell else "answered"
    mark = "ok" if outcome.as_expected else "NO"
    kind, seconds = outcome.question.kind, outcome.seconds
    text = f"{mark:<3}{said:<9}{kind:<13}{seconds:6.1f}s  {outcome.question.text}"
    shown = outcome.error or ("" if outcome.farewell else outcome.text.strip())
    shown = " ".join(shown.split())
    if shown:
        text += f"\n{'':<5}→ {shown[:90]}{'…' if len(shown) > 90 else ''}"
    return text


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f} %)" if whole else "0/0"


def totals(outcomes: list[Outcome]) -> list[str]:
    def of(kind: str) -> list[Outcome]:
        return [o for o in outcomes if o.question.kind == kind]

    out_of, in_scope, tricky = of("out_of_scope"), of("in_scope"), of("tricky")
    lines = [
        f"out of scope with the farewell: {_share(sum(o.farewell for o in out_of), len(out_of))}",
        "in scope answered:              "
        + _share(sum(not o.farewell and o.error is None for o in in_scope), len(in_scope)),
    ]
    if tricky:
        expected = sum(o.as_expected for o in tricky)
        lines.append(f"tricky as expected:             {_share(expected, len(tricky))}")
    errors = sum(o.error is not None for o in outcomes)
    if errors:
        lines.append(f"errors:                         {errors}")
    return lines
