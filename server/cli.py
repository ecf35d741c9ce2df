"""The ``ai-service-platform`` command's headless verbs: ``serve``, ``keys …``, ``models …``, ``usage export``,
``doctor``.

(With no verb the command opens the window; ``app.main`` handles that and hands every verb here.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from server import doctor
from server.access.keys import BudgetUnit, KeyLimits, KeyService, load_or_create_secret, parse_duration
from server.config import ConfigError, Settings
from server.errors import APIError
from server.hub import command as models_command
from server.logs import configure_logging
from server.metering.ledger import export
from server.runner import ServerStartError, ServerThread
from server.services import Services, settings_from_store
from server.store import Store, StoreUnavailable
from server.tuning import apply_to_server

log = logging.getLogger("server.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ai-service-platform",
        description="A private OpenAI-compatible AI service. With no command, opens the window.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server headless, until interrupted")
    serve.add_argument("--host", help="address to bind (a loopback address unless --lan)")
    serve.add_argument("--port", type=int, help="TCP port (0 picks a free one)")
    serve.add_argument(
        "--lan", action="store_true", default=None, help="serve the LAN (bind every interface)"
    )

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", metavar="ACTION"
    )
    keys.required = True
    create = keys.add_parser("create", help="create a key and print its secret (shown once)")
    create.add_argument("--name", required=True, help="a label for the key")
    create.add_argument("--models", help="comma-separated models the key may use (default: all)")
    create.add_argument("--expires-in", help="lifetime such as 30d, 12h or 90m (default: never)")
    create.add_argument("--note", default="", help="who or what the key is for")
    _limit_arguments(create)
    limit = keys.add_parser("limits", help="set a key's rate limits and budget")
    limit.add_argument("key_id")
    _limit_arguments(limit)
    limit.add_argument("--models", help="comma-separated models the key may use ('*' for all)")
    listing = keys.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = keys.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")
    roll = keys.add_parser("roll", help="replace a key; the old one works for a grace period")
    roll.add_argument("key_id")
    roll.add_argument("--grace", default="1d", help="how long the old key keeps working (default 1d)")

    doctor = commands.add_parser(
        "doctor", help="check the machine and run each model briefly; prints what a support request needs"
    )
    doctor.add_argument("--only", choices=("chat", "embeddings"), help="check only models of this kind")
    doctor.add_argument("--model", help="check only this model")
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.add_argument(
        "--in-process",
        action="store_true",
        help="run the models in this process, not in engine processes (under a debugger or an emulator)",
    )
    doctor.add_argument(
        "--brief",
        action="store_true",
        help="generate two tokens from a few prompt tokens: whether each model runs, not how fast (an emulator)",
    )

    models_command.add_parser(commands)

    usage = commands.add_parser("usage", help="usage ledger").add_subparsers(
        dest="usage_command", metavar="ACTION"
    )
    usage.required = True
    exporting = usage.add_parser("export", help="write the ledger as CSV or JSON")
    exporting.add_argument("--format", choices=("csv", "json"), default="csv")
    exporting.add_argument("--since", help="an ISO date/time (UTC) or a duration back from now, such as 7d")
    exporting.add_argument("--output", "-o", help="a file to write (default: standard output)")
    return parser


def _limit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=int, help="requests per minute")
    parser.add_argument("--tpm", type=int, help="tokens per minute")
    parser.add_argument("--concurrency", type=int, help="requests in flight at once")
    parser.add_argument("--budget-tokens", type=float, help="a token budget per period")
    parser.add_argument("--budget-cost", type=float, help="a money budget per period (model prices)")
    parser.add_argument(
        "--budget-period",
        choices=("day", "week", "month", "lifetime"),
        default="month",
        help="default: month",
    )


def _limits(args: argparse.Namespace) -> KeyLimits:
    if args.budget_tokens is not None and args.budget_cost is not None:
        raise ConfigError("give --budget-tokens or --budget-cost, not both")
    unit: BudgetUnit | None = (
        "tokens" if args.budget_tokens is not None else "cost" if args.budget_cost is not None else None
    )
    amount = args.budget_tokens if unit == "tokens" else args.budget_cost
    return KeyLimits(
        rpm=args.rpm,
        tpm=args.tpm,
        max_concurrent=args.concurrency,
        budget_unit=unit,
        budget_amount=amount,
        budget_period=args.budget_period if unit else None,
    )


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--since: not a date or duration: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _settings(**overrides: Any) -> Settings:
    return settings_from_store(**overrides)


def _key_service(settings: Settings) -> KeyService:
    return KeyService(Store(settings.database_path), load_or_create_secret(settings.secret_path))


def _fmt_time(value: float | None) -> str:
    if value is None:
        return "-"
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M")


def serve(settings: Settings) -> int:
    apply_to_server(settings.tuning)  # this process only serves: tuned for it (the window's never is)
    services = Services.open(settings)
    thread = ServerThread(services)
    try:
        thread.start()
    except ServerStartError as exc:
        log.error("%s", exc)
        services.close()
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    log.info(
        "AI Service Platform serving %s (%s)", thread.url, "LAN" if settings.lan else "this machine only"
    )
    try:
        while not stop.wait(0.5):
            if not thread.running:
                log.error("the server stopped: %s", thread.error)
                return 1
    finally:
        thread.stop()
        services.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            settings = _settings(host=args.host, port=args.port, lan=args.lan)
            configure_logging(settings.log_level, settings.log_path)
            return serve(settings)
        settings = _settings()
        configure_logging("warning" if settings.log_level == "info" else settings.log_level)
        if args.command == "keys":
            return _keys(args, settings)
        if args.command == "models":
            return models_command.run(args, settings)
        if args.command == "doctor":
            return doctor.run(
                settings,
                only=args.only,
                model=args.model,
                as_json=args.json,
                in_process=args.in_process,
                brief=args.brief,
            )
        if args.command == "usage":
            store = Store(settings.database_path)
            out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout  # noqa: SIM115
            try:
                count = export(store, out, args.format, _since(args.since))
            finally:
                if out is not sys.stdout:
                    out.close()
                store.close()
            log.info("exported %d rows", count)
            return 0
    except (ConfigError, ValueError) as exc:
        sys.stderr.write(f"ai-service-platform: {exc}\n")
        return 2
    except (StoreUnavailable, OSError) as exc:  # a read-only or full data directory, named in the message
        sys.stderr.write(f"ai-service-platform: {exc}\n")
        return 1
    except APIError as exc:
        sys.stderr.write(f"ai-service-platform: {exc.message}\n")
        return 1
    build_parser().print_help()
    return 2


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    keys = _key_service(settings)
    if args.keys_command == "create":
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        expires = time.time() + parse_duration(args.expires_in) if args.expires_in else None
        secret, record = keys.create(
            args.name, owner_note=args.note, allowed_models=models, expires_at=expires, limits=_limits(args)
        )
        sys.stderr.write(f"created {record.id} ({record.name}); the secret is shown once:\n")
        sys.stdout.write(secret + "\n")
        return 0
    if args.keys_command == "list":
        records = keys.list()
        if args.json:
            sys.stdout.write(json.dumps([r.as_dict() for r in records], indent=2) + "\n")
            return 0
        sys.stdout.write(
            f"{'ID':<22} {'NAME':<24} {'HINT':<12} {'STATUS':<9} {'CREATED':<17} {'LAST USED':<17} EXPIRES\n"
        )
        for r in records:
            sys.stdout.write(
                f"{r.id:<22} {r.name[:24]:<24} {r.hint:<12} {r.status():<9} {_fmt_time(r.created_at):<17} "
                f"{_fmt_time(r.last_used_at):<17} {_fmt_time(r.expires_at)}\n"
            )
        return 0
    if args.keys_command == "limits":
        record = keys.set_limits(args.key_id, _limits(args))
        if args.models:
            models = (
                None
                if args.models.strip() == "*"
                else [m.strip() for m in args.models.split(",") if m.strip()]
            )
            record = keys.set_models(args.key_id, models)
        sys.stdout.write(
            json.dumps(record.as_dict()["limits"] | {"allowed_models": record.allowed_models}) + "\n"
        )
        return 0
    if args.keys_command == "revoke":
        record = keys.revoke(args.key_id)
        sys.stdout.write(f"revoked {record.id} ({record.name})\n")
        return 0
    if args.keys_command == "roll":
        secret, record = keys.roll(args.key_id, parse_duration(args.grace))
        sys.stderr.write(
            f"rolled {args.key_id} to {record.id}; the old key stops after {args.grace}. New secret:\n"
        )
        sys.stdout.write(secret + "\n")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
