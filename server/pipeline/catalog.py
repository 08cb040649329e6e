"""Public model name → the configured entry, the provider that serves it and its upstream name."""

from __future__ import annotations

from dataclasses import dataclass

from server.config import ModelConfig
from server.errors import ModelNotFound
from server.providers.base import Provider


@dataclass(frozen=True, slots=True)
class Route:
    config: ModelConfig
    provider: Provider
    upstream_model: str

    @property
    def kind(self) -> str:
        return self.provider.kind


class Catalog:
    def __init__(self, models: list[ModelConfig], providers: dict[str, Provider]) -> None:
        self._exact: dict[str, ModelConfig] = {}
        # Longest prefix first, so ``openai/gpt-4*`` would win over ``openai/*``.
        self._wildcards: list[ModelConfig] = []
        self._providers = providers
        for model in models:
            if model.is_wildcard:
                self._wildcards.append(model)
            else:
                self._exact[model.name] = model
        self._wildcards.sort(key=lambda m: len(m.name), reverse=True)
        # An exact name's route is the same on every request: made once per configuration.
        self._routes = {
            name: Route(config, providers[name], config.upstream_name(name))
            for name, config in self._exact.items()
            if not config.missing_env and name in providers
        }

    def _config(self, name: str) -> ModelConfig | None:
        config = self._exact.get(name)
        if config is not None:
            return config
        return next((w for w in self._wildcards if w.serves(name)), None)

    def resolve(self, name: str) -> Route:
        route = self._routes.get(name)
        if route is not None:
            return route
        config = self._config(name)
        if config is None:
            raise ModelNotFound.named(name)
        if config.missing_env:
            raise ModelNotFound(
                f"The model '{name}' is configured but not available: "
                f"set the environment variable {config.missing_env} and restart Puente."
            )
        return Route(config, self._providers[config.name], config.upstream_name(name))

    def available(self) -> list[ModelConfig]:
        """Configured models that can serve, in configuration order."""
        return [m for m in [*self._exact.values(), *self._wildcards] if not m.missing_env]

    @property
    def providers(self) -> dict[str, Provider]:
        return self._providers
