"""Reloading models and personas from the configuration file while serving.

Triggered by SIGHUP or ``POST /admin/reload``. The file is loaded and validated first; a bad file
is refused (the error logged, and returned to an HTTP caller) and the running configuration kept.
A good one is applied without dropping requests in flight:

1. providers for new or changed model entries are built and started *before* anything changes
   (an unchanged entry keeps its provider, so a persona edit never restarts an engine);
2. the router and the persona table are swapped together, synchronously, so each request sees
   one whole configuration, old or new;
3. providers only the old configuration used are closed once every request routed before the
   swap has finished.

The ``server:`` section (listen address, body limit) and the access settings (``auth``,
``database_url``, ``redis_url``) are read at start only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal

from server.config import Config, ConfigError, load_config
from server.errors import InvalidRequest, ServiceUnavailable
from server.personas import Personas
from server.providers import Provider, build_provider
from server.router import Router
from server.runtime import Runtime

log = logging.getLogger("puente.reload")


class ConfigRejected(InvalidRequest):
    """The configuration file could not be used; the running configuration is unchanged."""

    kind = "invalid_config"

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_config")


class Reloader:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._to_close: list[Provider] = []
        self._signalled: set[asyncio.Task[None]] = set()

    async def reload(self) -> Config:
        """Apply the configuration file now; raises ``ConfigRejected`` and keeps the old one."""
        async with self._lock:
            runtime = self.runtime
            if runtime.draining:
                raise ServiceUnavailable("Puente is shutting down; not reloading.")
            path = runtime.settings.config_path
            if path is None:
                raise ConfigRejected("Puente was started without a configuration file.")
            try:
                config = load_config(path)
            except ConfigError as exc:
                log.error("reload refused, keeping the running configuration: %s", exc)
                raise ConfigRejected(f"Reload refused: {exc}") from None
            providers, fresh = await self._providers_for(config)
            old = runtime.router.providers
            # Unchanged entries keep their very config object too, which keeps their state
            # keyed on it (circuit breakers, concurrency caps in server/resilience.py).
            running = {m.name: m for m in runtime.router.available()}
            models = [running[m.name] if running.get(m.name) == m else m for m in config.models]
            router = Router(models, providers)
            # The swap: no await from here to the end of the block, so no request sees half of it.
            runtime.settings = dataclasses.replace(runtime.settings, config=config)
            runtime.router = router
            runtime.gateway.router = router
            runtime.gateway.personas = Personas(config.personas)
            generation = runtime.gateway.generations.advance()
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

    async def _providers_for(self, config: Config) -> tuple[dict[str, Provider], list[Provider]]:
        runtime = self.runtime
        running = {m.name: m for m in runtime.settings.config.models}
        old = runtime.router.providers
        providers: dict[str, Provider] = {}
        fresh: list[Provider] = []
        try:
            for model in config.models:
                if running.get(model.name) == model and model.name in old:
                    providers[model.name] = old[model.name]
                    continue
                provider = build_provider(model, runtime.clients)
                fresh.append(provider)
                providers[model.name] = provider
                await provider.start()
        except Exception as exc:
            # A provider that cannot be built or started (unknown kind, engine that fails to
            # launch) refuses the whole file, like a validation error would.
            await _close_all(fresh)
            log.error("reload refused, keeping the running configuration: %s", exc)
            raise ConfigRejected(f"Reload refused: {exc}") from None
        except BaseException:
            await _close_all(fresh)
            raise
        return providers, fresh

    async def _retire(self, providers: list[Provider], generation: int) -> None:
        waiting = self.runtime.gateway.generations.in_flight_before(generation)
        if waiting:
            log.info("closing %d retired provider(s) after %d request(s)", len(providers), waiting)
        await self.runtime.gateway.generations.drained(generation)
        closing = {id(p) for p in providers}
        self._to_close = [p for p in self._to_close if id(p) not in closing]
        await _close_all(providers)
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
        except ConfigRejected:
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
        await _close_all(pending)


async def _close_all(providers: list[Provider]) -> None:
    for provider in providers:
        try:
            await provider.aclose()
        except Exception:
            log.exception("closing provider %s failed", provider.kind)
