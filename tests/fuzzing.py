"""A bounded fuzzer for every route of the app: what an adversarial client can send.

Routes come from the app's own OpenAPI document, so a new front door is fuzzed without being
listed here. Each request is one of: random JSON, a known-good body of the route with
one field replaced by something of the wrong type or size, deeply nested content, or bytes that
are not JSON at all. What counts as a failure is what a client must never see: a 500, or an error
that is not an error envelope (OpenAI's ``{"error": {...}}`` or Anthropic's ``{"type": "error",
...}``). Used by ``tests/test_fuzz.py`` (a small run in the default suite) and
``bench/fuzz_routes.py`` (a long run whose figures are in ``bench/README.md``).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

# Bodies that reach far into each route when they are valid; fuzzing starts from them.
GOOD: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "model": "MODEL",
        "messages": [{"role": "user", "content": "hola"}],
        "max_tokens": 8,
    },
    "/v1/responses": {"model": "MODEL", "input": "hola", "max_output_tokens": 16},
    "/v1/messages": {
        "model": "MODEL",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hola"}],
    },
    "/v1/messages/count_tokens": {"model": "MODEL", "messages": [{"role": "user", "content": "x"}]},
    "/v1/embeddings": {"model": "MODEL", "input": ["hola", "mundo"]},
    "/v1/completions": {"model": "MODEL", "prompt": "Érase una vez", "max_tokens": 8},
    "/admin/keys": {"name": "fuzzed", "models": ["*"], "rpm": 5},
}


def random_json(rng: random.Random, depth: int = 3) -> Any:
    """Any JSON value, small: scalars of every kind (huge ints, odd text), lists and objects."""
    kind = rng.randrange(8 if depth > 0 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 1, 7, 2**31, 2**63, -(2**64), 2**70])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e-300, 3.0])
    if kind in (4, 5):
        alphabet = 'a\u00e9\u00f1\u4e2d\U0001f600\\"<>{}[] \n\t\u0000\u202e'
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
    if kind == 6:
        return [random_json(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {f"k{rng.randrange(9)}": random_json(rng, depth - 1) for _ in range(rng.randrange(4))}


WEIRD: list[Any] = [
    None,
    True,
    -1,
    0,
    2**63,
    -(2**63) - 1,
    1e308,
    "",
    "x" * 5000,
    "\u0000\u202e",
    [],
    {},
    [None],
    {"": None},
    [[[[[]]]]],
]


def nested(depth: int) -> Any:
    value: Any = "deep"
    for i in range(depth):
        value = [value] if i % 2 else {"type": "text", "text": value}
    return value


@dataclass
class Tally:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def record(self, route: str, body: bytes, response: httpx.Response) -> None:
        self.sent += 1
        self.statuses[response.status_code] += 1
        problem = _problem(response)
        if problem and len(self.failures) < 50:
            self.failures.append(f"{route} {response.status_code} {problem}: {body[:200]!r}")


def _problem(response: httpx.Response) -> str | None:
    if response.status_code == 500:
        return "a 500"
    if response.status_code < 400:
        return None
    if not response.content:
        return None if response.status_code in (401, 404, 405, 499) else "an empty error"
    try:
        body = response.json()
    except ValueError:
        return "an error that is not JSON"
    openai_shape = isinstance(body, dict) and isinstance(body.get("error"), dict)
    anthropic_shape = isinstance(body, dict) and body.get("type") == "error"
    if not (openai_shape or anthropic_shape):
        return "an error outside the envelope"
    if "Traceback" in response.text:
        return "a traceback"
    return None


def _dumps(value: Any) -> bytes:
    # The standard library's encoder: it writes integers past 64 bits, which clients can send.
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def mutated(route: str, model: str, rng: random.Random) -> bytes:
    """One fuzzed body for ``route``."""
    good = orjson.loads(orjson.dumps(GOOD.get(route, {})).replace(b"MODEL", model.encode()))
    roll = rng.random()
    if roll < 0.1:
        return rng.choice([b"", b"{", b"[]", b"null", b'{"model": }', bytes(range(256))])
    if roll < 0.2 or not good:
        return _dumps(random_json(rng))
    if roll < 0.3:
        target = good.get("messages") or good.get("input")
        if isinstance(target, list) and target and isinstance(target[0], dict):
            target[0]["content"] = nested(rng.choice([64, 255, 900]))
        return _dumps(good)
    key = rng.choice([*good, "stream", "n", "tools", "tool_choice", "stream_options", "user"])
    good[key] = rng.choice([*WEIRD, random_json(rng)])
    return _dumps(good)


def routes(client: httpx.Client) -> list[tuple[str, str]]:
    """(method, path) of every route the app documents, path parameters filled in later."""
    spec = client.get("/openapi.json").json()
    found = []
    for path, item in spec["paths"].items():
        for method in item:
            if method.upper() in ("GET", "POST", "DELETE"):
                found.append((method.upper(), path))
    return sorted(found)


def fuzz(base_url: str, model: str, count: int, headers: dict[str, str], seed: int = 0) -> Tally:
    rng = random.Random(seed)
    tally = Tally()
    with httpx.Client(base_url=base_url, timeout=30, headers=headers) as client:
        table = routes(client)
        for i in range(count):
            method, path = table[i % len(table)]
            url = path
            for name in ("{model_id}", "{name}", "{response_id}", "{id}", "{model_id:path}"):
                url = url.replace(name, rng.choice(["x", model, "../..", "%2F", "a" * 300, "é"]))
            body = mutated(path, model, rng) if method == "POST" else b""
            extra = {"content-type": "application/json"} if method == "POST" else {}
            try:
                response = client.request(method, url, content=body, headers=extra)
            except httpx.HTTPError as exc:
                tally.failures.append(f"{method} {url}: {type(exc).__name__} (connection broken)")
                continue
            tally.record(f"{method} {path}", body, response)
    return tally
