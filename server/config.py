"""The YAML configuration: one file, validated at start, secrets only from the environment.

``${NAME}`` anywhere in a string is replaced by the environment variable ``NAME``
(``${NAME:-fallback}`` gives a fallback). An unset variable in a model's ``api_key`` does not fail
start: that model is left out of the catalogue and answers 404 naming the variable to set.
Anywhere else an unset variable is a configuration error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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

    # Filled in by the loader, not the file: the variable an unset ``api_key`` referenced.
    missing_env: str | None = Field(default=None, exclude=True)

    @field_validator("base_url", "endpoints", mode="after")
    @classmethod
    def _http_urls(cls, value: Any) -> Any:
        for url in [value] if isinstance(value, str) else value or []:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value

    @property
    def upstream_urls(self) -> list[str]:
        urls = list(self.endpoints) or ([self.base_url] if self.base_url else [])
        return [url.rstrip("/") for url in urls]

    @property
    def is_wildcard(self) -> bool:
        return self.name.endswith("/*")

    def upstream_name(self, public: str) -> str:
        if self.is_wildcard:
            return public[len(self.name) - 1 :]
        return self.model or self.name


class ServerConfig(_Strict):
    max_body_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    ready_timeout: Annotated[float, Field(gt=0)] = 3.0
    """Seconds each upstream probe of ``/ready`` may take."""


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    models: list[ModelConfig] = Field(default_factory=list)

    @field_validator("models", mode="after")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        seen: set[str] = set()
        for model in models:
            if model.name in seen:
                raise ValueError(f"model name {model.name!r} is used twice")
            seen.add(model.name)
        return models


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


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for item in loc:
        out += f"[{item}]" if isinstance(item, int) else (f".{item}" if out else str(item))
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
        return f"{entry}: field '{_path(loc[2:])}'"
    return f"field '{_path(loc)}'"


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
