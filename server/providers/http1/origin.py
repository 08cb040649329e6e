"""Where a URL's request goes: its origin (the key of the pool) and its request target."""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlsplit


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int
    host_header: str
    """The ``Host`` header's value (the port left out where it is the scheme's own)."""


@lru_cache(maxsize=1024)
def split_url(url: str) -> tuple[Origin, str]:
    """``url`` as its origin and the request target (path and query); cached, as a provider
    posts to a few URLs many times."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    header = host if port == default else f"{host}:{port}"
    return Origin(scheme, parts.hostname, port, header), target
