"""A vendor's HTTP API spoken directly on Puente's own HTTP/1.1 client (``http1``, the cloud
clients' ``vendor_pool``), for the chat paths.

The vendor SDKs cost far more CPU per request than the HTTP underneath (building options and
headers, validating answers into their types and back into dicts, their own SSE decoders:
``bench/README.md``, "Every provider kind"), so each provider's hot path posts JSON and reads the
answer here (on ``http1``: aiohttp's client cost several times its CPU, ``bench/CLIENT.md``).
What the SDKs gave those paths is kept:

- the upstream limits (``bounded``): an answer over ``max_body_bytes`` and an event-stream line
  over ``max_line_bytes`` are refused, an error body is cut at ``max_error_bytes``; ``http1``
  asks for no compression and decompresses piece by piece an answer compressed anyway, so the
  limits bound the decompressed size;
- the model's timeouts (``connect``, and ``read`` per wait for bytes; ``total`` is the
  provider's);
- the errors: a transport failure comes out as the ``httpx2`` error the SDK would have let out
  (``aiohttp_transport.as_httpx2``), an error status as the SDK's own exception, built by the
  SDK from the response (``status_error``), so ``vendor_errors`` stays the one place that maps
  each vendor's errors;
- redirects are never followed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import orjson

from server.config import ModelConfig
from server.providers import http1
from server.providers.aiohttp_transport import TRANSPORT_ERRORS, as_httpx2, httpx2_errors
from server.providers.base import request_payload
from server.providers.bounded import TooLarge, line_batches, read_body, read_prefix
from server.providers.cloud import CloudClients

StatusError = Callable[[httpx2.Response], BaseException]


class VendorHTTP:
    def __init__(
        self,
        cloud: CloudClients,
        config: ModelConfig,
        headers: Mapping[str, str],
        status_error: StatusError,
    ) -> None:
        self._cloud = cloud
        self._config = config
        self._limits = config.limits
        self._headers = {"Content-Type": "application/json", **headers}
        self._status_error = status_error
        t = config.timeouts
        self._connect_timeout, self._read_timeout = t.connect, t.read

    async def _open(self, url: str, body: Any, headers: Mapping[str, str] | None) -> http1.Response:
        """POST ``body`` as JSON; the response once its status is a success (released here
        when it is not). Redirects are never followed (http1 does not)."""
        payload = request_payload(body)
        sent = {**self._headers, **headers} if headers else self._headers
        try:
            response = await self._cloud.vendor_pool.request(
                "POST",
                url,
                sent,
                payload,
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
            )
        except TRANSPORT_ERRORS as exc:
            raise as_httpx2(exc, connecting=True) from exc
        if response.status >= 300:
            try:
                raise await self._refusal(url, response)
            finally:
                response.release()
        return response

    @asynccontextmanager
    async def post(
        self, url: str, body: Any, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[http1.Response]:
        """``_open``, for a stream: the response is released on exit. A finished one returns
        its connection to the pool, one left unread (a client that went away) closes it, which
        stops the vendor."""
        response = await self._open(url, body, headers)
        try:
            yield response
        finally:
            response.release()

    async def whole(self, url: str, body: Any, headers: Mapping[str, str] | None = None) -> Any:
        """POST ``body`` and return the answer parsed (``json``). Awaited rather than entered
        as ``post``: a context manager's generator is a visible share of a request's CPU."""
        response = await self._open(url, body, headers)
        try:
            return await self.json(response)
        finally:
            response.release()

    async def _refusal(self, url: str, response: http1.Response) -> BaseException:
        try:
            body = await read_prefix(response, self._limits.max_error_bytes)
        except TRANSPORT_ERRORS as exc:
            raise as_httpx2(exc, connecting=False) from exc
        answer = httpx2.Response(
            response.status,
            headers=response.raw_headers,
            content=body,
            request=httpx2.Request("POST", url),
        )
        return self._status_error(answer)

    async def json(self, response: http1.Response) -> Any:
        """The whole answer parsed, within ``max_body_bytes``; None when it is not JSON."""
        try:
            raw = await read_body(response, self._limits.max_body_bytes)
        except TooLarge as exc:
            raise httpx2.DecodingError(f"the answer is larger than {exc.limit} bytes") from None
        except TRANSPORT_ERRORS as exc:
            raise as_httpx2(exc, connecting=False) from exc
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None

    async def events(self, response: http1.Response) -> AsyncIterator[list[tuple[str, bytes]]]:
        """Server-sent events as (event name, data), each line within ``max_line_bytes``: the
        events one network read completed, in one list (a relay steps once per read, not once
        per event)."""
        name, data = "", list[bytes]()
        try:
            with httpx2_errors(connecting=False):
                async for batch in line_batches(response, self._limits.max_line_bytes):
                    done: list[tuple[str, bytes]] = []
                    for line in batch:
                        if not line:
                            if data:
                                done.append((name, b"\n".join(data)))
                            name, data = "", list[bytes]()
                        elif line.startswith(b"data:"):
                            value = line[5:]
                            data.append(value[1:] if value[:1] == b" " else value)
                        elif line.startswith(b"event:"):
                            name = line[6:].strip().decode("utf-8", "replace")
                        # Comments (":") and other fields are ignored, as the SSE standard says.
                    if done:
                        yield done
        except TooLarge as exc:
            raise httpx2.DecodingError(f"a stream line is longer than {exc.limit} bytes") from None
        if data:
            yield [(name, b"\n".join(data))]
