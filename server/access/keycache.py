"""Known key digests, kept in memory so a request with a known key costs no database round trip
(and, on SQLite, no hop to the reader thread).

What is kept is what the database answered for a digest: the key (active, expired or revoked:
its state is worked out again on every request) or "no such key". It is trusted only while the
store's ``key_epoch`` is unchanged; the epoch moves on whenever a key is created or revoked:

- in the process that revoked a key (the admin API, the console): at once (``forget_all``);
- SQLite, in every other process on the same file (``puente keys revoke``, replicas on one
  host): within ``WATCH_INTERVAL`` (50 ms), when the store's watch thread next sees
  ``PRAGMA data_version`` move;
- Postgres, on the other replicas: within the time a ``NOTIFY`` takes to reach them
  (milliseconds); while a replica's LISTEN connection is down, it caches nothing.

Redis (``redis_url``) holds rate limits only; keys live in the store, so the store is what
tells replicas about key changes.

A lookup that started before a change and ends after it is not kept (``generation``).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final

from server.access.keys import ApiKey

# Digests kept, valid and unknown alike; beyond that the oldest are forgotten, so a flood of
# made-up keys costs lookups, never memory.
MAX_KNOWN: Final = 10_000


class Missing:
    pass


MISSING: Final = Missing()


class KeyCache:
    def __init__(self, size: int = MAX_KNOWN) -> None:
        self.size = size
        self._known: dict[str, ApiKey | None] = {}
        self._epoch: Hashable | None = None
        self.generation = 0
        """Moves on whenever everything is forgotten."""

    def get(self, digest: str, epoch: Hashable | None) -> ApiKey | Missing | None:
        if epoch is None:
            return MISSING
        if epoch != self._epoch:
            self.forget_all()
            self._epoch = epoch
            return MISSING
        return self._known.get(digest, MISSING)

    def put(self, digest: str, key: ApiKey | None, epoch: Hashable | None, generation: int) -> None:
        """Keep what the database answered, unless anything changed since it was asked."""
        if epoch is None or epoch != self._epoch or generation != self.generation:
            return
        known = self._known
        if len(known) >= self.size:
            del known[next(iter(known))]
        known[digest] = key

    def forget_all(self) -> None:
        self._known.clear()
        self.generation += 1
