"""Soak: a bounded run of mixed traffic through every front door of Puente, with keys and limits
on, watching its memory and descriptors.

Puente (a real ``python -m server serve``, ``auth: keys``) sits in front of the faulty fake upstream
from ``tests/fakes/faults.py`` (in its own process) and gets, from a few concurrent clients, a mix
over all its doors (shares of all requests):

    /v1/chat/completions  30%   streams, whole answers, a 503 retried, a primary failing over to
                                its fallback, 400s passed through, a hanging upstream (504), a
                                stream reset mid-way, clients leaving mid-stream
    /v1/responses         25%   the same faults, whole and streamed; continuing a stored response
                                (``previous_response_id``) and reading one back (``GET``)
    /v1/messages          20%   whole and streamed; a primary failing over, a 400, a hanging
                                upstream, a stream reset, clients leaving; ``count_tokens``
    /v1/completions        9%   whole and streamed, clients leaving, 400s passed through
    /v1/embeddings         9%   batches of 1-8 inputs, 400s passed through, a 503 retried then
                                given to the client
    /admin/usage           1%   the usage records read back

Each request picks a key: most go with a key without limits, some with a key limited per minute
(requests or tokens) or per day (tokens), and a few with a key that does not exist, so the access
path, the limits (429) and the usage records are soaked too.

Every ``--interval`` seconds it records Puente's RSS and open descriptors and prints them. After
``--warmup`` minutes the traffic pauses until Puente is quiet and the baseline is taken; at the end
it pauses again and takes the final figures. It prints RSS growth per minute after warm-up (a
least-squares slope over the samples), descriptors at the end against the start, and per door and
per key what the clients saw.

    .venv/bin/python bench/soak.py --minutes 10        # the default
    .venv/bin/python bench/soak.py --minutes 3 --json soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from aiohttp import web

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from procs import Child, cpu_seconds, free_port, wait_healthy  # noqa: E402

from tests.fakes.faults import FaultyOpenAI  # noqa: E402

MESSAGES = [{"role": "user", "content": "hola"}]
REPLY = "una respuesta de prueba con algunas palabras más para que dure un poco"
ADMIN = "sk-soak-admin-" + uuid.uuid4().hex
ANTHROPIC = {"anthropic-version": "2023-06-01"}

# (weight, door, kind): what each request of the mix does.
MIX = [
    (10, "chat", "stream"), (7, "chat", "whole"), (3, "chat", "retried"),
    (3, "chat", "fallback"), (3, "chat", "leave"), (2, "chat", "client_error"),
    (1, "chat", "hang"), (1, "chat", "reset"),
    (5, "responses", "stream"), (4, "responses", "whole"), (5, "responses", "continue"),
    (2, "responses", "read"), (2, "responses", "retried"), (2, "responses", "fallback"),
    (2, "responses", "leave"), (1, "responses", "client_error"), (1, "responses", "hang"),
    (1, "responses", "reset"),
    (6, "messages", "stream"), (4, "messages", "whole"), (2, "messages", "fallback"),
    (2, "messages", "leave"), (1, "messages", "client_error"), (1, "messages", "hang"),
    (1, "messages", "reset"), (3, "messages", "count_tokens"),
    (4, "completions", "stream"), (3, "completions", "whole"), (1, "completions", "leave"),
    (1, "completions", "client_error"),
    (7, "embeddings", "whole"), (1, "embeddings", "client_error"),
    (1, "embeddings", "upstream_error"),
    (1, "admin", "usage"),
]  # fmt: skip

# (weight, name, limits): who sends each request. ``None`` limits: a key that does not exist.
KEYS: list[tuple[int, str, dict[str, int] | None]] = [
    (70, "open", {}),
    (12, "rpm", {"rpm": 240}),
    (10, "tpm", {"tpm": 6000}),
    (5, "budget", {"budget_day": 100_000}),
    (3, "unknown", None),
]

# Anthropic Messages pass no extra field upstream, so their models' faults are programmed on the
# fake per upstream model (``SoakUpstream``); the other doors carry a ``fake`` directive.
PROGRAMS: dict[str, dict[str, Any]] = {
    "soak-up": {"reply": REPLY, "delay": 0.005},
    "msg-flaky-up": {"status": 503},
    "msg-bad-up": {"status": 400},
    "msg-hang-up": {"hang": 5},
    "msg-reset-up": {"reply": REPLY, "delay": 0.005, "reset_after": 3},
}
MESSAGES_MODEL = {
    "fallback": "msg-flaky",
    "client_error": "msg-bad",
    "hang": "msg-hang",
    "reset": "msg-reset",
}
RESPONSE_ID = re.compile(rb'"id"\s*:\s*"(resp_[A-Za-z0-9_-]+)"')


# -- the upstream, in its own process ------------------------------------------------------------


class SoakUpstream(FaultyOpenAI):
    """The faulty fake, with each upstream model's own faults for requests that carry none."""

    async def _answer(
        self, request: web.Request, body: dict[str, Any], fake: dict[str, Any], cid: str
    ) -> web.StreamResponse:
        if not fake:
            fake = dict(PROGRAMS.get(str(body.get("model")), {}))
        return await super()._answer(request, body, fake, cid)


def serve_upstream(port_file: Path) -> None:
    fake = SoakUpstream().start()
    port_file.write_text(str(fake.port))
    stop = threading.Event()
    while not stop.wait(10):
        fake.reset()  # its records are for tests; a soak would only grow them


def start_upstream(workdir: Path) -> tuple[Child, str]:
    port_file = workdir / "upstream.port"
    child = Child(
        "upstream",
        [sys.executable, str(BENCH / "soak.py"), "--upstream", str(port_file)],
        workdir,
        None,
    )
    deadline = time.monotonic() + 20
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or child.proc.poll() is not None:
            raise RuntimeError(f"the fake upstream did not start:\n{child.log.read_text()}")
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port_file.read_text()}/v1"
    wait_healthy(base + "/models", child.proc, child.log)
    return child, base


def serve_traced(argv: list[str]) -> int:
    """``python -m server`` with tracemalloc on (``--trace``): each SIGUSR1 dumps a snapshot
    into ``$SOAK_SNAPSHOTS`` (numbered from 0), so the soak can diff two of them."""
    from server.cli import main as puente  # noqa: PLC0415 (only the traced child needs the app)

    folder = Path(os.environ["SOAK_SNAPSHOTS"])
    taken = [0]

    def dump(signum: int, frame: object) -> None:
        target = folder / f"snapshot-{taken[0]}.pickle"
        tracemalloc.take_snapshot().dump(str(target) + ".part")
        os.replace(str(target) + ".part", target)  # whole once it has its name
        taken[0] += 1

    tracemalloc.start(10)
    signal.signal(signal.SIGUSR1, dump)
    return puente(argv)


def snapshot(pid: int, folder: Path, number: int) -> Path:
    """Ask a traced Puente for a snapshot and wait for it."""
    os.kill(pid, signal.SIGUSR1)
    target = folder / f"snapshot-{number}.pickle"
    deadline = time.monotonic() + 120
    while not target.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("no tracemalloc snapshot came")
        time.sleep(0.2)
    return target


def snapshot_diff(first: Path, second: Path, top: int = 20) -> list[str]:
    """The lines whose allocations grew most between two snapshots, then the five biggest with
    the calls that led there (innermost first)."""
    noise = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
        tracemalloc.Filter(False, "<unknown>"),
    ]
    old = tracemalloc.Snapshot.load(str(first)).filter_traces(noise)
    new = tracemalloc.Snapshot.load(str(second)).filter_traces(noise)
    lines = []
    for stat in new.compare_to(old, "lineno")[:top]:
        frame = stat.traceback[0]
        lines.append(
            f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  "
            f"{frame.filename}:{frame.lineno}"
        )
    for stat in new.compare_to(old, "traceback")[:5]:  # the biggest, with where they came from
        where = " <- ".join(f"{f.filename}:{f.lineno}" for f in reversed(stat.traceback[-6:]))
        lines.append(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  {where}")
    return lines


def start_puente(workdir: Path, upstream: str, trace: bool = False) -> tuple[Child, str]:
    def model(name: str, **settings: Any) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "openai_compatible",
            "base_url": upstream,
            "model": f"{name}-up",
            "backoff": {"base": 0.02, "max": 1.0},
            **settings,
        }

    hang = {"retries": 0, "timeouts": {"connect": 2, "read": 0.5}}
    config = {
        "auth": "keys",
        "models": [
            model("soak", max_concurrency=64, max_queue=64),
            model("soak-primary", retries=1, fallbacks=["soak"]),
            model("soak-hang", **hang),
            model("msg-flaky", retries=1, fallbacks=["soak"]),
            model("msg-bad"),
            model("msg-hang", **hang),
            model("msg-reset"),
            model("soak-embed", task="embeddings", retries=1),
        ],
    }
    path = workdir / "puente.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    argv = [sys.executable, "-m", "server"]
    if trace:
        argv = [sys.executable, str(BENCH / "soak.py"), "--serve-traced"]
        os.environ["SOAK_SNAPSHOTS"] = str(workdir)
    argv += ["serve", "--config", str(path)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    os.environ["PUENTE_ADMIN_KEY"] = ADMIN  # the child inherits it: the admin API is on
    child = Child("puente", argv, workdir, None)
    wait_healthy(f"http://127.0.0.1:{port}/health", child.proc, child.log)
    return child, f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class Key:
    name: str
    secret: str
    weight: int


def create_keys(base_url: str) -> list[Key]:
    """The keys of the mix, created through the admin API (a nonexistent one for the 401s)."""
    keys = []
    admin = {"Authorization": f"Bearer {ADMIN}"}
    for weight, name, limits in KEYS:
        if limits is None:
            keys.append(Key(name, "sk-puente-" + "0" * 40, weight))
            continue
        body = {"name": f"soak-{name}", **limits}
        answer = httpx.post(f"{base_url}/admin/keys", json=body, headers=admin, timeout=10)
        answer.raise_for_status()
        keys.append(Key(name, answer.json()["key"], weight))
    return keys


# -- measuring Puente from outside ---------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    if len(samples) < 2:
        return 0.0
    xs = [t for t, _ in samples]
    ys = [v for _, v in samples]
    return float(statistics.linear_regression(xs, ys).slope) * 60


# -- the traffic ---------------------------------------------------------------------------------


class Traffic:
    def __init__(self, base_url: str, keys: list[Key], concurrency: int, seed: int) -> None:
        self.base_url = base_url
        self.keys = keys
        self.concurrency = concurrency
        self.rng = random.Random(seed)  # a reproducible mix
        self.outcomes: Counter[str] = Counter()  # "door:kind:status"
        self.by_key: Counter[str] = Counter()  # "key:status"
        # Stored responses each key may continue or read, with how long their chain is (kept
        # short: a chain that only grew would make requests, not Puente, bigger over time).
        self.stored: dict[str, deque[tuple[str, int]]] = {k.name: deque(maxlen=64) for k in keys}

    def _pick(self) -> tuple[str, str]:
        _, door, kind = self.rng.choices(MIX, weights=[w for w, _, _ in MIX])[0]
        return door, kind

    def _key(self) -> Key:
        return self.rng.choices(self.keys, weights=[k.weight for k in self.keys])[0]

    def _fault(self, kind: str) -> tuple[str, dict[str, Any], bool]:
        """Model, ``fake`` directive and whether to stream, for the doors that carry one."""
        fake: dict[str, Any] = {"reply": REPLY, "delay": 0.005}
        model = "soak"
        if kind == "retried":
            fake |= {"tag": uuid.uuid4().hex, "status": 503, "fail_first": 1}
        elif kind == "fallback":
            model = "soak-primary"
            fake |= {"status": 503, "only_model": "soak-primary-up"}
        elif kind == "client_error":
            fake |= {"status": 400}
        elif kind == "hang":
            model = "soak-hang"
            fake |= {"hang": 5}
        elif kind == "reset":
            fake |= {"reset_after": 3}
        if kind in ("stream", "leave", "reset"):
            stream = True
        elif kind == "whole":
            stream = False
        else:
            stream = self.rng.random() < 0.5
        return model, fake, stream

    async def _send(
        self,
        client: httpx.AsyncClient,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str],
        *,
        stream: bool,
        leave: bool = False,
    ) -> tuple[int, bytes]:
        if not stream:
            answer = await client.post(path, json=body, headers=headers)
            return answer.status_code, answer.content
        async with client.stream("POST", path, json=body, headers=headers) as response:
            chunks = []
            async for chunk in response.aiter_bytes():
                if leave:
                    break  # leaving closes the connection with the body unread
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)

    async def _chat(self, client: httpx.AsyncClient, kind: str, key: Key) -> int:
        model, fake, stream = self._fault(kind)
        body = {"model": model, "messages": MESSAGES, "stream": stream, "fake": fake}
        status, _ = await self._send(
            client, "/v1/chat/completions", body, _bearer(key), stream=stream, leave=kind == "leave"
        )
        return status

    async def _responses(self, client: httpx.AsyncClient, kind: str, key: Key) -> int:
        stored = self.stored[key.name]
        if kind == "read" and stored:
            response_id, _ = self.rng.choice(stored)
            return (
                await client.get(f"/v1/responses/{response_id}", headers=_bearer(key))
            ).status_code
        model, fake, stream = self._fault("whole" if kind in ("read", "continue") else kind)
        if kind == "continue":
            stream = self.rng.random() < 0.5
        body: dict[str, Any] = {"model": model, "input": "hola", "stream": stream, "fake": fake}
        depth = 0
        if kind == "continue" and stored:
            previous, depth = self.rng.choice(stored)
            body["previous_response_id"] = previous
        leave = kind == "leave"
        status, text = await self._send(
            client, "/v1/responses", body, _bearer(key), stream=stream, leave=leave
        )
        # A stream cut off mid-way answers 200 and then fails: that response is not stored.
        complete = status == 200 and not leave and kind != "reset"
        found = RESPONSE_ID.search(text) if complete else None
        if found and depth < 4:
            stored.append((found.group(1).decode(), depth + 1))
        return status

    async def _messages(self, client: httpx.AsyncClient, kind: str, key: Key) -> int:
        headers = {"x-api-key": key.secret, **ANTHROPIC}
        if kind == "count_tokens":
            body: dict[str, Any] = {"model": "soak", "messages": MESSAGES}
            return (
                await client.post("/v1/messages/count_tokens", json=body, headers=headers)
            ).status_code
        stream = kind in ("stream", "leave", "reset") or (
            kind != "whole" and self.rng.random() < 0.5
        )
        model = MESSAGES_MODEL.get(kind, "soak")
        body = {"model": model, "max_tokens": 64, "messages": MESSAGES, "stream": stream}
        status, _ = await self._send(
            client, "/v1/messages", body, headers, stream=stream, leave=kind == "leave"
        )
        return status

    async def _completions(self, client: httpx.AsyncClient, kind: str, key: Key) -> int:
        _, fake, stream = self._fault(kind)
        body = {"model": "soak", "prompt": "hola", "max_tokens": 32, "stream": stream, "fake": fake}
        status, _ = await self._send(
            client, "/v1/completions", body, _bearer(key), stream=stream, leave=kind == "leave"
        )
        return status

    async def _embeddings(self, client: httpx.AsyncClient, kind: str, key: Key) -> int:
        inputs = [f"frase número {n} para el soak" for n in range(self.rng.randint(1, 8))]
        body: dict[str, Any] = {"model": "soak-embed", "input": inputs}
        if kind == "client_error":
            body["fake"] = {"status": 400}
        elif kind == "upstream_error":
            body["fake"] = {"status": 503}
        return (await client.post("/v1/embeddings", json=body, headers=_bearer(key))).status_code

    async def _admin(self, client: httpx.AsyncClient, kind: str, key: Key) -> int:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        return (await client.get("/admin/usage", headers=admin)).status_code

    async def _one(self, client: httpx.AsyncClient) -> None:
        door, kind = self._pick()
        key = self._key()
        send = getattr(self, f"_{door}")
        try:
            status: int | str = await send(client, kind, key)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        self.outcomes[f"{door}:{kind}:{status}"] += 1
        if door != "admin":
            self.by_key[f"{key.name}:{status}"] += 1

    async def _worker(self, until: float) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as client:
            while time.monotonic() < until:
                await self._one(client)

    def start(self, until: float) -> asyncio.Future[list[None]]:
        """Clients sending until ``until``; each closes its connections when it stops."""
        return asyncio.gather(*(self._worker(until) for _ in range(self.concurrency)))


def _bearer(key: Key) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.secret}"}


def per_door(outcomes: Counter[str] | dict[str, int]) -> dict[str, dict[str, int]]:
    """``door:kind:status`` counts → per door, per ``kind:status``."""
    doors: dict[str, dict[str, int]] = {}
    for label, count in sorted(outcomes.items()):
        door, rest = label.split(":", 1)
        doors.setdefault(door, {})[rest] = count
    return doors


async def quiet(base_url: str, pid: int, timeout: float = 20) -> int:
    """Wait until Puente has nothing in flight and its descriptor count is steady; return it."""
    deadline = time.monotonic() + timeout
    last, steady = -1, 0
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=5, headers=admin) as client:
        while time.monotonic() < deadline:
            text = (await client.get("/metrics")).text
            busy = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("puente_requests_in_flight{")
            )
            fds = open_fds(pid)
            steady = steady + 1 if busy == 0 and fds == last else 0
            if steady >= 5:
                return fds
            last = fds
            await asyncio.sleep(0.2)
    return open_fds(pid)


def per_minute(samples: list[tuple[float, float, int, float]]) -> list[dict[str, float]]:
    """The sample nearest each whole minute: RSS, descriptors and the 1-minute load average."""
    rows = []
    for minute in range(int(samples[-1][0] // 60) + 1):
        _, rss, fds, load = min(samples, key=lambda s: abs(s[0] - minute * 60))
        rows.append(
            {"minute": minute, "rss_mib": round(rss, 2), "fds": fds, "load1": round(load, 2)}
        )
    return rows


async def soak(
    args: argparse.Namespace, base_url: str, pid: int, keys: list[Key]
) -> dict[str, Any]:
    traffic = Traffic(base_url, keys, args.concurrency, args.seed)
    samples: list[tuple[float, float, int, float]] = []
    started = time.monotonic()
    end = started + args.minutes * 60
    warm_end = started + min(args.warmup * 60, args.minutes * 60 / 2)
    fds_idle = open_fds(pid)
    cpu_start = cpu_seconds(pid)
    loads: list[float] = []

    def sample() -> None:
        at = time.monotonic() - started
        rss, fds = rss_mib(pid), open_fds(pid)
        load = os.getloadavg()[0]
        samples.append((at, rss, fds, load))
        loads.append(load)
        done = sum(traffic.outcomes.values())
        print(
            f"t={at:6.0f}s rss={rss:7.2f} MiB fds={fds:4d} requests={done} load={load:.2f}",
            flush=True,
        )

    async def phase(until: float) -> None:
        clients = traffic.start(until)
        sample()
        while time.monotonic() < until:
            await asyncio.sleep(min(args.interval, max(0.0, until - time.monotonic())))
            sample()
        await clients

    await phase(warm_end)
    fds_start = await quiet(base_url, pid)
    rss_start = rss_mib(pid)
    print(f"-- warmed up: rss={rss_start:.2f} MiB, fds at rest={fds_start}", flush=True)
    if args.trace:
        snapshot(pid, args.snapshots, 0)
    measured_from = time.monotonic() - started
    await phase(end)
    fds_end = await quiet(base_url, pid)
    rss_end = rss_mib(pid)
    cpu = cpu_seconds(pid) - cpu_start
    grown = []
    if args.trace:
        warm = args.snapshots / "snapshot-0.pickle"
        grown = snapshot_diff(warm, snapshot(pid, args.snapshots, 1))
    after = [(t, rss) for t, rss, _, _ in samples if t >= measured_from]
    half = [(t, rss) for t, rss in after if t >= (measured_from + samples[-1][0]) / 2]
    requests = sum(traffic.outcomes.values())
    return {
        "minutes": args.minutes,
        "warmup_minutes": round(measured_from / 60, 2),
        "concurrency": args.concurrency,
        "requests": requests,
        "requests_per_s": round(requests / samples[-1][0], 1),
        "puente_cpu_s": round(cpu, 1),
        "puente_cpu_us_per_request": round(cpu / max(requests, 1) * 1e6),
        "load1_median": round(statistics.median(loads), 2),
        "load1_max": round(max(loads), 2),
        "rss_start_mib": round(rss_start, 2),
        "rss_end_mib": round(rss_end, 2),
        "rss_growth_mib_per_min": round(slope_per_minute(after), 3),
        "rss_growth_second_half_mib_per_min": round(slope_per_minute(half), 3),
        "fds_before_traffic": fds_idle,
        "fds_start": fds_start,
        "fds_end": fds_end,
        **({"tracemalloc_growth": grown} if args.trace else {}),
        "per_door": per_door(traffic.outcomes),
        "per_key": dict(sorted(traffic.by_key.items())),
        "per_minute": per_minute(samples),
        "samples": [
            {"t": round(t), "rss_mib": round(r, 2), "fds": f, "load1": round(load, 2)}
            for t, r, f, load in samples
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0, help="minutes before measuring")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="run Puente under tracemalloc (slower) and print what grew after the warm-up",
    )
    parser.add_argument("--upstream", type=Path, help=argparse.SUPPRESS)
    if sys.argv[1:2] == ["--serve-traced"]:
        return serve_traced(sys.argv[2:])
    args = parser.parse_args()
    if args.upstream:
        serve_upstream(args.upstream)
        return 0

    with tempfile.TemporaryDirectory(prefix="puente-soak-") as tmp:
        workdir = Path(tmp)
        upstream, upstream_url = start_upstream(workdir)
        puente: Child | None = None
        try:
            puente, base_url = start_puente(workdir, upstream_url, args.trace)
            args.snapshots = workdir
            keys = create_keys(base_url)
            result = asyncio.run(soak(args, base_url, puente.pid, keys))
        finally:
            if puente is not None:
                puente.stop()
            upstream.stop()
        if puente is not None and "Traceback" in puente.log.read_text():
            print("!! Puente logged a traceback:\n" + puente.log.read_text()[-4000:])
            result["traceback_in_log"] = True
    shown = {k: v for k, v in result.items() if k not in ("samples", "per_minute")}
    print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
    print(
        f"RSS growth after warm-up: {result['rss_growth_mib_per_min']:+.3f} MiB/min "
        f"({result['rss_start_mib']} -> {result['rss_end_mib']} MiB); open descriptors at rest: "
        f"{result['fds_start']} after warm-up, {result['fds_end']} at the end"
    )
    if args.json:
        args.json.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
