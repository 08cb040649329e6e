"""Any upstream that speaks OpenAI's Chat Completions over HTTP: vLLM, OpenAI-compatible vendors,
Ollama, llama.cpp's server; and, on the same request code (``_post`` with a path), its
``/embeddings`` and legacy ``/completions``.

Requests go out as the client sent them (model name swapped); answers come back parsed once.
Stream chunks are relayed as the upstream's bytes, parsed only where someone needs to read them.
Requests go out on Puente's own HTTP/1.1 client (``http1``): aiohttp's client cost about a quarter
of Puente's CPU per request (``bench/CLIENT.md``). The health probes and the engine's
``/tokenize`` stay on the aiohttp session, off the hot path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

from server.config import ModelConfig
from server.errors import (
    PuenteError,
    UpstreamConnectionError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from server.observability.request_context import request_id
from server.pipeline.request import JSON, ChatRequest, StreamChunk, UpstreamRequest
from server.providers import http1
from server.providers.balancer import Balancer, Endpoint
from server.providers.base import ChunkStream, Health, request_payload
from server.providers.bounded import Readable, TooLarge, line_batches, read_body, read_prefix
from server.providers.embeddings import embed_in_batches
from server.providers.redact import Redactor
from server.providers.tasks import check_task
from server.providers.upstream_errors import (
    auth_failed,
    brief,
    check_usage,
    retry_after,
    retry_after_header,
)
from server.resilience.breaker import CircuitBreaker

log = logging.getLogger("puente.upstream")

_DONE = b"[DONE]"
# How often endpoints that failed are probed to be brought back into rotation.
PROBE_INTERVAL = 5.0
# Seconds an upstream connection is kept idle: less than the 5 s after which uvicorn-based
# upstreams (vLLM) drop theirs, since reusing a connection the upstream is closing fails the
# request.
IDLE_TIMEOUT = 4.0


def upstream_pool() -> http1.Pool:
    """The pool the OpenAI-compatible providers share (``Clients.upstream``)."""
    return http1.Pool(idle_timeout=IDLE_TIMEOUT)


def error_from_status(
    status: int, body: bytes, headers: Mapping[str, str], name: str, redact: Redactor
) -> PuenteError:
    """An upstream's error response as Puente's error, keeping OpenAI-shaped details.

    The upstream's words pass through ``redact`` first: some quote the request they refused, its
    ``Authorization`` header included. A refusal of Puente's own credentials is not the client's
    to fix, so it never reads as the client's ``invalid_api_key``.
    """
    if status in (401, 403):
        return auth_failed("The upstream", name, status)
    message, error_type, param, code = f"Upstream returned HTTP {status}.", None, None, None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        # OpenAI: {"error": {...}}; older vLLM: {"object": "error", "message": ..., "type": ...}.
        inner = parsed.get("error")
        err: dict[str, Any] = inner if isinstance(inner, dict) else parsed
        message = _str(err.get("message")) or message
        error_type, param, code = (
            _str(err.get("type")),
            _str(err.get("param")),
            _str(err.get("code")),
        )
    if error_type and error_type[:1].isupper():
        # vLLM names the exception class ("BadRequestError"); clients expect OpenAI's types,
        # which UpstreamStatusError derives from the status when none is given.
        error_type = None
    return UpstreamStatusError(
        status,
        brief(redact(message)),
        error_type=error_type,
        param=param and redact(param),
        code=code and redact(code),
        headers=retry_after_header(retry_after(headers)),
    )


def error_from_event(data: Any, name: str, redact: Redactor) -> PuenteError:
    """An error the upstream sent inside a stream (``data: {"error": {...}}``)."""
    inner = data.get("error") if isinstance(data, dict) else None
    err: dict[str, Any] = (
        inner if isinstance(inner, dict) else data if isinstance(data, dict) else {}
    )
    code = err.get("code")
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    if status in (401, 403):
        return auth_failed("The upstream", name, status)
    message = _str(err.get("message")) or "The upstream failed mid-stream."
    return UpstreamStatusError(status, brief(redact(message)), error_type=_str(err.get("type")))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class OpenAICompatibleProvider:
    """A configured model reached over OpenAI's HTTP API at one or more endpoints."""

    kind = "openai_compatible"
    probe_path = "/models"
    """Path under each endpoint's base URL that answers 200 when it can serve."""

    def __init__(
        self,
        config: ModelConfig,
        session: aiohttp.ClientSession,
        pool: http1.Pool | None = None,
    ) -> None:
        """``session`` serves the health probes, ``pool`` the requests (one of its own, closed
        with the provider, when none is shared)."""
        self.config = config
        self._session = session
        self._owns_pool = pool is None
        self._pool = pool if pool is not None else upstream_pool()
        breaker = config.breaker
        self.balancer = Balancer(
            config.upstream_urls, lambda: CircuitBreaker(breaker.failures, breaker.cooldown)
        )
        t = config.timeouts
        self.limits = config.limits
        self._timeout = aiohttp.ClientTimeout(
            total=config.total_timeout, connect=t.connect, sock_read=t.read
        )
        self._connect_timeout, self._read_timeout = t.connect, t.read
        self._total_timeout = config.total_timeout
        self.redact = Redactor.for_model(config)
        self._headers = {"Content-Type": "application/json", **config.headers}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"
        self._prober: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def engine_state(self) -> str | None:
        return None

    def endpoint_breakers(self) -> list[tuple[str, CircuitBreaker]]:
        return [(endpoint.url, endpoint.breaker) for endpoint in self.balancer.endpoints]

    async def start(self) -> None:
        self._prober = asyncio.create_task(self._probe_loop(), name=f"probe {self.config.name}")

    async def aclose(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
            self._prober = None
        if self._owns_pool:
            await self._pool.aclose()

    # -- requests ----------------------------------------------------------------------------

    def _request_headers(self) -> dict[str, str]:
        rid = request_id.get()
        return {**self._headers, "X-Request-Id": rid} if rid else self._headers

    async def _open(self, body: JSON, path: str) -> tuple[http1.Response, Endpoint]:
        """POST ``body`` to ``path`` under the least-busy endpoint; the response once its
        headers arrived, with a status of 2xx, and the endpoint it came from, counted in flight
        until ``_settle``.

        An endpoint that refuses the connection is marked down and the next one tried: nothing
        reached it, so nothing is sent twice. Redirects are never followed (http1 does not):
        one would re-send the prompt and the credentials to wherever the upstream points.
        """
        payload = request_payload(body)
        tried: set[str] = set()
        while True:
            endpoint = self.balancer.pick(tried)
            if endpoint is None:
                raise UpstreamConnectionError(
                    f"No endpoint of model '{self.config.name}' accepted the connection."
                )
            tried.add(endpoint.url)
            endpoint.in_flight += 1
            try:
                response = await self._pool.request(
                    "POST",
                    endpoint.url + path,
                    self._request_headers(),
                    payload,
                    connect_timeout=self._connect_timeout,
                    read_timeout=self._read_timeout,
                    total_timeout=self._total_timeout,
                )
            except http1.ConnectError as exc:
                self.balancer.done(endpoint)
                endpoint.mark_down(f"connect: {exc}")
                log.warning("endpoint %s refused the connection: %s", endpoint.url, exc)
                continue
            except BaseException as exc:
                self.balancer.done(endpoint)
                mapped = self._failed_request(endpoint, exc)
                if mapped is exc:
                    raise
                raise mapped from None
            try:
                if response.status >= 400:
                    raw = await self._read(response, error=True)
                    raise error_from_status(
                        response.status, raw, response.headers, self.config.name, self.redact
                    )
                if response.status >= 300:
                    raise UpstreamProtocolError(
                        f"Model '{self.config.name}' answered with a redirect (HTTP "
                        f"{response.status}), which Puente does not follow."
                    )
            except BaseException as exc:
                self._settle(endpoint, response, exc)
                raise
            endpoint.breaker.record_success()
            return response, endpoint

    def _failed_request(self, endpoint: Endpoint, exc: BaseException) -> BaseException:
        """What a failed send (after the connection, before the head) raises to the caller."""
        if isinstance(exc, TimeoutError):
            endpoint.breaker.record_failure("timeout")
            return UpstreamTimeout(f"Model '{self.config.name}' did not answer within its timeout.")
        if isinstance(exc, http1.ProtocolError):
            endpoint.breaker.record_failure("protocol")
            return _protocol_error(self.config.name, exc)
        if isinstance(exc, http1.HTTPError):
            endpoint.breaker.record_failure("connection")
            return _connection_error(self.config.name, exc, self.redact)
        return exc  # a cancellation (the client left) or a bug: as it is

    def _settle(
        self, endpoint: Endpoint, response: http1.Response, error: BaseException | None
    ) -> None:
        """The request on ``endpoint`` is over. An error status or an answer cut off counts
        against its breaker; a client error proves it is answering. A finished connection goes
        back to the pool; one with unread body (a client that left mid-answer) is closed, which
        is what tells the upstream to stop."""
        try:
            if isinstance(error, PuenteError):
                if error.retryable:
                    endpoint.breaker.record_failure(error.kind)
                elif isinstance(error, UpstreamStatusError):
                    endpoint.breaker.record_success()
        finally:
            response.release()
            self.balancer.done(endpoint)

    @asynccontextmanager
    async def _post(self, body: JSON, path: str) -> AsyncIterator[http1.Response]:
        """``_open`` as a context: the response is closed on exit whatever happened, so a
        client that goes away closes the upstream connection with it."""
        response, endpoint = await self._open(body, path)
        error: BaseException | None = None
        try:
            yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._settle(endpoint, response, error)

    async def _whole(self, body: JSON, path: str, field: str, what: str) -> JSON:
        """POST ``body`` and return the JSON object answered, which must have ``field``. (Not
        through ``_post``: a context manager's generator is a visible share of a request.)"""
        response, endpoint = await self._open(body, path)
        error: BaseException | None = None
        try:
            raw = await self._read(response)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._settle(endpoint, response, error)
        raw = self.redact.raw(raw) if self.redact else raw
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                f"Model '{self.config.name}' answered with a body that is not JSON."
            ) from None
        if not isinstance(data, dict) or field not in data:
            raise UpstreamProtocolError(
                f"Model '{self.config.name}' answered with something that is not {what}."
            )
        check_usage(data.get("usage"), self.config.name)
        return data

    async def complete(self, request: ChatRequest) -> JSON:
        check_task(self.config, "chat")
        return await self._whole(
            request.upstream_body(), "/chat/completions", "choices", "a chat completion"
        )

    def stream(self, request: ChatRequest) -> ChunkStream:
        check_task(self.config, "chat")
        return self._stream(request, "/chat/completions")

    # -- other abilities: embeddings and legacy completions (server/providers/base.py) ---------

    async def embed(self, request: UpstreamRequest) -> JSON:
        check_task(self.config, "embeddings")
        body = request.upstream_body()

        async def one(part: JSON) -> JSON:
            return await self._whole(part, "/embeddings", "data", "a list of embeddings")

        return await embed_in_batches(body, self.config.embedding_batch, one)

    async def complete_text(self, request: UpstreamRequest) -> JSON:
        check_task(self.config, "completions")
        return await self._whole(
            request.upstream_body(), "/completions", "choices", "a text completion"
        )

    def stream_text(self, request: UpstreamRequest) -> ChunkStream:
        check_task(self.config, "completions")
        return self._stream(request, "/completions")

    @asynccontextmanager
    async def _stream(
        self, request: UpstreamRequest, path: str
    ) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        body = request.upstream_body()
        if not request.include_usage:
            # Ask for usage anyway, to count tokens; the gateway drops that chunk for the client.
            body = {
                **body,
                "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
            }
        async with self._post(body, path) as response:
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                raise UpstreamProtocolError(
                    f"Model '{self.config.name}' did not answer with an event stream."
                )
            chunks = self._chunks(response)
            try:
                # Pulled before the gateway answers 200, so an error the upstream sends as its
                # first event (a 429 from a proxy) keeps its real HTTP status.
                try:
                    first: StreamChunk | None = await anext(chunks)
                except StopAsyncIteration:
                    first = None
                yield _After(first, chunks)
            finally:
                await chunks.aclose()

    async def _chunks(self, response: http1.Response) -> AsyncGenerator[StreamChunk, None]:
        name, limit, redact = self.config.name, self.limits.max_line_bytes, self.redact
        event = b""
        try:
            # The lines of one network read together: one step per read, not per line.
            async for batch in line_batches(response, limit):
                for line in batch:
                    if line.startswith(b"data:"):
                        data = line[5:].strip()
                        if data == _DONE:
                            return
                        # Any credential the upstream echoed is masked before anyone reads it.
                        data = redact.raw(data) if redact else data
                        parsed = _loads_event(data, name)
                        if event == b"error" or (isinstance(parsed, dict) and "error" in parsed):
                            raise error_from_event(parsed, name, redact)
                        if not isinstance(parsed, dict):
                            raise UpstreamProtocolError(
                                f"Model '{name}' sent an event that is not an object."
                            )
                        usage = parsed.get("usage")
                        if usage is not None:
                            check_usage(usage, name)
                        # Parsed once to prove it is JSON (and UTF-8); relayed as its bytes
                        # unless the gateway changes it.
                        yield StreamChunk(data, parsed)
                        event = b""
                    elif line.startswith(b"event:"):
                        event = line[6:].strip()
                    # Blank lines end an event; comments (":") and other fields are ignored.
        except TooLarge:
            raise UpstreamProtocolError(
                f"Model '{name}' sent a stream line longer than the limit of {limit} bytes."
            ) from None
        except TimeoutError:
            raise UpstreamTimeout(f"Model '{name}' stopped sending within its timeout.") from None
        except http1.ProtocolError as exc:
            raise _protocol_error(name, exc) from None
        except http1.HTTPError as exc:
            raise _connection_error(name, exc, self.redact) from None
        raise UpstreamProtocolError(f"Model '{name}' ended its stream before [DONE].")

    async def _read(self, response: Readable, *, error: bool = False) -> bytes:
        """The body, bounded: an error body is cut at its limit (only its message is wanted), an
        answer over its limit is refused. ``response`` is http1's, or aiohttp's for the engine's
        ``/tokenize``."""
        name = self.config.name
        try:
            if error:
                return await read_prefix(response, self.limits.max_error_bytes)
            return await read_body(response, self.limits.max_body_bytes)
        except TooLarge as exc:
            raise UpstreamProtocolError(
                f"Model '{name}' answered with more than the limit of {exc.limit} bytes."
            ) from None
        except TimeoutError:  # http1.Timeout and aiohttp's timeouts are TimeoutErrors
            raise UpstreamTimeout(f"Model '{name}' did not finish within its timeout.") from None
        except http1.ProtocolError as exc:
            raise _protocol_error(name, exc) from None
        except (http1.HTTPError, aiohttp.ClientError) as exc:
            raise _connection_error(name, exc, self.redact) from None

    # -- health ------------------------------------------------------------------------------

    def _probe_url(self, endpoint: Endpoint) -> str:
        return endpoint.url + self.probe_path

    async def _probe(self, endpoint: Endpoint, timeout: float) -> None:
        try:
            async with self._session.get(
                self._probe_url(endpoint),
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,  # the credentials go nowhere but the endpoint
            ) as response:
                # Only the status matters; the body is not read (the connection is closed).
                if response.status == 200:
                    endpoint.mark_up()
                else:
                    endpoint.mark_down(f"health check answered HTTP {response.status}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            endpoint.mark_down(f"health check failed: {type(exc).__name__}")

    async def health(self, timeout: float = 3.0) -> Health:
        endpoints = self.balancer.endpoints
        await asyncio.gather(*(self._probe(e, timeout) for e in endpoints))
        report = {e.url: e.describe() for e in endpoints}
        if any(e.healthy for e in endpoints):
            return Health("ready", endpoints=report)
        return Health("down", detail="no endpoint is reachable", endpoints=report)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            down = [e for e in self.balancer.endpoints if not e.healthy]
            if down:
                await asyncio.gather(*(self._probe(e, PROBE_INTERVAL) for e in down))


class _After:
    """``first``, then the rest of ``rest`` (nothing when ``first`` is None: ``rest`` ended).

    An iterator rather than an async generator: after the first chunk it hands out ``rest``'s
    own ``__anext__``, so the chunks of a stream pass through no extra frame."""

    __slots__ = ("_first", "_rest")

    def __init__(self, first: StreamChunk | None, rest: AsyncIterator[StreamChunk]) -> None:
        self._first = first
        self._rest = rest

    def __aiter__(self) -> _After:
        return self

    def __anext__(self) -> Awaitable[StreamChunk]:
        first = self._first
        if first is not None:
            self._first = None
            return _now(first)
        return self._rest.__anext__()  # an ended generator's raises StopAsyncIteration


async def _now(chunk: StreamChunk) -> StreamChunk:
    return chunk


def _loads_event(data: bytes, name: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # also for bytes that are not UTF-8
        raise UpstreamProtocolError(f"Model '{name}' sent an event that is not JSON.") from None


def _connection_error(
    name: str, exc: http1.HTTPError | aiohttp.ClientError, redact: Redactor
) -> UpstreamConnectionError:
    log.warning("upstream of %s failed: %s: %s", name, type(exc).__name__, redact(str(exc)))
    if isinstance(
        exc, http1.Disconnected | aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError
    ):
        return UpstreamConnectionError(f"The connection to model '{name}' was closed mid-answer.")
    return UpstreamConnectionError(f"Model '{name}' could not be reached.")


def _protocol_error(name: str, exc: http1.ProtocolError) -> UpstreamProtocolError:
    """An answer that is not HTTP/1.1 (a garbled status line or header, headers over the limit,
    a compression Puente did not ask for): the client's 502, with what was wrong. The message
    is the client's own words about the framing, never the upstream's bytes."""
    log.warning("upstream of %s answered with broken HTTP: %s", name, exc)
    return UpstreamProtocolError(f"Model '{name}' answered with broken HTTP: {exc}.")
