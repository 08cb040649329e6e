"""Puente in the test process: the real app on a real socket, served by uvicorn in a thread.

Real clients (the openai SDK sync and async, httpx, curl) reach it over TCP as they would reach
``puente serve``, without the second or two a child process costs to start; providers can be
injected (``tests/fakes/provider.py``). A child process (``tests/support.py``) stays for what
needs one: signals and drain, the CLI, the real engine, socket-level disconnects.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from server.api.envelopes import over_capacity
from server.app import create_app
from server.config import Settings, load_config
from server.lifecycle.http_guard import uvicorn_options
from server.lifecycle.runtime import Runtime
from server.observability.logs import FORMAT
from server.observability.request_context import RequestIdFilter
from server.providers.base import Provider
from tests.support import free_port

_ENV_LOCK = threading.Lock()


class InProcessPuente:
    def __init__(
        self,
        config: dict[str, Any] | str,
        workdir: Path,
        *,
        providers: Mapping[str, Provider] | None = None,
        env: Mapping[str, str] | None = None,
        name: str = "puente",
        own_protocol: bool = True,
    ) -> None:
        self.workdir = workdir
        self.config_path = workdir / f"{name}.yaml"
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)
        self.port = free_port()
        self.providers = providers
        self.env = dict(env or {})
        self.own_protocol = own_protocol
        """``puente serve``'s HTTP protocol (server/lifecycle/http_guard.py), or uvicorn's own,
        as another ASGI server would serve the app."""
        self._log = io.StringIO()
        self._handler = logging.StreamHandler(self._log)
        self._handler.setFormatter(logging.Formatter(FORMAT))
        self._handler.addFilter(RequestIdFilter())
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._saved_env: dict[str, str | None] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def runtime(self) -> Runtime:
        """The app's state, to look at what a client cannot see (generations in flight)."""
        runtime: Runtime = self._app.state.runtime
        return runtime

    def start(self, timeout: float = 30) -> InProcessPuente:
        # The app reads PUENTE_* variables (the admin key) while its lifespan starts.
        with _ENV_LOCK:
            for key, value in self.env.items():
                self._saved_env[key] = os.environ.get(key)
                os.environ[key] = value
        settings = Settings(
            config=load_config(self.config_path), config_path=self.config_path, port=self.port
        )
        self._app = create_app(settings, self.providers)
        http = settings.config.server.http
        options = uvicorn_options(http, over_capacity, self._app.doors) if self.own_protocol else {}
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            loop="asyncio",
            lifespan="on",
            access_log=False,
            log_config=None,
            **options,
        )
        self._server = uvicorn.Server(config)
        logging.getLogger().addHandler(self._handler)
        if logging.getLogger().level > logging.INFO:
            logging.getLogger().setLevel(logging.INFO)
        self._thread = threading.Thread(target=self._run, name=f"puente:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        try:
            while not self._server.started:
                if not self._thread.is_alive():
                    raise RuntimeError(f"puente did not start:\n{self.logs()}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"puente did not come up in {timeout}s:\n{self.logs()}")
                time.sleep(0.02)
        finally:
            # Read at start only: other servers in this process must not see them.
            self._restore_env()
        return self

    def _run(self) -> None:
        assert self._server is not None
        asyncio.run(self._server.serve())

    def logs(self) -> str:
        return self._log.getvalue()

    def stop(self, timeout: float = 20) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)
        logging.getLogger().removeHandler(self._handler)
        self._restore_env()

    def _restore_env(self) -> None:
        with _ENV_LOCK:
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._saved_env.clear()

    def __enter__(self) -> InProcessPuente:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
