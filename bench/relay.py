"""A bare aiohttp relay: the reference for what forwarding a chat request costs, nothing else.

``POST /<name>/v1/chat/completions`` goes to the upstream given as ``--upstream name=URL`` with
the client's body and ``Authorization`` as they came, and the answer comes back as it arrives
(whole, or streamed read by read). No parsing, no checks, no logging: any gateway does more.

    python bench/relay.py --port 9200 --upstream fast=http://127.0.0.1:9100/v1
"""

from __future__ import annotations

import argparse
import os

import aiohttp
from aiohttp import web

try:
    import uvloop
except ImportError:  # plain asyncio works too, only slower
    uvloop = None  # type: ignore[assignment]


def make_app(upstreams: dict[str, str]) -> web.Application:
    app = web.Application()

    async def start(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        base = upstreams.get(request.match_info["name"])
        if base is None:
            raise web.HTTPNotFound()
        headers = {"Content-Type": "application/json"}
        if auth := request.headers.get("Authorization"):
            headers["Authorization"] = auth
        body = await request.read()
        session: aiohttp.ClientSession = request.app["session"]
        async with session.post(base + "/chat/completions", data=body, headers=headers) as up:
            kind = up.headers.get("Content-Type", "application/json")
            if not kind.startswith("text/event-stream"):
                return web.Response(
                    status=up.status,
                    body=await up.read(),
                    content_type=None,
                    headers={"Content-Type": kind},
                )
            response = web.StreamResponse(status=up.status, headers={"Content-Type": kind})
            await response.prepare(request)
            async for piece in up.content.iter_any():
                await response.write(piece)
            await response.write_eof()
            return response

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="{}", content_type="application/json")

    app.router.add_post("/{name}/v1/chat/completions", relay)
    app.router.add_get("/health", health)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--upstream", action="append", default=[], help="name=base URL (…/v1)")
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    upstreams = dict(item.split("=", 1) for item in args.upstream)
    loop = uvloop.new_event_loop() if uvloop is not None else None
    web.run_app(
        make_app(upstreams), host=args.host, port=args.port, print=None, access_log=None, loop=loop
    )


if __name__ == "__main__":
    main()
