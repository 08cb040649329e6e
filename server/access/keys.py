"""API keys: how one is made, what is kept of it (a hash), and what it may use.

A key is ``sk-pnt-`` followed by 32 random bytes (``secrets.token_urlsafe``). Only its SHA-256 is
stored: a key has 256 bits of entropy, so a fast hash is enough (slow password hashes protect
guessable secrets, and would cost milliseconds on every request). The secret is shown once, when
it is created; afterwards only its ``hint`` (prefix and last four characters) identifies it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

KEY_PREFIX = "sk-pnt-"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

KeyState = Literal["active", "expired", "revoked"]


def generate_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())


def _hint(secret: str) -> str:
    return f"{KEY_PREFIX}…{secret[-4:]}"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per key; ``None`` is unlimited. Tokens are prompt + completion as the upstream reported."""

    rpm: int | None = None
    tpm: int | None = None
    budget_day: int | None = None
    budget_month: int | None = None

    @property
    def counts_tokens(self) -> bool:
        return bool(self.tpm or self.budget_day or self.budget_month)


@lru_cache(maxsize=1024)
def _matcher(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One compiled pattern per distinct model list (translating the wildcards on every request
    cost more than the match)."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or r"(?!)")


_EVERY_MODEL = ("*",)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as stored: everything but the secret."""

    id: str
    name: str
    key_hash: str
    hint: str
    models: tuple[str, ...] = ("*",)
    """Model and persona names this key may use; ``*`` and ``?`` are wildcards."""
    limits: Limits = field(default_factory=Limits)
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None

    def state(self, now: float | None = None) -> KeyState:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and (now or time.time()) >= self.expires_at:
            return "expired"
        return "active"

    def allows(self, model: str) -> bool:
        if self.models == _EVERY_MODEL:
            return True  # most keys: no pattern to match
        return _matcher(self.models).fullmatch(model) is not None

    def public(self) -> dict[str, object]:
        """What the admin API and ``puente keys list`` show: never the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "hint": self.hint,
            "models": list(self.models),
            "rpm": self.limits.rpm,
            "tpm": self.limits.tpm,
            "budget_day": self.limits.budget_day,
            "budget_month": self.limits.budget_month,
            "created_at": int(self.created_at),
            "expires_at": None if self.expires_at is None else int(self.expires_at),
            "revoked_at": None if self.revoked_at is None else int(self.revoked_at),
            "state": self.state(),
        }


class InvalidKeySpec(ValueError):
    """A key that cannot be created as asked; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What the CLI or the admin API asks for when creating a key."""

    name: str
    models: tuple[str, ...] = ("*",)
    limits: Limits = field(default_factory=Limits)
    expires_at: float | None = None

    def validate(self, now: float) -> None:
        if not NAME_PATTERN.match(self.name):
            raise InvalidKeySpec(
                f"name {self.name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if not self.models or any(not m.strip() for m in self.models):
            raise InvalidKeySpec("models: give at least one name or pattern ('*' for all)")
        for label, value in (
            ("rpm", self.limits.rpm),
            ("tpm", self.limits.tpm),
            ("budget_day", self.limits.budget_day),
            ("budget_month", self.limits.budget_month),
        ):
            if value is not None and value <= 0:
                raise InvalidKeySpec(f"{label}: must be a positive number (omit it for no limit)")
        if self.expires_at is not None and self.expires_at <= now:
            raise InvalidKeySpec("expires_at: is in the past")


def mint(spec: KeySpec, now: float | None = None) -> tuple[str, ApiKey]:
    """A new key: the secret (to show once) and the record to store."""
    now = time.time() if now is None else now
    spec.validate(now)
    secret = generate_secret()
    key = ApiKey(
        id="key_" + secrets.token_hex(8),
        name=spec.name,
        key_hash=hash_secret(secret),
        hint=_hint(secret),
        models=tuple(m.strip() for m in spec.models),
        limits=spec.limits,
        created_at=now,
        expires_at=spec.expires_at,
    )
    return secret, key


_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(text: str, now: float) -> float | None:
    """``30d`` / ``12h`` / ``90m`` from now, an ISO date or time (UTC unless it says), or
    ``never``."""
    text = text.strip()
    if text.lower() in ("", "never", "none"):
        return None
    match = _DURATION.match(text)
    if match:
        return now + int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidKeySpec(
            f"expiry {text!r}: use a duration (30d, 12h, 90m), a date (2026-12-31) or 'never'"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
