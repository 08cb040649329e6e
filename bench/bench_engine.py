"""Puente in front of the real local engine: output tokens/s straight to the engine and through
Puente, at several concurrencies.

One run starts a real ``python -m server serve`` with one model, ``smollm2`` (``provider: vllm``,
``launch: {model: default}``), so Puente launches and supervises the embedded SmolLM2 engine as
``make serve`` does; the engine's port is chosen here, so the same engine is also reached
directly. Then, for each concurrency, rounds alternate direct / through Puente / direct / …: a
round is that many streaming chat completions sent at once, each running to ``--max-tokens``
(``ignore_eos``, temperature 0, so every round asks the engine for the same work). Per round:

- output tokens/s: the completion tokens the streams' ``usage`` reports, over the round's wall
  time (first request sent → last stream done);
- TTFT: time to the first content frame of each stream;
- Puente's CPU: its CPU seconds (from /proc) during the round, per second of the round (a share of
  one core), and the engine's (every process in its group) beside it;
- the 1-minute load average at the end of the round.

It prints medians over ``--repeat`` rounds, and Puente's tokens/s as a share of direct's.

``--pin`` is the second configuration: the engine (its OpenMP threads bound to CPU 1 by
``VLLM_CPU_OMP_THREADS_BIND``, and every process of its group) on CPU 1, Puente and this load
generator on CPU 0, so the two do not compete for a core.

    .venv/bin/python bench/bench_engine.py                       # ~4 minutes with the start
    .venv/bin/python bench/bench_engine.py --pin --json pinned.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from procs import Child, cpu_seconds, free_port  # noqa: E402

from server.engine import prepare, process_group  # noqa: E402

MODEL = "smollm2"
PROMPT = "Tell me a long story about a lighthouse keeper and the sea."
ENGINE_CPU, PUENTE_CPU = 1, 0
READY_TIMEOUT = 600.0


# -- the processes -------------------------------------------------------------------------------


def start(workdir: Path, pin: bool) -> tuple[Child, str, str]:
    """Puente with its launched engine; returns it, Puente's URL and the engine's URL."""
    engine_port, port = free_port(), free_port()
    launch: dict[str, Any] = {"model": "default", "max_model_len": 2048, "port": engine_port}
    if pin:
        launch["env"] = {"VLLM_CPU_OMP_THREADS_BIND": str(ENGINE_CPU)}
    config = {
        "auth": "none",
        "models": [{"name": MODEL, "provider": "vllm", "launch": launch}],
    }
    path = workdir / "puente.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [sys.executable, "-m", "server", "serve", "--config", str(path)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    puente = Child("puente", argv, workdir, None)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if puente.proc.poll() is not None:
            raise RuntimeError(f"puente exited:\n{puente.log.read_text()[-5000:]}")
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready in {READY_TIMEOUT:.0f} s:\n{puente.log.read_text()}")
        time.sleep(1)
    return puente, url, f"http://127.0.0.1:{engine_port}"


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").iterdir():
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def pin_all(pid: int, cpu: int) -> None:
    """Every thread of ``pid`` on ``cpu`` (threads started before inherit nothing later)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {cpu})
        except (ProcessLookupError, PermissionError):
            continue


def group_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


def stop(puente: Child) -> None:
    """Puente stops the engine it launched; should it not (killed, timed out), do it here."""
    groups = {os.getpgid(pid) for pid in descendants(puente.pid) if _alive(pid)}
    groups.discard(os.getpgid(0))
    puente.proc.send_signal(signal.SIGTERM)
    try:
        puente.proc.wait(90)
    except subprocess.TimeoutExpired:
        puente.proc.kill()
        puente.proc.wait(10)
    for pgid in groups:
        if process_group.members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


# -- the load ------------------------------------------------------------------------------------


@dataclass
class Round:
    target: str
    concurrency: int
    seconds: float = 0.0
    tokens: int = 0
    ttfts: list[float] = field(default_factory=list)
    puente_cpu: float = 0.0
    engine_cpu: float = 0.0
    load1: float = 0.0
    errors: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


async def one_stream(client: httpx.AsyncClient, url: str, max_tokens: int) -> tuple[float, int]:
    """One streaming chat completion to ``max_tokens``; its TTFT and completion tokens."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    ttft = 0.0
    tokens = 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            if not ttft and any((c.get("delta") or {}).get("content") for c in chunk["choices"]):
                ttft = time.perf_counter() - sent
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    return ttft, tokens


async def run_round(
    url: str, target: str, concurrency: int, max_tokens: int, *, puente: int, engine: list[int]
) -> Round:
    result = Round(target, concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        puente_before, engine_before = cpu_seconds(puente), group_cpu(engine)
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(one_stream(client, url, max_tokens) for _ in range(concurrency)),
            return_exceptions=True,
        )
        result.seconds = time.perf_counter() - started
        result.puente_cpu = cpu_seconds(puente) - puente_before
        result.engine_cpu = group_cpu(engine) - engine_before
    result.load1 = os.getloadavg()[0]
    for answer in answers:
        if isinstance(answer, BaseException):
            result.errors += 1
            continue
        ttft, tokens = answer
        result.ttfts.append(ttft)
        result.tokens += tokens
    return result


def summary(rounds: list[Round]) -> dict[str, Any]:
    ttfts = [t for r in rounds for t in r.ttfts]
    return {
        "tokens_per_s": round(statistics.median(r.tokens_per_s for r in rounds), 2),
        "tokens_per_round": sorted({r.tokens for r in rounds}),
        "ttft_p50_ms": round(statistics.median(ttfts) * 1000, 1) if ttfts else None,
        "puente_cpu_share": round(statistics.median(r.puente_cpu / r.seconds for r in rounds), 4),
        "puente_cpu_ms_per_stream": round(
            statistics.median(r.puente_cpu / r.concurrency for r in rounds) * 1000, 1
        ),
        "engine_cpu_share": round(statistics.median(r.engine_cpu / r.seconds for r in rounds), 3),
        # Puente's CPU against the engine's for the same tokens: the part of the machine Puente
        # takes from a CPU-bound engine (what moves least with the load).
        "puente_cpu_per_engine_cpu": round(
            sum(r.puente_cpu for r in rounds) / max(sum(r.engine_cpu for r in rounds), 1e-9), 5
        ),
        "load1_median": round(statistics.median(r.load1 for r in rounds), 2),
        "errors": sum(r.errors for r in rounds),
        "rounds": [round(r.tokens_per_s, 2) for r in rounds],
    }


async def measure(args: argparse.Namespace, puente: Child, url: str, engine_url: str) -> Any:
    engine = descendants(puente.pid)
    if args.pin:
        for pid in engine:
            pin_all(pid, ENGINE_CPU)
        pin_all(puente.pid, PUENTE_CPU)
        os.sched_setaffinity(0, {PUENTE_CPU})
    targets = {"direct": engine_url, "puente": url}
    for target in targets.values():  # warm both paths (connections, the engine's prefix cache)
        await run_round(target, "warm", 2, 8, puente=puente.pid, engine=engine)
    results: dict[str, Any] = {}
    for concurrency in args.concurrency:
        rounds: dict[str, list[Round]] = {"direct": [], "puente": []}
        for n in range(args.repeat):
            order = ["direct", "puente"] if n % 2 == 0 else ["puente", "direct"]
            for name in order:
                r = await run_round(
                    targets[name],
                    name,
                    concurrency,
                    args.max_tokens,
                    puente=puente.pid,
                    engine=engine,
                )
                rounds[name].append(r)
                print(
                    f"c={concurrency:3d} {name:7s} {r.tokens_per_s:7.2f} tok/s "
                    f"({r.tokens} tokens in {r.seconds:.2f} s, ttft p50 "
                    f"{statistics.median(r.ttfts or [0]) * 1000:.0f} ms, puente cpu "
                    f"{r.puente_cpu:.2f} s, engine cpu {r.engine_cpu:.2f} s, load {r.load1:.2f}, "
                    f"errors {r.errors})",
                    flush=True,
                )
        direct, through = summary(rounds["direct"]), summary(rounds["puente"])
        share = through["tokens_per_s"] / direct["tokens_per_s"] if direct["tokens_per_s"] else 0
        results[str(concurrency)] = {
            "direct": direct,
            "puente": through,
            "puente_share_of_direct": round(share, 4),
        }
        print(f"c={concurrency}: Puente delivers {share:.1%} of direct tokens/s", flush=True)
    return results


def start_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling Puente from outside, without stopping it (``--nonblocking``)."""
    spy = Path(sys.executable).parent / "py-spy"
    argv = [str(spy), "record", "--pid", str(pid), "--rate", "200", "--nonblocking"]
    argv += ["--format", "raw", "--output", str(output)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def hot_spots(raw: Path, top: int = 25) -> list[str]:
    """From py-spy's collapsed stacks: where Puente spent its busy samples, by innermost frame,
    and by Puente's own function (``server/``) nearest the top of each stack."""
    leaves: dict[str, int] = {}
    ours: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[-1].startswith("Runner.run "):
            continue  # uvloop waiting for events, in C: idle, not work
        total += n
        leaves[frames[-1]] = leaves.get(frames[-1], 0) + n
        own = next((f for f in reversed(frames) if "(server/" in f), "(outside server/)")
        ours[own] = ours.get(own, 0) + n
    lines = [f"{total} busy samples; innermost frames:"]
    for name, n in sorted(leaves.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {n / total:6.1%}  {name}")
    lines.append("nearest Puente frame:")
    for name, n in sorted(ours.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {n / total:6.1%}  {name}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per target and concurrency")
    parser.add_argument("--pin", action="store_true", help="engine on CPU 1, Puente on CPU 0")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--profile", type=Path, help="sample Puente with py-spy (the bench extra) into this file"
    )
    args = parser.parse_args()
    if not prepare.default_engine_python().is_file():
        print("the engine venv is not installed: run scripts/install-engine.sh", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="puente-bench-engine-") as tmp:
        workdir = Path(tmp)
        started = time.monotonic()
        puente, url, engine_url = start(workdir, args.pin)
        try:
            print(f"engine ready in {time.monotonic() - started:.0f} s", flush=True)
            spy = start_spy(puente.pid, args.profile) if args.profile else None
            results = asyncio.run(measure(args, puente, url, engine_url))
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
                spy.wait(60)
                print("\n".join(hot_spots(args.profile)))
        finally:
            stop(puente)
    report = {
        "pinned": args.pin,
        "max_tokens": args.max_tokens,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "results": results,
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        args.json.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
