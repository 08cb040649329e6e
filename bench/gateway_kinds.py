"""Every provider kind against a bare relay (issue 16): the runs and the table of
``bench_gateway.py --every-kind``. Separate from issue 2's scenarios to keep each file readable.

Targets, each measured in every round, rounds interleaved:

- ``direct``: the mock itself (OpenAI wire format);
- ``relay``: the bare aiohttp relay (bench/relay.py) in front of it, the reference;
- ``puente:<kind>``: Puente with ``provider: <kind>`` in front of the mock of that kind's wire
  format (openai_compatible and openai: Chat Completions; anthropic: Messages; gemini:
  generateContent), the client always speaking Chat Completions to Puente;
- ``before:<kind>``: the same, served from another checkout (``--before DIR``).

Scenarios: non-streaming c=1 (latency) and c=32 (requests/s), one stream (TTFT), and 64 streams
at once against a mock that paces its pieces ``--paced-ms`` apart (content frames/s, the longest
gap between two frames of one stream, TTFT under that load). CPU per request is the server's
(Puente's or the relay's) CPU time over the answers it completed in the run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from loadgen import request_body
from procs import Child, loadgen, start_mock, start_puente, start_relay, workdir

MODEL = "bench-model"
KINDS = ("openai_compatible", "openai", "anthropic", "gemini")


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    concurrency: int
    paced: bool = False


SCENARIOS = (
    Scenario("c1", stream=False, concurrency=1),
    Scenario("c32", stream=False, concurrency=32),
    Scenario("stream1", stream=True, concurrency=1),
    Scenario("paced64", stream=True, concurrency=64, paced=True),
)


@dataclass
class Target:
    name: str
    fast: str  # chat completions URL against the unpaced mock
    paced: str
    model_fast: str
    model_paced: str
    server: Child | None  # whose CPU is counted


def _models(kind: str, fast: str, paced: str) -> list[dict[str, Any]]:
    entries = []
    for speed, base in (("fast", fast), ("paced", paced)):
        entry: dict[str, Any] = {
            "name": f"{kind}-{speed}",
            "provider": kind,
            "model": MODEL,
            "retries": 0,
        }
        if kind in ("openai_compatible", "openai"):
            entry["base_url"] = base
        else:
            entry["base_url"] = base.removesuffix("/v1")
        if kind != "openai_compatible":
            entry["api_key"] = "bench-key"
        entries.append(entry)
    return entries


def _p(result: dict[str, Any], key: str, q: str = "p50") -> float:
    """A percentile of a run; NaN when nothing was timed (no stream ended inside the window)."""
    value: float = result[key].get(q, float("nan"))
    return value


def _check(url: str, model: str) -> None:
    """Each target answers a whole completion and a stream before anything is timed."""
    r = httpx.post(url, content=request_body(False, model), timeout=10)
    if r.status_code != 200 or not r.json().get("choices"):
        raise RuntimeError(f"{url} {model}: {r.status_code} {r.text[:500]}")
    r = httpx.post(url, content=request_body(True, model), timeout=10)
    if r.status_code != 200 or "lorem" not in r.text or not r.text.endswith("[DONE]\n\n"):
        raise RuntimeError(f"{url} {model} (stream): {r.status_code} {r.text[-500:]}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    where = workdir()
    server_cpu = helper_cpu = None
    if args.pin:
        server_cpu, helper_cpu = 0, 1
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    children: list[Child] = []
    try:
        mock, fast = start_mock(where, helper_cpu, args.chunks, 0.0)
        children.append(mock)
        paced_mock, paced = start_mock(
            where, helper_cpu, args.chunks, args.paced_ms, name="mock-paced"
        )
        children.append(paced_mock)
        relay, relay_root = start_relay(where, server_cpu, {"fast": fast, "paced": paced})
        children.append(relay)
        targets = [
            Target(
                "direct",
                fast + "/chat/completions",
                paced + "/chat/completions",
                MODEL,
                MODEL,
                None,
            ),
            Target(
                "relay",
                relay_root + "/fast/v1/chat/completions",
                relay_root + "/paced/v1/chat/completions",
                MODEL,
                MODEL,
                relay,
            ),
        ]
        trees: list[tuple[str, Path | None]] = [("puente", None)]
        if args.before:
            trees.insert(0, ("before", args.before))
        for label, tree in trees:
            models = [m for kind in kinds for m in _models(kind, fast, paced)]
            server, base = start_puente(
                where, server_cpu, fast, MODEL, models=models, tree=tree, name=label
            )
            children.append(server)
            url = base + "/chat/completions"
            targets += [
                Target(f"{label}:{kind}", url, url, f"{kind}-fast", f"{kind}-paced", server)
                for kind in kinds
            ]
        for t in targets:
            _check(t.fast, t.model_fast)
            _check(t.paced, t.model_paced)
        results: dict[str, dict[str, list[dict[str, Any]]]] = {
            s.name: {t.name: [] for t in targets} for s in SCENARIOS
        }
        for rep in range(args.repeat):
            for scenario in SCENARIOS:
                for t in targets:
                    cpu_before = t.server.cpu() if t.server else 0.0
                    result = loadgen(
                        t.paced if scenario.paced else t.fast,
                        concurrency=scenario.concurrency,
                        duration=args.duration,
                        warmup=args.warmup,
                        stream=scenario.stream,
                        cpu=helper_cpu,
                        model=t.model_paced if scenario.paced else t.model_fast,
                    )
                    if result["errors"]:
                        # Kept: a path that fails under load (timeouts) is a result too.
                        print(
                            f"  ! {scenario.name} {t.name}: {result['errors']} errors, first: "
                            f"{result['first_error'][:160]}",
                            flush=True,
                        )
                    if t.server is not None and result["completed"]:
                        spent = t.server.cpu() - cpu_before
                        result["cpu_us"] = spent / result["completed"] * 1e6
                    result["load"] = os.getloadavg()[0]
                    results[scenario.name][t.name].append(result)
                    print(
                        f"  [{rep + 1}/{args.repeat}] {scenario.name:<8} {t.name:<26} "
                        f"{result['rps']:>8.0f}/s p50 {_p(result, 'latency_ms'):7.3f} ms "
                        f"ttft {_p(result, 'ttft_ms'):7.3f} ms "
                        f"cpu {result.get('cpu_us', float('nan')):6.0f} us "
                        f"load {result['load']:.1f}",
                        flush=True,
                    )
        return {"kinds_results": results, "targets": [t.name for t in targets]}
    finally:
        for child in reversed(children):
            child.stop()
        if not args.keep:
            shutil.rmtree(where, ignore_errors=True)
        else:
            print(f"logs kept in {where}")


def summarize(data: dict[str, Any], args: argparse.Namespace) -> str:
    res, targets = data["kinds_results"], data["targets"]

    def med(scenario: str, target: str, pick: Callable[[dict[str, Any]], float]) -> float:
        values = [pick(r) for r in res[scenario][target]]
        return statistics.median(values) if values else float("nan")

    def added(scenario: str, target: str, key: str) -> float:
        pairs = zip(res[scenario]["direct"], res[scenario][target], strict=True)
        return statistics.median(_p(t, key) - _p(d, key) for d, t in pairs)

    def added99(scenario: str, target: str) -> float:
        pairs = zip(res[scenario]["direct"], res[scenario][target], strict=True)
        return statistics.median(
            _p(t, "latency_ms", "p99") - _p(d, "latency_ms", "p99") for d, t in pairs
        )

    loads = [r["load"] for s in res.values() for runs in s.values() for r in runs]
    lines = [
        f"Every provider kind: {os.cpu_count()} CPUs, "
        f"{'servers on CPU 0, mocks + load generator on CPU 1' if args.pin else 'unpinned'}, "
        f"{args.repeat} rounds x {args.duration:g} s (+{args.warmup:g} s warm-up), streams of "
        f"{args.chunks} pieces, paced {args.paced_ms:g} ms; load average "
        f"{min(loads):.1f}-{max(loads):.1f} (median {statistics.median(loads):.1f})",
        "medians over rounds; 'added' = target minus direct in the same round",
        "",
    ]
    head = (
        f"{'target':<26} {'+p50 c1':>8} {'+p99 c1':>8} {'rps c32':>8} {'CPU/req':>8} "
        f"{'+TTFT s1':>8} {'frames/s':>9} {'max gap':>8} {'TTFT 64':>8} {'CPU/strm':>8} "
        f"{'errors':>6}"
    )
    lines.append(head)
    lines.append("-" * len(head))
    for t in targets:
        direct = t == "direct"
        a50 = "-" if direct else f"{added('c1', t, 'latency_ms'):.2f}"
        a99 = "-" if direct else f"{added99('c1', t):.2f}"
        attft = "-" if direct else f"{added('stream1', t, 'ttft_ms'):.2f}"
        rps = med("c32", t, lambda r: r["rps"])
        cpu_req = med("c32", t, lambda r: r.get("cpu_us", float("nan")))
        fps = med("paced64", t, lambda r: r["content_frames_per_s"])
        gap = med("paced64", t, lambda r: r["gap_ms"].get("max", float("nan")))
        ttft64 = med("paced64", t, lambda r: _p(r, "ttft_ms"))
        cpu_stream = med("paced64", t, lambda r: r.get("cpu_us", float("nan")))
        errors = sum(r["errors"] for s in res.values() for r in s[t])
        lines.append(
            f"{t:<26} {a50:>8} {a99:>8} {rps:>8,.0f} {cpu_req:>8.0f} {attft:>8} {fps:>9,.0f} "
            f"{gap:>8.1f} {ttft64:>8.2f} {cpu_stream:>8.0f} {errors:>6}"
        )
    lines.append("")
    lines.append("ms for latencies and gaps; CPU in us per answer (the server's own CPU time)")
    relay_rps = med("c32", "relay", lambda r: r["rps"])
    relay_p50 = added("c1", "relay", "latency_ms")
    direct_fps = med("paced64", "direct", lambda r: r["content_frames_per_s"])
    direct_gap = med("paced64", "direct", lambda r: r["gap_ms"].get("max", float("nan")))
    lines.append(
        "targets (issue 16): rps >= 50% relay, frames/s >= 97% direct, max gap <= 2x "
        "direct, TTFT(64) <= 10 ms, +p50 <= 1.5x relay"
    )
    for t in targets:
        if not t.startswith(("puente:", "before:")):
            continue
        checks = [
            med("c32", t, lambda r: r["rps"]) >= 0.5 * relay_rps,
            med("paced64", t, lambda r: r["content_frames_per_s"]) >= 0.97 * direct_fps,
            med("paced64", t, lambda r: r["gap_ms"].get("max", float("nan"))) <= 2 * direct_gap,
            med("paced64", t, lambda r: _p(r, "ttft_ms")) <= 10.0,
            added("c1", t, "latency_ms") <= 1.5 * relay_p50,
        ]
        marks = " ".join("met" if ok else "MISSED" for ok in checks)
        lines.append(f"  {t:<26} {marks}")
    return "\n".join(lines)
