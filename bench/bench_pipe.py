"""The pipeline and access control alone: CPU per request through the whole app, in one process.

The real app (``create_app``), keys and limits on as in bench/bench_hotpath.py (SQLite, the key
``bench`` with requests/min, tokens/min and budgets set too high to refuse), driven over ASGI with
no socket and an upstream that answers at once from memory. What is left is Puente's own work
per request (routing, middleware, authentication, admission, the pipeline, metrics, the usage
row), without the noise of the network and of a load generator sharing the core, so a change in
``server/pipeline`` or ``server/access`` shows up in a few seconds of one core.

    .venv/bin/python bench/bench_pipe.py [--requests 20000] [--concurrency 32] [--repeat 5]
    .venv/bin/python bench/bench_pipe.py --profile out.prof   # cProfile of one run
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_auth import MODEL, SECRET, bench_key

from server.access.storage import SQLiteStore
from server.app import create_app
from server.config import Settings, load_config
from server.pipeline.request import JSON, ChatRequest
from server.providers.base import Health

BODY = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})


class InstantProvider:
    """Answers every request at once with the completion bench/mock_upstream.py sends."""

    kind = "openai_compatible"

    async def complete(self, request: ChatRequest) -> JSON:
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1,
            "model": request.upstream_model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
        }

    def stream(self, request: ChatRequest) -> Any:
        raise NotImplementedError

    async def health(self) -> Health:
        return Health("ready")

    def engine_state(self) -> str | None:
        return None

    def endpoint_breakers(self) -> list[Any]:
        return []

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {SECRET}".encode()),
            (b"content-length", str(len(BODY)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


async def _one(app: Any) -> int:
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(), receive, send)
    return status


async def _worker(app: Any, count: int) -> None:
    for _ in range(count):
        status = await _one(app)
        if status != 200:
            raise RuntimeError(f"HTTP {status}")


async def _run(app: Any, requests: int, concurrency: int) -> float:
    per = requests // concurrency
    started = time.process_time()
    await asyncio.gather(*(_worker(app, per) for _ in range(concurrency)))
    return (time.process_time() - started) / (per * concurrency) * 1e6


async def _store_key(db: Path) -> None:
    store = SQLiteStore(db)
    await store.migrate()
    await store.create_key(bench_key())
    await store.aclose()


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="puente-bench-pipe-"))
    await _store_key(folder / "puente.db")
    path = folder / "puente.yaml"
    config = {"models": [{"name": MODEL, "provider": "openai_compatible", "base_url": "http://x"}]}
    path.write_text(yaml.safe_dump(config))
    settings = Settings(config=load_config(path), config_path=path)
    app = create_app(settings, {MODEL: InstantProvider()})  # type: ignore[dict-item]
    async with app.router.lifespan_context(app):
        await _run(app, 2000, args.concurrency)  # warm-up: caches, the usage writer
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await _run(app, args.requests, args.concurrency)
            profiler.disable()
            profiler.dump_stats(args.profile)
            return
        if args.gc_threshold:
            gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
        collections = [0, 0.0]

        def count(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                collections[1] -= time.perf_counter()
            else:
                collections[0] += 1
                collections[1] += time.perf_counter()

        gc.callbacks.append(count)
        figures = []
        for _ in range(args.repeat):
            figures.append(await _run(app, args.requests, args.concurrency))
        gc.callbacks.remove(count)
        done = args.requests * args.repeat
        print(
            f"cpu us/request: median {statistics.median(figures):.1f}  "
            f"min {min(figures):.1f}  all {' '.join(f'{f:.1f}' for f in figures)}  "
            f"gc {collections[0] / done:.3f}/request {collections[1] / done * 1e6:.1f} us/request  "
            f"load {os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", default="")
    parser.add_argument("--gc-threshold", type=int, default=0, help="gc's first threshold")
    asyncio.run(main(parser.parse_args()))
