"""Embeddings throughput of the local model (all-MiniLM-L6-v2 on vLLM's pooling runner), straight
to the engine and through Puente, side by side in one run.

Starts a real ``python -m server serve`` whose config launches the embedded embedding model
(``launch: {model: default-embedding}``) on a known port, so the same engine is reached both
ways. For each scenario (batch size × ``encoding_format``) it alternates direct and through-Puente
runs of ``--duration`` seconds with ``--concurrency`` requests in flight, ``--repeat`` times, and
prints the medians of inputs/s and of the mean latency per request.

    PUENTE_ENGINE_PYTHON=.venv-engine/bin/python .venv/bin/python bench/bench_embeddings.py
    ... --repeat 3 --duration 5 --concurrency 4 --json /tmp/embed.json
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import Child, free_port, workdir

MODEL = "all-minilm-l6-v2"
SENTENCES = [
    f"Passage {i}: the Inca road system linked Cusco with the far ends of Tahuantinsuyo, "
    "and chasquis ran it in relays carrying quipus."
    for i in range(32)
]


async def run(
    url: str, batch: int, encoding: str, concurrency: int, duration: float
) -> dict[str, float]:
    """Requests of ``batch`` inputs, ``concurrency`` at a time, for ``duration`` seconds."""
    body = orjson.dumps({"model": MODEL, "input": SENTENCES[:batch], "encoding_format": encoding})
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            started = time.perf_counter()
            async with session.post(url + "/embeddings", data=body, headers=headers) as response:
                data = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url}: HTTP {response.status}: {data[:300]!r}")
            latencies.append(time.perf_counter() - started)

        # Warm-up, not counted: connections open, the engine's first batch done.
        await asyncio.gather(*(one() for _ in range(concurrency)))
        latencies.clear()
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await one()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "inputs_per_s": len(latencies) * batch / elapsed,
        "mean_latency_ms": 1000 * statistics.fmean(latencies),
    }


def start(work: Path, engine_port: int) -> tuple[Child, str]:
    port = free_port()
    config = work / "puente.yaml"
    launch = {"model": "default-embedding", "port": engine_port}
    models = [{"name": MODEL, "provider": "vllm", "launch": launch}]
    config.write_text(yaml.safe_dump({"models": models, "auth": "none"}))
    argv = [sys.executable, "-m", "server", "serve", "--config", str(config)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    child = Child("puente", argv, work, None)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"puente exited:\n{child.log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return child, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    child.stop()
    raise RuntimeError("the embedding engine was not ready within 600 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", help="also write every run here")
    args = parser.parse_args()
    work = workdir()
    engine_port = free_port()
    puente, through = start(work, engine_port)
    direct = f"http://127.0.0.1:{engine_port}/v1"
    results: dict[str, Any] = {}
    try:
        for batch in (1, 32):
            for encoding in ("float", "base64"):
                name = f"batch={batch} {encoding}"
                runs: dict[str, list[dict[str, float]]] = {"direct": [], "puente": []}
                for _ in range(args.repeat):
                    for label, url in (("direct", direct), ("puente", through)):
                        runs[label].append(
                            asyncio.run(run(url, batch, encoding, args.concurrency, args.duration))
                        )
                results[name] = runs
                medians = {
                    label: (
                        statistics.median(r["inputs_per_s"] for r in rs),
                        statistics.median(r["mean_latency_ms"] for r in rs),
                    )
                    for label, rs in runs.items()
                }
                (d_rate, d_ms), (p_rate, p_ms) = medians["direct"], medians["puente"]
                print(
                    f"{name:<20} direct {d_rate:8.1f} inputs/s {d_ms:7.1f} ms | "
                    f"puente {p_rate:8.1f} inputs/s {p_ms:7.1f} ms | "
                    f"added {p_ms - d_ms:+6.1f} ms ({100 * (p_rate / d_rate - 1):+.1f} % rate)",
                    flush=True,
                )
    finally:
        puente.stop()
    if args.json:
        Path(args.json).write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
