"""Providers: one per configured model entry, built from the config by its ``provider`` kind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import httpx

from server.config import ModelConfig
from server.providers.base import Health, Provider
from server.providers.openai_compatible import OpenAICompatibleProvider


@dataclass(frozen=True, slots=True)
class Clients:
    """HTTP clients built once in the app's lifespan and shared by every provider."""

    aiohttp: aiohttp.ClientSession
    httpx: httpx.AsyncClient


ProviderFactory = Callable[[ModelConfig, Clients], Provider]


def _openai_compatible(config: ModelConfig, clients: Clients) -> Provider:
    return OpenAICompatibleProvider(config, clients.aiohttp)


FACTORIES: dict[str, ProviderFactory] = {
    "openai_compatible": _openai_compatible,
}


def build_provider(config: ModelConfig, clients: Clients) -> Provider:
    try:
        factory = FACTORIES[config.provider]
    except KeyError:
        raise ValueError(f"provider '{config.provider}' is not available") from None
    return factory(config, clients)


__all__ = ["FACTORIES", "Clients", "Health", "Provider", "ProviderFactory", "build_provider"]
