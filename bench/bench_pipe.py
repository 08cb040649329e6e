"""The pipeline and access control alone: CPU per request through the whole app, in one process.

The real app (``create_app``), keys and limits on as in bench/bench_hotpath.py (SQLite, the key
``bench`` with requests/min, tokens/min and budgets set too high to refuse), driven over ASGI with
no socket and an upstream that answers at once from memory. What is left is Puente's own work
per request (routing, middleware, authentication, admission, the pipeline, metrics, the usage
row), without the noise of the network and of a load generator sharing the core, so a change in
``server/pipeline`` or ``server/access`` shows up in a few seconds of one core.

    .venv/bin/python bench/bench_pipe.py [--requests 20000] [--concurrency 32] [--repeat 5]
    .venv/bin/python bench/bench_pipe.py --ab /work/base3 '' --requests 3000 --repeat 20
    .venv/bin/python bench/bench_pipe.py --profile out.prof   # cProfile of one run
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

# ``--ab`` runs another checkout's server/ with this script: BENCH_TREE names it.
sys.path.insert(0, os.environ.get("BENCH_TREE") or str(Path(__file__).resolve().parent.parent))

from server.access.keys import ApiKey, Limits, hash_secret
from server.access.storage import SQLiteStore
from server.app import create_app
from server.config import Settings, load_config
from server.pipeline.request import JSON, ChatRequest
from server.providers.base import Health

# As bench/bench_auth.py's (which puts this checkout's server/ first on sys.path, so it is not
# imported here: ``--ab`` runs other checkouts with this script).
MODEL = "bench-model"
SECRET = "bench"
HUGE = 10**12


def bench_key() -> ApiKey:
    return ApiKey(
        id="key_bench",
        name="bench",
        key_hash=hash_secret(SECRET),
        hint="bench",
        limits=Limits(rpm=HUGE, tpm=HUGE, budget_day=HUGE, budget_month=HUGE),
        created_at=time.time(),
    )


BODY = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})


class InstantProvider:
    """Answers every request at once (after one turn of the event loop) with the completion
    bench/mock_upstream.py sends."""

    kind = "openai_compatible"

    async def complete(self, request: ChatRequest) -> JSON:
        # One turn of the loop, as an upstream's answer takes: without it a client's requests
        # would run back to back in one step and what each leaves to the loop would pile up.
        await asyncio.sleep(0)
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
        if args.burst:
            # Driven by ``--ab``: one burst of ``args.burst`` requests per line read.
            loop = asyncio.get_running_loop()
            print(f"# {sys.modules['server'].__file__}", file=sys.stderr)
            while await loop.run_in_executor(None, sys.stdin.readline):
                print(f"{await _run(app, args.burst, args.concurrency):.2f}", flush=True)
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


def ab(args: argparse.Namespace, script: str = __file__) -> None:
    """Checkouts side by side: one process each, bursts taken in turn (the first changing each
    round), so that what else the machine does weighs on all of them alike. ``script`` is run
    with ``--burst`` in each (bench/bench_wire.py passes its own)."""
    names = [tree or "this" for tree in args.ab]
    procs = []
    for tree in args.ab:
        # A checkout's own interpreter imports its own server/ (each venv installs its tree).
        python = str(Path(tree) / ".venv" / "bin" / "python") if tree else sys.executable
        env = dict(os.environ, BENCH_TREE=str(Path(tree).resolve())) if tree else None
        argv = [python, script, "--burst", str(args.requests)]
        argv += ["--concurrency", str(args.concurrency)]
        procs.append(
            subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
            )
        )
    figures: list[list[float]] = [[] for _ in procs]
    loads = [os.getloadavg()[0]]
    try:
        for round_ in range(args.repeat):
            order = list(range(len(procs)))
            order = order[round_ % len(order) :] + order[: round_ % len(order)]
            for i in order:
                stdin, stdout = procs[i].stdin, procs[i].stdout
                assert stdin is not None
                assert stdout is not None
                stdin.write("go\n")
                stdin.flush()
                figures[i].append(float(stdout.readline()))
            loads.append(os.getloadavg()[0])
    finally:
        for proc in procs:
            proc.kill()
    for name, values in zip(names, figures, strict=True):
        print(
            f"{name:<24} cpu us/request: median {statistics.median(values):6.1f}  "
            f"min {min(values):6.1f}  ({len(values)} bursts of {args.requests})"
        )
    print(f"load average {min(loads):.2f}-{max(loads):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", default="")
    parser.add_argument("--gc-threshold", type=int, default=0, help="gc's first threshold")
    parser.add_argument("--burst", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--ab",
        nargs="+",
        metavar="TREE",
        help="checkouts to compare, each with its .venv ('' is this one)",
    )
    parsed = parser.parse_args()
    if parsed.ab:
        ab(parsed)
    else:
        asyncio.run(main(parsed))
