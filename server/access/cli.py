"""``puente keys create|list|revoke|usage``: key management straight on the configured database,
so it works whether or not Puente is running (a running Puente sees a change on its next request).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from server.access.keys import InvalidKeySpec, KeySpec, Limits, mint, parse_expiry
from server.access.periods import day_range
from server.access.startup import StartRefused, open_migrated
from server.access.storage import KeyNameTaken, StorageError, Store
from server.config import Settings

SettingsLoader = Callable[[argparse.Namespace], Settings]


def add_key_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], load: SettingsLoader
) -> None:
    keys = commands.add_parser("keys", help="manage API keys and see their usage")
    sub = keys.add_subparsers(dest="keys_command", required=True)

    def command(
        name: str, help: str, run: Callable[[argparse.Namespace, Store], Awaitable[int]]
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--config", help="YAML file (default: $PUENTE_CONFIG or puente.yaml)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=lambda args: _run(load(args), args, run))
        return p

    p = command("create", "create a key and print it (the only time it is shown)", _create)
    p.add_argument("name", help="a label: letters, digits, '.', '_', '-'")
    p.add_argument(
        "--models",
        default="*",
        help="comma-separated model and persona names it may use, with * wildcards (default: *)",
    )
    p.add_argument("--rpm", type=int, help="requests per minute")
    p.add_argument("--tpm", type=int, help="tokens per minute")
    p.add_argument("--budget-day", type=int, help="tokens per UTC day")
    p.add_argument("--budget-month", type=int, help="tokens per UTC month")
    p.add_argument("--expires", default="never", help="30d, 12h, 2026-12-31 or never")

    command("list", "list keys (never the keys themselves)", _list)

    p = command("revoke", "revoke a key; the next request with it gets 401", _revoke)
    p.add_argument("name")

    p = command("usage", "requests and tokens per key and model by day", _usage)
    p.add_argument("--key", help="only this key")
    p.add_argument("--days", type=int, default=30, help="the last N UTC days (default 30)")
    p.add_argument("--since", help="first day, YYYY-MM-DD (instead of --days)")
    p.add_argument("--until", help="last day, YYYY-MM-DD (default today)")


def _run(
    settings: Settings,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, Store], Awaitable[int]],
) -> int:
    async def main() -> int:
        store = await open_migrated(settings)
        try:
            return await run(args, store)
        finally:
            await store.aclose()

    try:
        return asyncio.run(main())
    except (StartRefused, StorageError, InvalidKeySpec) as exc:
        print(f"puente keys: {exc}", file=sys.stderr)
        return 1


def _print_json(data: Any) -> None:
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


async def _create(args: argparse.Namespace, store: Store) -> int:
    now = time.time()
    spec = KeySpec(
        name=args.name,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        limits=Limits(args.rpm, args.tpm, args.budget_day, args.budget_month),
        expires_at=parse_expiry(args.expires, now),
    )
    secret, key = mint(spec, now)
    try:
        await store.create_key(key)
    except KeyNameTaken as exc:
        print(f"puente keys: {exc}; pick another name", file=sys.stderr)
        return 1
    if args.json:
        _print_json({**key.public(), "key": secret})
        return 0
    print(secret)
    print(
        f"Created key '{key.name}' for models {', '.join(key.models)}. "
        "Store it now: Puente keeps only a hash and cannot show it again.",
        file=sys.stderr,
    )
    return 0


def _limit_text(value: int | None) -> str:
    return "-" if value is None else str(value)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


async def _list(args: argparse.Namespace, store: Store) -> int:
    keys = await store.list_keys()
    if args.json:
        _print_json([key.public() for key in keys])
        return 0
    rows = [("NAME", "STATE", "KEY", "MODELS", "RPM", "TPM", "DAY", "MONTH", "CREATED", "EXPIRES")]
    for key in keys:
        lim = key.limits
        rows.append(
            (
                key.name,
                key.state(),
                key.hint,
                ",".join(key.models),
                _limit_text(lim.rpm),
                _limit_text(lim.tpm),
                _limit_text(lim.budget_day),
                _limit_text(lim.budget_month),
                _when(key.created_at),
                _when(key.expires_at),
            )
        )
    _print_table(rows)
    return 0


async def _revoke(args: argparse.Namespace, store: Store) -> int:
    key = await store.revoke_key(args.name, time.time())
    if key is None:
        print(f"puente keys: no key named {args.name!r}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(key.public())
    else:
        print(f"Revoked key '{key.name}' ({key.hint}) at {_when(key.revoked_at)} UTC.")
    return 0


async def _usage(args: argparse.Namespace, store: Store) -> int:
    try:
        since, until = day_range(args.since, args.until, args.days)
    except ValueError as exc:
        raise InvalidKeySpec(str(exc)) from None
    totals = await store.usage_totals(since, until, args.key)
    if args.json:
        _print_json([total.to_dict() for total in totals])
        return 0
    rows = [("DAY", "KEY", "MODEL", "REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "TOTAL")]
    for t in totals:
        rows.append(
            (
                t.day,
                t.key_name or "-",
                t.model,
                str(t.requests),
                str(t.errors),
                str(t.prompt_tokens),
                str(t.completion_tokens),
                str(t.prompt_tokens + t.completion_tokens),
            )
        )
    _print_table(rows)
    return 0


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
