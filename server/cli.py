"""The ``puente`` command (also ``python -m server``)."""

from __future__ import annotations

import argparse
import importlib.util
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

    from server.app import create_app
    from server.logs import configure_logging

    settings = Settings.from_file(_config_path(args), host=args.host, port=args.port)
    configure_logging(args.log_level)
    has = importlib.util.find_spec
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        loop="uvloop" if has("uvloop") else "asyncio",
        http="httptools" if has("httptools") else "h11",
        workers=1,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=args.drain_timeout,
    )
    return 0


def check_config(args: argparse.Namespace) -> int:
    settings = Settings.from_file(_config_path(args))
    for model in settings.config.models:
        state = f"disabled, set {model.missing_env}" if model.missing_env else "ok"
        print(f"{model.name}: {model.provider} ({state})")
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
        default=30.0,
        help="seconds in-flight requests get to finish on shutdown",
    )
    p.set_defaults(func=serve)

    p = commands.add_parser("check-config", help="validate a configuration file and exit")
    p.add_argument("--config")
    p.set_defaults(func=check_config)
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
