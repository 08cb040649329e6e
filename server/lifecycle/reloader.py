"""Reloading models and personas from the configuration file while serving.

Triggered by SIGHUP or ``POST /admin/reload``. The file is loaded and validated first; a bad file
is refused (the error logged, and returned to an HTTP caller) and the running configuration kept.
A good one is applied without dropping requests in flight:

1. providers for new or changed model entries are built and started *before* anything changes
   (an unchanged entry keeps its provider, so a persona edit never restarts an engine). A changed
   launched vLLM entry whose engine would be the same (``launch`` and served name unchanged)
   gets a provider around the running engine; one that needs a new engine waits, while the old
   provider and engine go on serving, until the new engine is ready (``EngineNotStarted`` and
   the old configuration kept if it fails or passes ``launch.startup_timeout``);
2. the pipeline's snapshot (catalog, personas, generation) is swapped in one assignment, so each
   request sees one whole configuration, old or new;
3. providers only the old configuration used are closed once every request routed before the
   swap has finished.

The ``server:`` section (listen address, body limit) and the access settings (``auth``,
``database_url``, ``redis_url``) are read at start only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from server.config import Config, ConfigError, Settings, load_config
from server.errors import InvalidRequest, ServiceUnavailable
from server.pipeline.catalog import Catalog
from server.pipeline.pipeline import Pipeline
from server.providers import Clients, Provider, build_provider, close_providers
from server.providers.base import EngineOwner
from server.providers.vllm import EngineNotReady

log = logging.getLogger("puente.reload")


class ConfigRejected(InvalidRequest):
    """The configuration file could not be used; the running configuration is unchanged."""

    kind = "invalid_config"

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_config")


class EngineNotStarted(ServiceUnavailable):
    """A changed model's new engine did not become ready; the running configuration is kept."""

    kind = "engine_not_ready"

    def __init__(self, message: str) -> None:
        super().__init__(message, code="engine_not_ready")


def _waits_for_engine(name: str, previous: Provider, provider: Provider) -> bool:
    """Whether the swap waits for ``provider``'s new engine: yes, unless both engines want the
    same fixed ``launch.port``, where the new one can only start once the old one is gone."""
    if not (isinstance(provider, EngineOwner) and provider.replaces_engine):
        return False
    port = provider.engine_port
    if port is not None and isinstance(previous, EngineOwner) and previous.engine_port == port:
        log.warning(
            "model %s: the new engine wants the running one's port %d, so it starts once "
            "the old one has stopped; the model answers 503 model_loading meanwhile",
            name,
            port,
        )
        return False
    return True


class Reloader:
    def __init__(self, settings: Settings, clients: Clients, pipeline: Pipeline) -> None:
        self.settings = settings
        self.clients = clients
        self.pipeline = pipeline
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._to_close: list[Provider] = []
        self._signalled: set[asyncio.Task[None]] = set()

    async def reload(self) -> Config:
        """Apply the configuration file now; raises ``ConfigRejected`` and keeps the old one."""
        async with self._lock:
            pipeline = self.pipeline
            if pipeline.drain.draining:
                raise ServiceUnavailable("Puente is shutting down; not reloading.")
            path = self.settings.config_path
            if path is None:
                raise ConfigRejected("Puente was started without a configuration file.")
            try:
                config = load_config(path)
            except ConfigError as exc:
                log.error("reload refused, keeping the running configuration: %s", exc)
                raise ConfigRejected(f"Reload refused: {exc}") from None
            providers, fresh, handovers = await self._providers_for(config)
            old = pipeline.snapshot.catalog.providers
            # Unchanged entries keep their very config object too, which keeps their state
            # keyed on it (circuit breakers, concurrency caps in server/resilience/chain.py).
            running = {m.name: m for m in pipeline.snapshot.catalog.available()}
            models = [running[m.name] if running.get(m.name) == m else m for m in config.models]
            # The swap: no await from here to the end of the block, so no request sees half of it.
            for previous, successor in handovers:
                successor.take_engine(previous)
            generation = pipeline.swap(config, Catalog(models, providers))
            kept = {id(p) for p in providers.values()}
            retired = [p for p in old.values() if id(p) not in kept]
            log.info(
                "configuration reloaded from %s: models %s; personas %s (%d new, %d retired)",
                path,
                ", ".join(m.name for m in config.models) or "none",
                ", ".join(p.name for p in config.personas) or "none",
                len(fresh),
                len(retired),
            )
            if retired:
                self._to_close.extend(retired)
                task = asyncio.create_task(self._retire(retired, generation))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            return config

    async def _providers_for(
        self, config: Config
    ) -> tuple[dict[str, Provider], list[Provider], list[tuple[EngineOwner, EngineOwner]]]:
        snapshot = self.pipeline.snapshot
        running = {m.name: m for m in snapshot.config.models}
        old = snapshot.catalog.providers
        providers: dict[str, Provider] = {}
        fresh: list[Provider] = []
        handovers: list[tuple[EngineOwner, EngineOwner]] = []
        # Changed models whose new engine must be ready before the swap.
        loading: list[tuple[str, EngineOwner]] = []
        try:
            for model in config.models:
                previous = old.get(model.name)
                if running.get(model.name) == model and previous is not None:
                    providers[model.name] = previous
                    continue
                provider: Provider
                successor = (
                    previous.successor(model, self.clients.aiohttp)
                    if isinstance(previous, EngineOwner)
                    else None
                )
                if successor is not None:
                    # Same engine asked for: the new provider goes on with the running one.
                    assert isinstance(previous, EngineOwner)
                    provider = successor
                    handovers.append((previous, successor))
                    log.info("model %s changed; it keeps its running engine", model.name)
                else:
                    provider = build_provider(model, self.clients)
                    if previous is not None and _waits_for_engine(model.name, previous, provider):
                        assert isinstance(provider, EngineOwner)
                        loading.append((model.name, provider))
                fresh.append(provider)
                providers[model.name] = provider
                await provider.start()
            await self._engines_ready(loading)
        except EngineNotStarted as exc:
            await close_providers(fresh)
            log.error("reload refused, keeping the running configuration: %s", exc.message)
            raise
        except Exception as exc:
            # A provider that cannot be built or started (unknown kind, engine that fails to
            # launch) refuses the whole file, like a validation error would.
            await close_providers(fresh)
            log.error("reload refused, keeping the running configuration: %s", exc)
            raise ConfigRejected(f"Reload refused: {exc}") from None
        except BaseException:
            await close_providers(fresh)
            raise
        return providers, fresh, handovers

    async def _engines_ready(self, loading: list[tuple[str, EngineOwner]]) -> None:
        """Wait for the new engines of changed models; until then their old providers (and
        engines) go on serving, so clients never see ``model_loading`` because of a reload."""
        if not loading:
            return
        names = ", ".join(name for name, _ in loading)
        log.info("reload waits for the new engine of %s; the running one serves meanwhile", names)
        results = await asyncio.gather(
            *(p.engine_ready(lambda: self.pipeline.drain.draining) for _, p in loading),
            return_exceptions=True,
        )
        for (name, _), result in zip(loading, results, strict=True):
            if isinstance(result, EngineNotReady):
                raise EngineNotStarted(
                    f"Reload refused: the new engine for model '{name}' did not become ready "
                    f"({result}); the running configuration is kept."
                )
            if isinstance(result, BaseException):
                raise result
        log.info("new engine(s) ready for %s", names)

    async def _retire(self, providers: list[Provider], generation: int) -> None:
        generations = self.pipeline.generations
        waiting = generations.in_flight_before(generation)
        if waiting:
            log.info("closing %d retired provider(s) after %d request(s)", len(providers), waiting)
        await generations.drained(generation)
        closing = {id(p) for p in providers}
        self._to_close = [p for p in self._to_close if id(p) not in closing]
        await close_providers(providers)
        log.info("closed %d retired provider(s)", len(providers))

    # -- SIGHUP ------------------------------------------------------------------------------

    def install_signal(self) -> None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError):
            # Not the main thread (an in-process test client) or no SIGHUP (Windows).
            log.debug("SIGHUP reload not available in this process")

    def _on_sighup(self) -> None:
        log.info("SIGHUP received: reloading the configuration")
        task = asyncio.create_task(self._reload_logged())
        self._signalled.add(task)
        task.add_done_callback(self._signalled.discard)

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except (ConfigRejected, EngineNotStarted):
            pass  # logged with its reason where it was refused
        except ServiceUnavailable as exc:
            log.warning("SIGHUP ignored: %s", exc.message)

    async def aclose(self) -> None:
        """At shutdown, after requests drained: stop listening and close what is retiring."""
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in [*self._signalled, *self._retiring]:
            task.cancel()
        await asyncio.gather(*self._signalled, *self._retiring, return_exceptions=True)
        pending, self._to_close = self._to_close, []
        await close_providers(pending)
