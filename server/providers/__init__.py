"""Providers: one per configured model entry, built from the config by its ``provider`` kind."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp

from server.config import ModelConfig
from server.providers import http1
from server.providers.base import Health, Provider
from server.providers.cloud import CloudClients
from server.providers.openai_compatible import OpenAICompatibleProvider, upstream_pool
from server.providers.vllm import VLLMProvider

log = logging.getLogger("puente")


@dataclass(frozen=True, slots=True)
class Clients:
    """HTTP clients built once in the app's lifespan and shared by every provider."""

    aiohttp: aiohttp.ClientSession
    """The OpenAI-compatible providers' health probes, the engine's ``/tokenize``."""
    cloud: CloudClients = field(default_factory=CloudClients)
    """The cloud vendors' SDK HTTP pool and the image fetcher (built on first use)."""
    upstream: http1.Pool = field(default_factory=upstream_pool)
    """The OpenAI-compatible providers' requests (chat, completions, embeddings)."""


ProviderFactory = Callable[[ModelConfig, Clients], Provider]


def _openai_compatible(config: ModelConfig, clients: Clients) -> Provider:
    return OpenAICompatibleProvider(config, clients.aiohttp, clients.upstream)


def _vllm(config: ModelConfig, clients: Clients) -> Provider:
    return VLLMProvider(config, clients.aiohttp, clients.upstream)


# The vendor SDKs take a second or two to import: only a configuration that names one pays it.
def _openai(config: ModelConfig, clients: Clients) -> Provider:
    from server.providers.openai_provider import OpenAIProvider  # noqa: PLC0415

    return OpenAIProvider(config, clients.cloud)


def _anthropic(config: ModelConfig, clients: Clients) -> Provider:
    from server.providers.anthropic_provider import AnthropicProvider  # noqa: PLC0415

    return AnthropicProvider(config, clients.cloud)


def _gemini(config: ModelConfig, clients: Clients) -> Provider:
    from server.providers.gemini_provider import GeminiProvider  # noqa: PLC0415

    return GeminiProvider(config, clients.cloud)


FACTORIES: dict[str, ProviderFactory] = {
    "openai_compatible": _openai_compatible,
    "vllm": _vllm,
    "openai": _openai,
    "anthropic": _anthropic,
    "gemini": _gemini,
}


async def close_providers(providers: Iterable[Provider]) -> None:
    """Close each provider; one that fails to close is logged and the others still close."""
    for provider in providers:
        try:
            await provider.aclose()
        except Exception:
            log.exception("closing provider %s failed", provider.kind)


def build_provider(config: ModelConfig, clients: Clients) -> Provider:
    try:
        factory = FACTORIES[config.provider]
    except KeyError:
        raise ValueError(f"provider '{config.provider}' is not available") from None
    return factory(config, clients)


__all__ = [
    "FACTORIES",
    "Clients",
    "Health",
    "Provider",
    "ProviderFactory",
    "build_provider",
    "close_providers",
]
