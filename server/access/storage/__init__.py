"""Where keys and usage rows live: SQLite by default, Postgres when ``database_url`` says so."""

from __future__ import annotations

import os
from pathlib import Path

from server.access.storage.base import (
    KeyNameTaken,
    StorageError,
    Store,
    StoredResponse,
    UsageRow,
    UsageTotal,
)
from server.access.storage.postgres import PostgresStore
from server.access.storage.sqlite import SQLiteStore
from server.config import ConfigError, Settings

DB_FILE = "puente.db"
_SQLITE = "sqlite:///"


def data_dir(settings: Settings) -> Path:
    """``data_dir`` from the file, else ``$PUENTE_DATA_DIR``, else beside the config file when
    that folder is writable (a config mounted read-only in a container is not), else the working
    directory."""
    base = settings.config_path.parent if settings.config_path else Path.cwd()
    configured = settings.config.data_dir or os.environ.get("PUENTE_DATA_DIR")
    if configured:
        return (base / configured).resolve()
    if os.access(base, os.W_OK):
        return base.resolve()
    return Path.cwd().resolve()


def database_url(settings: Settings) -> str:
    """The configured URL; a relative SQLite path is taken from the config file's folder."""
    url = settings.config.database_url
    if not url:
        return f"sqlite:///{data_dir(settings) / DB_FILE}"
    if url.startswith(_SQLITE) and not Path(url[len(_SQLITE) :]).is_absolute():
        base = settings.config_path.parent if settings.config_path else Path.cwd()
        return f"{_SQLITE}{(base / url[len(_SQLITE) :]).resolve()}"
    return url


def open_store(url: str) -> Store:
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    if url.startswith(_SQLITE):
        return SQLiteStore(Path(url[len(_SQLITE) :]))
    scheme = url.split(":", 1)[0]
    raise ConfigError(
        f"database_url: {scheme!r} is not supported; use postgresql://… or sqlite:///path"
    )


__all__ = [
    "KeyNameTaken",
    "StorageError",
    "Store",
    "StoredResponse",
    "UsageRow",
    "UsageTotal",
    "data_dir",
    "database_url",
    "open_store",
]
