"""Deterministic stand-in embeddings for the fakes: the same text always gets the same unit
vector, different texts different ones, so a test can tell which vector belongs to which input."""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any

DIMENSIONS = 8


def vector(item: Any, dimensions: int | None = None) -> list[float]:
    """A unit vector for a text (or a list of token ids), as float32 values."""
    size = dimensions or DIMENSIONS
    seed = repr(item).encode()
    raw: list[float] = []
    counter = 0
    while len(raw) < size:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        raw += [b / 255.0 - 0.5 for b in digest]
        counter += 1
    raw = raw[:size]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    # Rounded through float32, as a real engine's vectors are.
    return [struct.unpack("<f", struct.pack("<f", x / norm))[0] for x in raw]


def tokens(item: Any) -> int:
    return len(item) if isinstance(item, list) else len(str(item).split()) + 2
