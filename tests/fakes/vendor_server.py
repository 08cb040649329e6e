"""The part the fake cloud vendors share: an aiohttp server on 127.0.0.1 in its own thread, a
record of what it received, per-model behaviour set by tests, and a small image host.

Tests program a fake per upstream model name (``fake.program("fail-429", status=429)``) and reach
that model through a wildcard entry (``claude/fail-429``), so a retried request meets the same
behaviour. Everything received is kept in ``received`` (bodies) and ``headers`` (lower-cased).
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.threaded import ThreadedServer

# A 1×1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class VendorState:
    received: list[Received] = field(default_factory=list)
    programs: dict[str, dict[str, Any]] = field(default_factory=dict)
    closed: list[float] = field(default_factory=list)
    image_requests: list[str] = field(default_factory=list)


class VendorServer(ThreadedServer):
    """Subclasses add their routes in ``vendor_routes`` and answer from ``self.state``."""

    name = "vendor"

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.state = VendorState()

    # -- what tests use ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def image_url(self, name: str = "pixel.png") -> str:
        return f"{self.url}/images/{name}"

    def program(self, model: str, **behaviour: Any) -> None:
        self.state.programs[model] = behaviour

    def reset(self) -> None:
        self.state = VendorState()

    @property
    def last(self) -> Received:
        assert self.state.received, f"the fake {self.name} received nothing"
        return self.state.received[-1]

    def behaviour(self, model: str) -> dict[str, Any]:
        return self.state.programs.get(model, {})

    # -- lifecycle -----------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        self.vendor_routes(app)
        app.router.add_get("/images/{name}", self._image)

    def vendor_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # -- helpers for subclasses ----------------------------------------------------------------

    async def record(self, request: web.Request, body: dict[str, Any]) -> Received:
        received = Received(
            request.path,
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            body,
        )
        self.state.received.append(received)
        return received

    async def idle(self, request: web.Request, seconds: float) -> bool:
        """Wait, watching the connection; True (and recorded) if the client closed it."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                self.state.closed.append(time.monotonic())
                return True
            await asyncio.sleep(0.01)
        return False

    async def _image(self, request: web.Request) -> web.StreamResponse:
        """``pixel.png``; ``big.png`` (over a small cap); ``slow.png`` (2 s); ``page.html``;
        ``redirect?to=URL``."""
        name = request.match_info["name"]
        self.state.image_requests.append(name)
        if name == "redirect":
            raise web.HTTPFound(request.query["to"])
        if name == "page.html":
            return web.Response(text="<html></html>", content_type="text/html")
        if name == "slow.png":
            await asyncio.sleep(2)
            return web.Response(body=PNG, content_type="image/png")
        if name == "big.png":
            return web.Response(body=PNG + b"\0" * 200_000, content_type="image/png")
        if name == "pixel.png":
            return web.Response(body=PNG, content_type="image/png")
        raise web.HTTPNotFound()


def words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


def sample_for(schema: dict[str, Any]) -> Any:
    """A value that satisfies a simple JSON Schema, as a model in structured-output mode would."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        props = schema.get("properties") or {}
        return {key: sample_for(sub) for key, sub in props.items()}
    if kind == "array":
        return [sample_for(schema.get("items") or {"type": "string"})]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    return "Lima"
