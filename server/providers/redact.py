"""Puente's upstream credentials kept out of everything it relays or logs.

Some upstreams (proxies, gateways, a few vendors) quote the request they refused, its
``Authorization`` header included, in their error message. Puente sends each model's ``api_key``
and the values of its configured ``headers:``; whatever text comes back from that upstream passes
through the model's ``Redactor`` before a client or a log line sees it.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.config import ModelConfig

MASK = "***"
# Shorter values (``1``, ``json``) are not secrets, and masking them would garble messages.
MIN_SECRET = 6


class Redactor:
    def __init__(self, secrets: Iterable[str | None]) -> None:
        found = {s for s in secrets if s and len(s) >= MIN_SECRET}
        # Longest first: a secret that contains another is masked whole.
        self.secrets = tuple(sorted(found, key=len, reverse=True))
        self._raw = tuple(s.encode() for s in self.secrets)

    @classmethod
    def for_model(cls, config: ModelConfig) -> Redactor:
        values: list[str | None] = [config.api_key, *config.headers.values()]
        # "Bearer sk-…": the key alone is masked too, so the scheme word stays readable.
        values += [v.split(" ", 1)[1] for v in config.headers.values() if " " in v]
        return cls(values)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def raw(self, data: bytes) -> bytes:
        for secret in self._raw:
            if secret in data:
                data = data.replace(secret, MASK.encode())
        return data

    def __bool__(self) -> bool:
        return bool(self.secrets)
