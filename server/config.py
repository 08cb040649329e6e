"""The YAML configuration: one file, validated at start, secrets only from the environment.

``${NAME}`` anywhere in a string is replaced by the environment variable ``NAME``
(``${NAME:-fallback}`` gives a fallback). An unset variable in a model's ``api_key`` does not fail
start: that model is left out of the catalogue and answers 404 naming the variable to set.
Anywhere else an unset variable is a configuration error.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from server.errors import param_path
from server.personas.config import PersonaConfig, check_targets

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

ProviderKind = Literal["openai_compatible", "vllm", "openai", "anthropic", "gemini"]


class ConfigError(Exception):
    """A configuration that cannot be used; the message is one line naming file, entry and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    """Seconds. ``read`` bounds the wait for each piece of the answer, ``total`` the whole call."""

    connect: Annotated[float, Field(gt=0)] = 10.0
    read: Annotated[float, Field(gt=0)] = 300.0
    total: Annotated[float, Field(gt=0)] | None = None


class Backoff(_Strict):
    """Seconds between retries: ``base``·2ⁿ with jitter, at most ``max``. A ``Retry-After`` longer
    than ``max`` is not waited for: the request falls back, or the client gets it."""

    base: Annotated[float, Field(ge=0)] = 0.25
    max: Annotated[float, Field(ge=0)] = 4.0


class BreakerConfig(_Strict):
    """The circuit breaker of a model and of each of its endpoints (README "Resilience")."""

    failures: Annotated[int, Field(ge=1)] = 5
    """Consecutive retryable failures that open it."""
    cooldown: Annotated[float, Field(gt=0)] = 30.0
    """Seconds it stays open before one probe request is let through."""


class LaunchConfig(_Strict):
    """A vLLM engine that Puente starts and supervises itself (``provider: vllm``)."""

    model: str = "default"
    """A model folder, a hub id (hosts with internet), ``default``: the embedded chat model
    SmolLM2, an embedded chat model by name (``smollm2``, ``qwen2.5-coder-1.5b``: prepared on
    first start as ``puente models prepare NAME`` does), or ``default-embedding``: the embedded
    embedding model (all-MiniLM-L6-v2)."""
    runner: Literal["auto", "generate", "pooling"] | None = None
    """vLLM's ``--runner``: ``pooling`` serves ``/v1/embeddings`` (and no chat). Unset: pooling
    for ``default-embedding``, vLLM's own choice otherwise."""
    port: Annotated[int, Field(gt=0, lt=65536)] | None = None
    """The engine's port on 127.0.0.1; a free one when unset."""
    dtype: str | None = None
    max_model_len: Annotated[int, Field(gt=0)] | None = None
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] | None = None
    tensor_parallel_size: Annotated[int, Field(gt=0)] | None = None
    enforce_eager: bool | None = None
    tool_call_parser: str | None = None
    """Enables tool calling (``--enable-auto-tool-choice --tool-call-parser NAME``)."""
    chat_template: str | None = None
    args: list[str] = Field(default_factory=list)
    """Any other engine flags, passed through as written."""
    env: dict[str, str] = Field(default_factory=dict)
    python: str | None = None
    """The engine venv's python; default ``$PUENTE_ENGINE_PYTHON`` or ``.venv-engine``."""
    startup_timeout: Annotated[float, Field(gt=0)] = 900.0
    """Seconds the engine may take to answer ``/health`` before it is restarted."""

    @property
    def effective_runner(self) -> str | None:
        if self.runner is not None:
            return self.runner
        return "pooling" if self.model == "default-embedding" else None

    @property
    def pooling(self) -> bool:
        return self.effective_runner == "pooling"


class UpstreamLimits(_Strict):
    """What one upstream answer may cost Puente, whatever the upstream sends (README "Security
    limits"). Sizes are of the decompressed bytes, so a gzip bomb is cut where it crosses them."""

    max_body_bytes: Annotated[int, Field(gt=0)] = 32 * 1024 * 1024
    """A whole (non-streamed) answer."""
    max_error_bytes: Annotated[int, Field(gt=0)] = 64 * 1024
    """An error answer: only its message is wanted; past this, the rest is not read."""
    max_line_bytes: Annotated[int, Field(gt=0)] = 1024 * 1024
    """One line of an event stream (one chunk of a streamed answer)."""
    total_timeout: Annotated[float, Field(gt=0)] = 600.0
    """Seconds one upstream call may take in all, streams included, for a model whose
    ``timeouts.total`` is unset."""


class ModelConfig(_Strict):
    name: Annotated[str, Field(min_length=1)]
    provider: ProviderKind
    model: str | None = None
    """The upstream's name for the model; defaults to ``name`` (for ``vendor/*`` the part after)."""
    base_url: str | None = None
    endpoints: list[str] = Field(default_factory=list)
    api_key: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    description: str | None = None
    launch: LaunchConfig | None = None
    max_tokens_default: Annotated[int, Field(gt=0)] | None = None
    """``max_tokens`` sent when the client gives none, for vendors that require one (Anthropic;
    4096 when unset)."""
    system_role: Literal["system", "fold"] = "system"
    """``fold``: the model's chat template has no system role (Gemma 2), so system text is put
    into the user's turn instead (``server/pipeline/system_role.py``)."""
    # Resilience (``server/resilience/chain.py``, README "Resilience").
    retries: Annotated[int, Field(ge=0)] = 2
    """Further attempts after a retryable failure (connection, timeout, 429, 5xx, 529)."""
    backoff: Backoff = Field(default_factory=Backoff)
    deadline: Annotated[float, Field(gt=0)] = 60.0
    """Seconds from the request's arrival after which no new attempt or fallback starts."""
    fallbacks: list[str] = Field(default_factory=list)
    """Models tried in order when this one still fails after its retries."""
    fallback_on_context_length: bool = False
    """Also fall back when this model says the prompt is too long for it."""
    max_concurrency: Annotated[int, Field(ge=1)] | None = None
    """Requests answered at once; unset: no cap."""
    max_queue: Annotated[int, Field(ge=0)] = 0
    """Requests that may wait for a slot; past it, 429 with Retry-After at once."""
    queue_timeout: Annotated[float, Field(gt=0)] = 30.0
    """Seconds a queued request waits for a slot before it gets 429."""
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    upstream_limits: UpstreamLimits | None = None
    """This model's own bounds on what its upstream sends; unset: ``server.upstream_limits``."""
    max_output_tokens: Annotated[int, Field(gt=0)] | None = None
    """Largest ``max_tokens`` / ``max_completion_tokens`` a request may ask of this model (400
    above it); unset: whatever the upstream accepts."""
    max_n: Annotated[int, Field(gt=0)] | None = None
    """Most choices (``n``) a request may ask of this model (400 above it)."""
    required_for_ready: bool | None = None
    """Whether ``/ready`` answers 503 while this model cannot serve; unset: yes for a local
    engine (``provider: vllm``), no for a cloud vendor or another OpenAI-compatible upstream."""

    task: Literal["chat", "embeddings"] | None = None
    """What the model answers: ``chat`` (``/v1/chat/completions``, ``/v1/responses``,
    ``/v1/messages``, ``/v1/completions``) or ``embeddings`` (``/v1/embeddings``). Unset: embeddings
    for a launched pooling engine or an upstream name with "embed" in it, chat otherwise."""
    embedding_batch: Annotated[int, Field(gt=0)] | None = None
    """Most inputs one upstream embeddings request carries; a larger batch is split and put back
    in order. Unset: the vendor's limit (OpenAI 2048, Gemini 100), none for other upstreams."""

    # Filled in by the loader, not the file: the variable an unset ``api_key`` referenced.
    missing_env: str | None = Field(default=None, exclude=True)

    @field_validator("base_url", "endpoints", mode="after")
    @classmethod
    def _http_urls(cls, value: Any) -> Any:
        for url in [value] if isinstance(value, str) else value or []:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> ModelConfig:
        if self.launch is not None and self.provider != "vllm":
            raise ValueError("'launch' is only for provider 'vllm'")
        if self.launch is not None and (self.endpoints or self.base_url):
            raise ValueError("give either 'launch' or 'endpoints'/'base_url', not both")
        if (
            self.launch is None
            and not (self.endpoints or self.base_url)
            and (self.provider in ("vllm", "openai_compatible"))
        ):
            raise ValueError(
                f"provider '{self.provider}' needs 'endpoints', 'base_url' or 'launch'"
            )
        return self

    @property
    def limits(self) -> UpstreamLimits:
        return self.upstream_limits or UpstreamLimits()

    @property
    def total_timeout(self) -> float:
        """Seconds one upstream call may take in all: ``timeouts.total``, else the limits'."""
        return self.timeouts.total or self.limits.total_timeout

    @property
    def upstream_urls(self) -> list[str]:
        urls = list(self.endpoints) or ([self.base_url] if self.base_url else [])
        return [url.rstrip("/") for url in urls]

    @property
    def ready_required(self) -> bool:
        if self.required_for_ready is not None:
            return self.required_for_ready
        return self.provider == "vllm"

    @property
    def embeds(self) -> bool:
        """Whether this entry serves embeddings (and not chat); see ``task``."""
        if self.task is not None:
            return self.task == "embeddings"
        if self.launch is not None:
            return self.launch.pooling
        return "embed" in self.upstream_name(self.name).lower()

    @property
    def is_wildcard(self) -> bool:
        return self.name.endswith("/*")

    def serves(self, name: str) -> bool:
        """Whether a client's model ``name`` is this entry: its own name, or for ``vendor/*`` any
        ``vendor/NAME`` with a non-empty NAME (the one place this rule is written)."""
        if not self.is_wildcard:
            return name == self.name
        prefix = self.name[:-1]
        return len(name) > len(prefix) and name.startswith(prefix)

    def upstream_name(self, public: str) -> str:
        if self.is_wildcard:
            return public[len(self.name) - 1 :]
        return self.model or self.name


class ImageFetchConfig(_Strict):
    """Image URLs Puente fetches itself, for vendors that take only inline images (Gemini)."""

    max_bytes: Annotated[int, Field(gt=0)] = 10 * 1024 * 1024
    """Bytes of one image (fetched or inline ``data:``)."""
    max_images: Annotated[int, Field(ge=0)] = 16
    """Images in one request."""
    max_total_bytes: Annotated[int, Field(gt=0)] = 32 * 1024 * 1024
    """Bytes of all the images of one request together."""
    timeout: Annotated[float, Field(gt=0)] = 10.0
    """Seconds for the whole fetch, redirects included."""
    max_redirects: Annotated[int, Field(ge=0)] = 3
    allow_networks: list[str] = Field(default_factory=list)
    """CIDRs exempt from the refusal of loopback, private, link-local and metadata addresses
    (e.g. an internal image server); empty by default."""

    @field_validator("allow_networks", mode="after")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad one
        return value


class HttpLimits(_Strict):
    """What one client connection may cost before Puente knows who it is (``puente serve``)."""

    max_header_bytes: Annotated[int, Field(gt=0)] = 32 * 1024
    """Bytes of a request's line and headers together; past it, 431 and the connection closed."""
    max_headers: Annotated[int, Field(gt=0)] = 100
    """Header fields in one request; past it, 431."""
    header_timeout: Annotated[float, Field(gt=0)] = 10.0
    """Seconds from a connection's (or a request's) first byte to the end of its headers."""
    keep_alive_timeout: Annotated[int, Field(ge=1)] = 5
    """Seconds an idle keep-alive connection is kept open between requests."""
    max_connections: Annotated[int, Field(ge=1)] | None = 1000
    """Open connections (and requests in flight); past it, new requests get 503. ``null``: no
    cap."""


class CorsConfig(_Strict):
    """Cross-origin requests from browser apps; off unless ``allow_origins`` names some."""

    allow_origins: list[str] = Field(default_factory=list)
    """Exact origins (``https://app.example.com``) or ``*`` for any."""
    allow_headers: list[str] = Field(default_factory=lambda: ["*"])
    """Request headers a browser may send; ``*``: whatever it asks for (SDKs send their own
    ``x-stainless-*`` ones). Origins, not headers, are what keeps other sites out."""
    max_age: Annotated[int, Field(ge=0)] = 600
    """Seconds a browser may cache a preflight answer."""

    @field_validator("allow_origins", mode="after")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and (
                not origin.startswith(("http://", "https://")) or origin.count("/") != 2
            ):
                raise ValueError(f"{origin!r} is not an origin like 'https://app.example.com'")
        return [origin.rstrip("/") for origin in value]


class ServerConfig(_Strict):
    max_body_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    ready_timeout: Annotated[float, Field(gt=0)] = 3.0
    """Seconds each upstream probe of ``/ready`` may take."""
    ready_cache: Annotated[float, Field(ge=0)] = 2.0
    """Seconds a ``/ready`` probe of the upstreams is reused by the calls after it."""
    images: ImageFetchConfig = Field(default_factory=ImageFetchConfig)
    upstream_limits: UpstreamLimits = Field(default_factory=UpstreamLimits)
    http: HttpLimits = Field(default_factory=HttpLimits)
    cors: CorsConfig = Field(default_factory=CorsConfig)
    drain_timeout: Annotated[float, Field(ge=0)] = 30.0
    """On SIGTERM, seconds in-flight requests and streams get to finish (``--drain-timeout``)."""
    drain_delay: Annotated[float, Field(ge=0)] = 0.0
    """On SIGTERM, seconds ``/ready`` answers 503 while new requests are still served, so a load
    balancer stops sending before the listener closes."""
    send_timeout: Annotated[float, Field(gt=0)] = 60.0
    """Seconds a streamed answer waits for a client to take its next piece; past it the client
    counts as gone (a client that never reads would otherwise hold its upstream stream and the
    model's concurrency slot for ever)."""
    console: bool = True
    """The web console at ``/ui`` (``server/console/``); ``false`` answers 404 there."""


class ResponsesConfig(_Strict):
    """Stored responses of ``POST /v1/responses`` (``server/api/responses_api/``)."""

    retention_days: Annotated[float, Field(gt=0)] = 30.0
    """How long a stored response can be continued or read; pruned after that."""
    max_bytes: Annotated[int, Field(gt=0)] = 4 * 1024 * 1024
    """A response whose input and output together exceed this is answered but not stored."""


AuthMode = Literal["keys", "none"]


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    models: list[ModelConfig] = Field(default_factory=list)
    auth: AuthMode | None = None
    """``keys``: every request needs a key; ``none``: none does. Unset: keys are required once one
    exists (or ``PUENTE_ADMIN_KEY`` is set); until then Puente serves only on a loopback address."""
    database_url: str | None = None
    """``postgresql://…`` or ``sqlite:///path``; unset: ``puente.db`` in ``data_dir``."""
    redis_url: str | None = None
    """Shared rate-limit state for several replicas; unset: limits kept in memory."""
    data_dir: str | None = None
    """Where the SQLite file lives; unset: ``$PUENTE_DATA_DIR``, else beside the config file."""
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    personas: list[PersonaConfig] = Field(default_factory=list)
    """Named experts on top of the models (``server/personas/persona.py``); reloaded with SIGHUP."""

    @field_validator("database_url", "redis_url", "data_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # ``${PUENTE_DATABASE_URL:-}`` in the file expands to "" when the variable is unset.
        return None if value == "" else value

    @model_validator(mode="after")
    def _model_limits(self) -> Config:
        # Each model carries its limits, so a provider (and a reload) needs only its own entry.
        limits = self.server.upstream_limits
        models = [
            m if m.upstream_limits is not None else m.model_copy(update={"upstream_limits": limits})
            for m in self.models
        ]
        object.__setattr__(self, "models", models)  # the model is frozen once validated
        return self

    @field_validator("models", mode="after")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        seen: set[str] = set()
        for model in models:
            if model.name in seen:
                raise ValueError(f"model name {model.name!r} is used twice")
            seen.add(model.name)
        return models

    @field_validator("models", mode="after")
    @classmethod
    def _fallback_targets(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        for model in models:
            for target in model.fallbacks:
                if not any(entry.serves(target) for entry in models):
                    raise ValueError(
                        f"model {model.name!r} falls back to {target!r}, which is not configured"
                    )
        return models

    @field_validator("personas", mode="after")
    @classmethod
    def _persona_targets(cls, personas: list[PersonaConfig], info: ValidationInfo) -> Any:
        models: list[ModelConfig] = info.data.get("models") or []
        names = {m.name for m in models}
        check_targets(personas, names, lambda target: any(m.serves(target) for m in models))
        return personas


class _MissingEnv(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _substitute(value: str, environ: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, fallback = match.group(1), match.group(2)
        if name in environ and environ[name] != "":
            return environ[name]
        if fallback is not None:
            return fallback
        raise _MissingEnv(name)

    return _ENV_REF.sub(replace, value)


def _expand(node: Any, environ: Mapping[str, str], where: str) -> Any:
    if isinstance(node, str):
        try:
            return _substitute(node, environ)
        except _MissingEnv as exc:
            raise ConfigError(f"{where}: environment variable {exc.name} is not set") from None
    if isinstance(node, list):
        return [_expand(item, environ, f"{where}[{i}]") for i, item in enumerate(node)]
    if isinstance(node, dict):
        return {key: _expand_field(key, value, environ, where) for key, value in node.items()}
    return node


def _expand_field(key: Any, value: Any, environ: Mapping[str, str], where: str) -> Any:
    return _expand(value, environ, f"{where}.{key}" if where else str(key))


def _expand_model(entry: Any, environ: Mapping[str, str], where: str) -> Any:
    if not isinstance(entry, dict):
        return entry
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key == "api_key" and isinstance(value, str):
            try:
                out[key] = _substitute(value, environ) or None
            except _MissingEnv as exc:
                out[key] = None
                out["missing_env"] = exc.name
            continue
        out[key] = _expand_field(key, value, environ, where)
    return out


def _describe(loc: tuple[int | str, ...], raw: Mapping[str, Any]) -> str:
    """``models[2] (gpt-4o): field 'provider'`` from a pydantic error location."""
    if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], int):
        entries = raw.get(loc[0])
        entry = f"{loc[0]}[{loc[1]}]"
        if isinstance(entries, list) and loc[1] < len(entries):
            item = entries[loc[1]]
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                entry += f" ({item['name']})"
        if len(loc) == 2:
            return entry
        return f"{entry}: field '{param_path(loc[2:])}'"
    return f"field '{param_path(loc)}'"


def parse_config(text: str, source: str, environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "somewhere"
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{source}: {where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with a 'models' list")
    try:
        expanded: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "models" and isinstance(value, list):
                expanded[key] = [_expand_model(m, env, f"models[{i}]") for i, m in enumerate(value)]
            else:
                expanded[key] = _expand(value, env, str(key))
        return Config.model_validate(expanded)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise ConfigError(f"{source}: {_describe(err['loc'], raw)}: {err['msg']}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from None
    return parse_config(text, str(path), environ)


@dataclass(frozen=True, slots=True)
class Settings:
    """What ``create_app`` needs: the configuration and where it came from (for reloads)."""

    config: Config
    config_path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000

    @classmethod
    def from_file(cls, path: str | Path, *, host: str = "127.0.0.1", port: int = 8000) -> Settings:
        return cls(config=load_config(path), config_path=Path(path), host=host, port=port)
