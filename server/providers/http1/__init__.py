"""Puente's own HTTP/1.1 client, for the upstream calls on the hot path (OpenAI-compatible chat,
completions and embeddings).

aiohttp's client builds a dozen objects per request (request and response objects, multidicts
of headers, a payload from a registry, timer handles, a response handler) and costs about a
quarter of Puente's CPU per request (``bench/CLIENT.md``). An upstream call needs much less: one
write of the request, httptools (already here, under uvicorn) to parse the answer, and a pool
of kept-alive connections. What it does:

- host names looked up once per 300 s (``resolver``), not once per new connection;
- a keep-alive pool per origin (scheme, host, port), uncapped (per-model limits decide
  concurrency); a connection idle for ``idle_timeout`` seconds is closed. A connection goes
  back to the pool only when its answer arrived whole, the server did not ask to close it
  (``Connection: close``, HTTP/1.0, a body delimited by the close) and it is still open;
  anything else closes it, which is what tells an upstream that a client went away;
- ``https`` through asyncio's TLS, verifying the certificate against the system's roots;
- a connect timeout, a read timeout per wait for bytes, and an optional total deadline;
- bodies by ``Content-Length``, chunked, or until the close; head and body in one write;
- ``Accept-Encoding: identity``: an upstream that compresses anyway is decompressed (gzip,
  deflate) as it is read, in bounded steps, so a reader's byte limits bound the decompressed
  size; any other encoding is refused;
- no redirects followed, no cookies, no proxy.

The parts: ``pool`` (the pool, and how a request is written), ``connection`` (one
connection, fed to httptools), ``response`` (an answer and the reading of its body), ``origin``
(where a URL goes), ``resolver`` (host names to addresses) and ``errors``, whose tree is below
so that a caller maps each to its own in one place::

    HTTPError
    ├── ConnectError       no connection could be made (refused, DNS, TLS): nothing was sent
    ├── Timeout            (also a TimeoutError) waiting for the next bytes, or the total
    │   └── ConnectTimeout     connecting
    ├── Disconnected       the connection closed before the answer was whole
    └── ProtocolError      the answer is not HTTP/1.1 as this client speaks it
"""

from server.providers.http1.errors import (
    ConnectError,
    ConnectTimeout,
    Disconnected,
    HTTPError,
    ProtocolError,
    Timeout,
)
from server.providers.http1.origin import Origin, split_url
from server.providers.http1.pool import MAX_HEAD, Pool
from server.providers.http1.resolver import Resolver
from server.providers.http1.response import Headers, Response

__all__ = [
    "MAX_HEAD",
    "ConnectError",
    "ConnectTimeout",
    "Disconnected",
    "HTTPError",
    "Headers",
    "Origin",
    "Pool",
    "ProtocolError",
    "Resolver",
    "Response",
    "Timeout",
    "split_url",
]
