"""An in-memory provider that speaks the provider interface (``server/providers/base.py``).

Injected with ``create_app(settings, providers={"name": FakeProvider(...)})`` so a test drives
the whole pipeline (admission, personas, resilience, shaping, the record) with no upstream at
all. It answers ``reply`` word by word, or fails the way it is told: ``fail`` (a Puente error
before answering, ``fail_times`` times then answers), ``crash`` (an unexpected exception, a bug
in a provider or translator), ``crash_after`` (that many chunks, then the exception); ``health``
is what its health check says.
``verdict`` answers a request that carries a ``json_schema`` ``response_format`` (a persona's
scope check, ``server/personas/scope.py``): a fixed text, or a function of the request (which
may raise, as a broken classifier would); such requests are also kept in ``checks``.
``labels`` answers a request that asks for ``logprobs`` (a scope check decided by a threshold)
as vLLM and OpenAI do: one token, the likeliest of ``labels`` (token → log-probability, or a
function of the request giving them), all of them as that token's ``top_logprobs``; such
requests are kept in ``checks`` too.
Everything it was asked is kept in ``received``; ``closed`` counts closed streams.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from server.errors import PuenteError
from server.pipeline.request import JSON, ChatRequest, StreamChunk
from server.providers.base import Health
from server.resilience.breaker import CircuitBreaker


class FakeProvider:
    kind = "fake"

    def __init__(
        self,
        reply: str = "Hola desde el proveedor falso.",
        *,
        fail: PuenteError | None = None,
        fail_times: int | None = None,
        crash: BaseException | None = None,
        crash_after: int | None = None,
        health: Health | None = None,
        verdict: str | Callable[[ChatRequest], str] | None = None,
        labels: dict[str, float] | Callable[[ChatRequest], dict[str, float]] | None = None,
    ) -> None:
        self.reply = reply
        self.verdict = verdict
        self.labels = labels
        self.checks: list[ChatRequest] = []
        self.health_answer = health or Health("ready")
        self.health_calls = 0
        self.fail = fail
        self.fail_times = fail_times
        self.crash = crash
        self.crash_after = crash_after
        self.received: list[ChatRequest] = []
        self.closed_streams = 0
        self.closed = False

    # -- the provider interface -----------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> JSON:
        self._begin(request)
        if (labels := self._labels(request)) is not None:
            return self._label_completion(request, labels)
        words = self._words(self._verdict(request))
        return self._completion(request, "".join(words), "stop", None, self._usage(request, words))

    def _completion(
        self,
        request: ChatRequest,
        content: str,
        finish_reason: str,
        logprobs: JSON | None,
        usage: dict[str, int],
    ) -> JSON:
        return {
            "id": f"chatcmpl-fake-{len(self.received)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.upstream_model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                    "logprobs": logprobs,
                }
            ],
            "usage": usage,
        }

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        self._begin(request)
        try:
            yield self._chunks(request)
        finally:
            self.closed_streams += 1

    async def health(self) -> Health:
        self.health_calls += 1
        return self.health_answer

    def engine_state(self) -> str | None:
        return None

    def endpoint_breakers(self) -> list[tuple[str, CircuitBreaker]]:
        return []

    async def start(self) -> None:
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True

    # -- the script -----------------------------------------------------------------------------

    def _begin(self, request: ChatRequest) -> None:
        self.received.append(request)
        if self.crash is not None and self.crash_after is None:
            raise self.crash
        if self.fail is not None and (self.fail_times is None or self.fail_times > 0):
            if self.fail_times is not None:
                self.fail_times -= 1
            raise self.fail

    def _verdict(self, request: ChatRequest) -> str | None:
        fmt = request.body.get("response_format")
        if self.verdict is None or not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
            return None
        self.checks.append(request)
        return self.verdict if isinstance(self.verdict, str) else self.verdict(request)

    def _labels(self, request: ChatRequest) -> dict[str, float] | None:
        if self.labels is None or request.body.get("logprobs") is not True:
            return None
        self.checks.append(request)
        return self.labels if isinstance(self.labels, dict) else self.labels(request)

    def _label_completion(self, request: ChatRequest, labels: dict[str, float]) -> JSON:
        ranked = sorted(labels.items(), key=lambda item: -item[1])
        top = [{"token": token, "logprob": lp, "bytes": None} for token, lp in ranked]
        token = ranked[0][0] if ranked else ""
        logprobs = {"content": [{**top[0], "top_logprobs": top}]} if top else None
        prompt = self._usage(request, [])["prompt_tokens"]
        usage = {"prompt_tokens": prompt, "completion_tokens": 1, "total_tokens": prompt + 1}
        return self._completion(request, token, "length", logprobs, usage)

    def _words(self, text: str | None = None) -> list[str]:
        parts = (self.reply if text is None else text).split(" ")
        return [p if i == 0 else " " + p for i, p in enumerate(parts)]

    def _usage(self, request: ChatRequest, words: list[str]) -> dict[str, int]:
        prompt = sum(len(str(m.get("content") or "").split()) for m in request.messages)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": len(words),
            "total_tokens": prompt + len(words),
        }

    async def _chunks(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        base: dict[str, Any] = {
            "id": "chatcmpl-fake-stream",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.upstream_model,
        }
        words = self._words()
        for index, word in enumerate(words):
            if self.crash is not None and self.crash_after == index:
                raise self.crash
            delta = {"role": "assistant", "content": word} if index == 0 else {"content": word}
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            yield StreamChunk(data={**base, "choices": [choice]})
        done = {"index": 0, "delta": {}, "finish_reason": "stop"}
        yield StreamChunk(data={**base, "choices": [done]})
        yield StreamChunk(data={**base, "choices": [], "usage": self._usage(request, words)})
