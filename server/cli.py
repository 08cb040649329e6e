"""The ``puente`` command (also ``python -m server``)."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from server.config import ConfigError, Settings

DEFAULT_CONFIG = "puente.yaml"

Command = Callable[[argparse.Namespace], int]


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("PUENTE_CONFIG") or DEFAULT_CONFIG)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.access import StartRefused, check_start
    from server.app import create_app
    from server.lifecycle import drain
    from server.lifecycle.http_guard import uvicorn_options
    from server.observability.logs import configure_logging

    settings = Settings.from_file(_config_path(args), host=args.host, port=args.port)
    configure_logging(args.log_level)
    try:
        check_start(settings)  # its database and Redis answer; no open port without keys
    except StartRefused as exc:
        print(f"puente: {exc}", file=sys.stderr)
        return 2
    has = importlib.util.find_spec
    server = settings.config.server
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        loop="uvloop" if has("uvloop") else "asyncio",
        workers=1,
        access_log=False,
        log_config=None,
        # Header size, count and timeout, idle keep-alive, connection cap (server.http).
        **uvicorn_options(server.http),
    )
    drain_timeout = server.drain_timeout if args.drain_timeout is None else args.drain_timeout
    # SIGTERM: /ready turns 503, then the listener closes and requests drain
    # (server/lifecycle/drain.py).
    drain.run(config.app, config, drain_timeout=drain_timeout, drain_delay=server.drain_delay)
    return 0


def check_config(args: argparse.Namespace) -> int:
    settings = Settings.from_file(_config_path(args))
    for model in settings.config.models:
        state = f"disabled, set {model.missing_env}" if model.missing_env else "ok"
        print(f"{model.name}: {model.provider} ({state})")
    for persona in settings.config.personas:
        print(f"{persona.name}: persona on {persona.model}")
    return 0


def models_prepare(args: argparse.Namespace) -> int:
    from server.engine import embedding_model, prepare

    python = Path(args.engine_python) if args.engine_python else prepare.default_engine_python()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.embedding:
        what, default_dir = "embedding model", embedding_model.embedding_model_dir()
        make = embedding_model.prepare_embedding_model
    else:
        what, default_dir, make = (
            "model",
            prepare.default_model_dir(),
            prepare.prepare_default_model,
        )
    target = Path(args.dir) if args.dir else default_dir
    try:
        folder = make(target, python, force=args.force)
    except prepare.PrepareError as exc:
        print(f"puente: cannot prepare the default {what}: {exc}", file=sys.stderr)
        return 1
    print(f"default {what} ready in {folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="puente", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="run the server")
    p.add_argument("--config", help=f"YAML file (default: $PUENTE_CONFIG or {DEFAULT_CONFIG})")
    p.add_argument("--host", default=os.environ.get("PUENTE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PUENTE_PORT", "8000")))
    p.add_argument("--log-level", default=os.environ.get("PUENTE_LOG_LEVEL", "info"))
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="seconds in-flight requests get to finish on shutdown (default: server.drain_timeout"
        " in the config, 30)",
    )
    p.set_defaults(func=serve)

    p = commands.add_parser("models", help="manage local models")
    models = p.add_subparsers(dest="models_command", required=True)
    p = models.add_parser(
        "prepare", help="convert the embedded default model (SmolLM2) for the engine; cached"
    )
    p.add_argument("--dir", help="output folder (default: $PUENTE_CACHE_DIR/models/...)")
    p.add_argument("--engine-python", help="the engine venv's python (default: .venv-engine)")
    p.add_argument("--force", action="store_true", help="convert again even if cached")
    p.add_argument(
        "--embedding",
        action="store_true",
        help="the embedded embedding model (all-MiniLM-L6-v2) instead of the chat model",
    )
    p.set_defaults(func=models_prepare)

    p = commands.add_parser("check-config", help="validate a configuration file and exit")
    p.add_argument("--config")
    p.set_defaults(func=check_config)

    from server.access.cli import add_key_commands

    add_key_commands(commands, lambda args: Settings.from_file(_config_path(args)))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"puente: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
