"""What API keys, rate limits and usage records add to a request, side by side with auth off.

One run starts the fast mock upstream (bench/mock_upstream.py) and two real Puentes in front of
it, both on SQLite (the default store):

- ``off``: ``auth: none`` — no key is looked up and no limit is checked;
- ``on``:  a key is required and has requests/min, tokens/min and a daily token budget, all set
  high enough never to refuse, so every request pays for the lookup (SQLite, by hash), the
  limiter's check and the token settlement.

The load generator (bench/loadgen.py, its own process; it sends ``Authorization: Bearer bench``,
which is the ``on`` Puente's key) alternates between the two, ``--repeat`` times per scenario,
and the medians over repeats are printed. Both Puentes write a usage row per request; that cost
is measured apart, in this process, on the same SQLite code (listener call + batched insert).

The machine has 2 cores: by default both Puentes are pinned to CPU 0 (only one is under load at
a time) and the mock and the load generator share CPU 1.

    .venv/bin/python bench/bench_auth.py                 # ~2 minutes; results: bench/AUTH.md
    .venv/bin/python bench/bench_auth.py --repeat 5 --json auth.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from procs import Child, free_port, loadgen, start_mock, wait_healthy

from server.access.auth import Access
from server.access.keys import ApiKey, Limits, hash_secret
from server.access.metrics import AccessMetrics
from server.access.ratelimit import MemoryLimiter
from server.access.storage import SQLiteStore
from server.access.usage import UsageRecorder
from server.pipeline.record import RequestRecord

MODEL = "bench-model"
SECRET = "bench"  # what bench/loadgen.py sends as its Bearer token
TARGET_ADDED_P50_MS = 0.5
HUGE = 10**12

SCENARIOS = (
    ("non-streaming c=1", False, 1),
    ("streaming c=1", True, 1),
    ("non-streaming c=32", False, 32),
)


def bench_key() -> ApiKey:
    return ApiKey(
        id="key_bench",
        name="bench",
        key_hash=hash_secret(SECRET),
        hint="bench",
        models=("*",),
        limits=Limits(rpm=HUGE, tpm=HUGE, budget_day=HUGE, budget_month=HUGE),
        created_at=time.time(),
    )


async def _store_key(db: Path) -> None:
    store = SQLiteStore(db)
    await store.migrate()
    await store.create_key(bench_key())
    await store.aclose()


def start_puente(
    where: Path, name: str, upstream: str, auth: str | None, cpu: int | None
) -> tuple[Child, str]:
    folder = where / name
    folder.mkdir()
    config: dict[str, Any] = {
        "models": [{"name": MODEL, "provider": "openai_compatible", "base_url": upstream}]
    }
    if auth:
        config["auth"] = auth
    (folder / "puente.yaml").write_text(yaml.safe_dump(config))
    if auth != "none":
        asyncio.run(_store_key(folder / "puente.db"))
    port = free_port()
    argv = [sys.executable, "-m", "server", "serve", "--config", str(folder / "puente.yaml")]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    env_admin = os.environ.pop("PUENTE_ADMIN_KEY", None)  # would turn keys on for "off"
    try:
        child = Child(name, argv, where, cpu)
    finally:
        if env_admin is not None:
            os.environ["PUENTE_ADMIN_KEY"] = env_admin
    wait_healthy(f"http://127.0.0.1:{port}/health", child.proc, child.log)
    return child, f"http://127.0.0.1:{port}/v1"


def answered(base: str) -> int:
    """Chat requests the Puente at ``base`` has answered so far (``puente_requests_total``)."""
    text = httpx.get(base.removesuffix("/v1") + "/metrics", timeout=5).text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("puente_requests_total{")
        )
    )


def sanity_check(off: str, on: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(off + "/chat/completions", json=body).status_code == 200
    assert httpx.post(on + "/chat/completions", json=body).status_code == 401  # a key is needed
    r = httpx.post(
        on + "/chat/completions", json=body, headers={"Authorization": f"Bearer {SECRET}"}
    )
    assert r.status_code == 200, r.text


async def in_process_costs(where: Path, rows: int = 20_000, batch: int = 500) -> dict[str, float]:
    """Microseconds per request, timed in this process on the same code and a real SQLite file:
    the key lookup + limiter check (``auth on`` only), and what both Puentes do at each
    request's end: the listener (metrics by key, limiter settlement, a row appended) and, per
    row, the batched insert on the writer thread."""
    store = SQLiteStore(where / "usage-bench.db")
    await store.migrate()
    await store.create_key(bench_key())
    metrics = AccessMetrics(CollectorRegistry())
    recorder = UsageRecorder(store, metrics)  # not started: this loop flushes by hand
    access = Access(
        mode="keys",
        store=store,
        limiter=MemoryLimiter(),
        recorder=recorder,
        metrics=metrics,
        admin_hash=None,
        loopback=True,
    )
    headers = {"authorization": f"Bearer {SECRET}"}
    principal = await access.authenticate(headers)
    began = time.perf_counter()
    for _ in range(rows // 4):
        principal = await access.authenticate(headers)
        await principal.admit(MODEL)
    admission = (time.perf_counter() - began) / (rows // 4) * 1e6
    listener = insert = 0.0
    for start in range(0, rows, batch):
        records = []
        for i in range(start, start + batch):
            record = RequestRecord(
                request_id=f"{i:032x}",
                model=MODEL,
                provider="openai_compatible",
                principal="bench",
                prompt_tokens=30,
                completion_tokens=16,
            )
            record.duration = 0.002
            records.append(record)
        began = time.perf_counter()
        for record in records:
            await access.on_request_end(record)
        listener += time.perf_counter() - began
        began = time.perf_counter()
        assert await recorder.flush()
        insert += time.perf_counter() - began
    await store.aclose()
    return {
        "admission_us": admission,
        "listener_us": listener / rows * 1e6,
        "insert_us_wall": insert / rows * 1e6,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    where = Path(tempfile.mkdtemp(prefix="puente-bench-auth-"))
    load = os.getloadavg()[0]
    puente_cpu, helper_cpu = (0, 1) if args.pin else (None, None)
    children: list[Child] = []
    try:
        mock, upstream = start_mock(where, helper_cpu, args.chunks, 0.0)
        children.append(mock)
        off, off_url = start_puente(where, "off", upstream, "none", puente_cpu)
        children.append(off)
        on, on_url = start_puente(where, "on", upstream, None, puente_cpu)
        children.append(on)
        sanity_check(off_url, on_url)
        results: dict[str, dict[str, list[dict[str, Any]]]] = {
            name: {"off": [], "on": []} for name, _, _ in SCENARIOS
        }
        for rep in range(args.repeat):
            for name, stream, concurrency in SCENARIOS:
                # Alternate which goes first, so a drift in the machine's load favours neither.
                pair = [("off", off, off_url), ("on", on, on_url)]
                for target, child, base in pair if rep % 2 == 0 else pair[::-1]:
                    for _attempt in range(3):  # a run the machine starved completely is rerun
                        cpu_before, answered_before = child.cpu(), answered(base)
                        result = loadgen(
                            base + "/chat/completions",
                            concurrency=concurrency,
                            duration=args.duration,
                            warmup=args.warmup,
                            stream=stream,
                            cpu=helper_cpu,
                            model=MODEL,
                        )
                        if result["requests"]:
                            break
                    if result["errors"]:
                        raise RuntimeError(f"{name} {target}: {result['first_error']}")
                    # Puente's own CPU per request: what it does, whoever else uses the machine.
                    done = answered(base) - answered_before
                    result["cpu_us"] = (child.cpu() - cpu_before) / done * 1e6
                    results[name][target].append(result)
                    print(
                        f"  [{rep + 1}/{args.repeat}] {name:<19} auth {target:<3} "
                        f"{result['rps']:>8.0f} req/s  p50 {result['latency_ms']['p50']:.3f} ms  "
                        f"ttft p50 {result['ttft_ms']['p50']:.3f} ms  "
                        f"cpu {result['cpu_us']:.0f} us/req",
                        flush=True,
                    )
        usage = asyncio.run(in_process_costs(where))
        return {"results": results, "usage": usage, "load": load}
    finally:
        for child in reversed(children):
            child.stop()
        if args.keep:
            print(f"logs kept in {where}")
        else:
            shutil.rmtree(where, ignore_errors=True)


def summarize(data: dict[str, Any], args: argparse.Namespace) -> str:
    res = data["results"]

    def pick(name: str, target: str, metric: str, q: str | None) -> list[float]:
        return [r[metric][q] if q else r[metric] for r in res[name][target]]

    def row(label: str, name: str, metric: str, q: str | None = None, fmt: str = ".3f") -> str:
        off, on = pick(name, "off", metric, q), pick(name, "on", metric, q)
        added = statistics.median([b - a for a, b in zip(off, on, strict=True)])
        return (
            f"{label:<42}{statistics.median(off):>10{fmt}}{statistics.median(on):>10{fmt}}"
            f"{added:>10{fmt}}"
        )

    n1, s1, n32 = (name for name, _, _ in SCENARIOS)
    p50_added = statistics.median(
        [
            b - a
            for a, b in zip(
                pick(n1, "off", "latency_ms", "p50"),
                pick(n1, "on", "latency_ms", "p50"),
                strict=True,
            )
        ]
    )
    usage = data["usage"]
    lines = [
        f"Puente access benchmark: {os.cpu_count()} CPUs, "
        f"{'Puente on CPU 0, mock + load generator on CPU 1' if args.pin else 'unpinned'}, "
        f"{args.repeat} repeats x {args.duration:g} s (+{args.warmup:g} s warm-up), SQLite; "
        f"load average at start {data['load']:.2f}",
        "medians over repeats; 'added' = auth on minus auth off, per repeat (back to back)",
        "",
        f"{'':<42}{'auth off':>10}{'auth on':>10}{'added':>10}",
        row(f"{n1}: latency p50 ms", n1, "latency_ms", "p50"),
        row(f"{n1}: latency p99 ms", n1, "latency_ms", "p99"),
        row(f"{n1}: Puente CPU us/request", n1, "cpu_us", fmt=".0f"),
        row(f"{s1}: first token p50 ms", s1, "ttft_ms", "p50"),
        row(f"{n32}: requests/s", n32, "rps", fmt=".0f"),
        row(f"{n32}: Puente CPU us/request", n32, "cpu_us", fmt=".0f"),
        "",
        "in process, same code, real SQLite file:",
        f"  key lookup + limits check (auth on): {usage['admission_us']:.1f} us/request",
        f"  usage listener (both): {usage['listener_us']:.1f} us/request on the event loop;"
        f" batched insert {usage['insert_us_wall']:.1f} us/row on the writer thread",
        f"target: auth + limits add < {TARGET_ADDED_P50_MS} ms at p50 -> "
        f"{'met' if p50_added < TARGET_ADDED_P50_MS else 'MISSED'} ({p50_added:.3f} ms)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--chunks", type=int, default=16, help="content chunks per stream")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin CPUs")
    parser.add_argument("--json", type=Path, help="also write every run's raw result here")
    parser.add_argument("--keep", action="store_true", help="keep the logs and configs")
    args = parser.parse_args()
    data = run(args)
    print()
    print(summarize(data, args))
    if args.json:
        args.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
