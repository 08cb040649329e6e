"""Access: API keys, what each may use and how much, and a usage row for every request.

keys.py             making keys, hashing them, matching model patterns
auth.py             key → Principal (the FastAPI dependency), admission (404 / 429), listener
ratelimit.py        requests/tokens per minute and budgets, in memory
ratelimit_redis.py  the same counts in Redis, shared by replicas
usage.py            usage rows written in batches off the request path
storage/            SQLite (default) or Postgres: keys, usage, versioned migrations
startup.py          building all of it in the lifespan; the check before serving
cli.py              ``puente keys create|list|revoke|usage``
"""

from server.access.auth import Access, Principal
from server.access.startup import StartRefused, check_start, start_access

__all__ = [
    "Access",
    "Principal",
    "StartRefused",
    "check_start",
    "start_access",
]
