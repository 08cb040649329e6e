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
    from server.api.envelopes import over_capacity
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
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop" if has("uvloop") else "asyncio",
        workers=1,
        access_log=False,
        log_config=None,
        # Header size, count and timeout, idle keep-alive, connection cap (server.http); the
        # front doors' POSTs straight to the app's fast path.
        **uvicorn_options(server.http, over_capacity, app.doors),
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
    from server.engine import embedding_model, models, prepare

    python = Path(args.engine_python) if args.engine_python else prepare.default_engine_python()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.embedding:
        target = Path(args.dir) if args.dir else embedding_model.embedding_model_dir()
        try:
            folder = embedding_model.prepare_embedding_model(target, python, force=args.force)
        except prepare.PrepareError as exc:
            print(f"puente: cannot prepare the default embedding model: {exc}", file=sys.stderr)
            return 1
        print(f"default embedding model ready in {folder}")
        return 0
    name = args.name
    if name not in models.MODELS:
        known = ", ".join(models.MODELS)
        print(f"puente: unknown model {name!r}; embedded models: {known}", file=sys.stderr)
        return 2
    target = Path(args.dir) if args.dir else models.model_dir(name)
    try:
        folder = models.prepare_model(
            name, target, python, force=args.force, dtype=args.dtype, progress=print
        )
    except prepare.PrepareError as exc:
        print(f"puente: cannot prepare {name}: {exc}", file=sys.stderr)
        return 1
    print(f"{name} ready in {folder}")
    return 0


def personas_check(args: argparse.Namespace) -> int:
    import asyncio

    from server.personas import check

    settings = Settings.from_file(_config_path(args))
    persona = next((p for p in settings.config.personas if p.name == args.name), None)
    if persona is None:
        print(f"puente: no persona named {args.name!r} in {settings.config_path}", file=sys.stderr)
        return 2
    try:
        if args.file:
            questions = check.battery_from_file(Path(args.file))
        else:
            questions = check.battery_from_persona(persona)
    except check.BatteryError as exc:
        print(f"puente: {exc}", file=sys.stderr)
        return 2
    key = args.key or os.environ.get("PUENTE_API_KEY")
    where = args.url or "this process"
    print(f"{persona.name}: {len(questions)} questions, on {persona.model}, via {where}")

    async def run() -> list[check.Outcome]:
        if args.url:
            client = check.remote(args.url, key)
        else:
            from server.app import create_app

            client = check.in_process(create_app(settings), key)
        async with client as http:
            return await check.ask_all(http, persona, questions, lambda o: print(check.line(o)))

    outcomes = asyncio.run(run())
    print("\n".join(check.totals(outcomes)))
    return 1 if any(o.error for o in outcomes) else 0


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
        "prepare",
        help="download and convert an embedded model for the engine (cached); "
        "smollm2 (default) or qwen2.5-coder-1.5b",
    )
    p.add_argument("name", nargs="?", default="smollm2", help="smollm2 or qwen2.5-coder-1.5b")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        help="qwen2.5-coder-1.5b only (default: bfloat16 on CPUs with native bf16, else float32)",
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

    p = commands.add_parser("personas", help="work on personas")
    personas = p.add_subparsers(dest="personas_command", required=True)
    p = personas.add_parser(
        "check",
        help="ask a persona a battery of questions; print farewells, answers and the totals",
    )
    p.add_argument("name", help="the persona")
    p.add_argument("--config", help=f"YAML file (default: $PUENTE_CONFIG or {DEFAULT_CONFIG})")
    p.add_argument(
        "--file", help="battery YAML (in_scope, out_of_scope, tricky); default: the persona's scope"
    )
    p.add_argument("--url", help="a running Puente (default: start one in this process)")
    p.add_argument("--key", help="API key (default: $PUENTE_API_KEY)")
    p.set_defaults(func=personas_check)

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
