"""Choose a persona's ``scope.threshold`` from its own examples, by leave-one-out.

The protocol of bench/PERSONAS.md, as a command: each of the scope's ``in_scope`` /
``out_of_scope`` examples is sent as the check's own request (``check_request`` in
server/personas/scope.py), with that example left out of the turns, straight to the persona's
model on an OpenAI-compatible engine; the score is ``ln(P(yes) / P(no))`` (``label_score``).
The threshold printed is the midpoint of the widest gap among the thresholds with the fewest
errors. Only the examples are used: never put a battery question (bench/personas/) among them,
or the battery stops being a test.

    .venv/bin/python bench/scope_threshold.py historia-peru --url http://127.0.0.1:18801/v1 \\
        --model qwen                       # the engine's served model name

Each example is one check (~1 s to ~25 s on 2 busy cores: leaving an example out changes the
prefix the engine has cached).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.config import load_config
from server.personas.config import PersonaConfig
from server.personas.scope import check_request, label_score
from server.pipeline.request import ChatRequest


def scores(persona: PersonaConfig, url: str, model: str) -> list[tuple[str, bool, float]]:
    scope = persona.scope
    assert scope is not None
    examples = [(q, True) for q in scope.in_scope] + [(q, False) for q in scope.out_of_scope]
    rows = []
    with httpx.Client(timeout=600) as client:
        for question, inside in examples:
            left_out = scope.model_copy(
                update={
                    "in_scope": [q for q in scope.in_scope if q != question],
                    "out_of_scope": [q for q in scope.out_of_scope if q != question],
                    "threshold": scope.threshold if scope.threshold is not None else 0.0,
                }
            )
            ask = ChatRequest.from_body(
                {"model": persona.name, "messages": [{"role": "user", "content": question}]}
            )
            check = check_request(persona.model_copy(update={"scope": left_out}), ask)
            assert check is not None
            response = client.post(f"{url}/chat/completions", json=check.body | {"model": model})
            response.raise_for_status()
            score = label_score(response.json())
            rows.append((question, inside, score))
            print(f"{score:7.3f}  {'in ' if inside else 'out'}  {question}", flush=True)
    return rows


def best_threshold(rows: list[tuple[str, bool, float]]) -> tuple[float, int, float]:
    """(threshold, errors, gap): the midpoint of the widest gap with the fewest errors."""
    values = sorted({score for _, _, score in rows})
    best: tuple[int, float, float] | None = None
    for low, high in itertools.pairwise(values):
        threshold = (low + high) / 2
        errors = sum((score >= threshold) != inside for _, inside, score in rows)
        if best is None or (errors, -(high - low)) < (best[0], -best[2]):
            best = (errors, threshold, high - low)
    if best is None:
        raise SystemExit("need at least two examples with different scores")
    return best[1], best[0], best[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("persona")
    parser.add_argument("--config", default="puente.yaml")
    parser.add_argument("--url", required=True, help="the engine's /v1 base URL")
    parser.add_argument("--model", required=True, help="the model name the engine serves")
    args = parser.parse_args()
    config = load_config(args.config)
    persona = next((p for p in config.personas if p.name == args.persona), None)
    if persona is None or persona.scope is None:
        raise SystemExit(f"no persona {args.persona!r} with a scope in {args.config}")
    rows = scores(persona, args.url.rstrip("/"), args.model)
    threshold, errors, gap = best_threshold(rows)
    print(f"threshold {threshold:.2f}: {errors} errors of {len(rows)} (gap {gap:.2f})")
    for question, inside, score in rows:
        if (score >= threshold) != inside:
            print(f"  wrong: {score:7.3f}  {'in ' if inside else 'out'}  {question}")


if __name__ == "__main__":
    main()
