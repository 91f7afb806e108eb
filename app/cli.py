"""`lumi`: serve the API, run workers, migrate the database, mint a development token,
inspect and repair the job queues, run maintenance; generate and watch requests."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from app.auth import TokenVerifier
from app.cli_generate import add_parsers as add_generate_parsers
from app.config import Settings
from app.observability import configure_logging, register_secrets

if TYPE_CHECKING:
    from app.deps import Deps
    from providers.storage import StoredObject

log = logging.getLogger(__name__)


def server_implementation() -> tuple[str, str]:
    """uvicorn's event loop and HTTP parser: uvloop and httptools wherever they are
    installed, as they are from the locks (4-8% less CPU per gallery or model read than
    asyncio and h11, measured side by side); asyncio and h11 where they are not (uvloop
    has no Windows build). uvicorn's "auto" picks the same; named, the start log says it."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    host, port = args.host or settings.host, args.port or settings.port
    if settings.env == "development" and settings.auth_mode == "hs256":
        token = TokenVerifier.from_settings(settings).mint(
            "dev", ttl_seconds=settings.dev_token_ttl_seconds
        )
        print(
            f"Lumi Gateway on http://{host}:{port}/graphql\n"
            f"Development token for user 'dev' (send as 'Authorization: Bearer <token>'):\n"
            f"{token}\n",
            flush=True,
        )
    elif settings.env == "development":  # tokens come from the identity provider
        print(f"Lumi Gateway on http://{host}:{port}/graphql\n", flush=True)
    loop, http = server_implementation()
    log.info("serving with the %s event loop and the %s HTTP parser", loop, http)
    uvicorn.run(
        create_app(settings, freeze_heap=True),
        host=host,
        port=port,
        loop=loop,
        http=http,
        log_level=args.log_level or settings.log_level,
        log_config=None,  # keep our JSON handler
        ws_per_message_deflate=settings.ws_per_message_deflate,
        ws_max_size=settings.ws_max_message_bytes,
        timeout_keep_alive=int(settings.http_keep_alive_seconds),
        # Subscriptions streamed over HTTP would hold a shutdown open for good.
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        # Only LUMI_TRUSTED_PROXIES decides whose X-Forwarded-For names the client: left
        # unset, uvicorn would read FORWARDED_ALLOW_IPS or trust 127.0.0.1 on its own.
        proxy_headers=bool(settings.trusted_proxy_list),
        forwarded_allow_ips=settings.trusted_proxy_list,
    )
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from app.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url, args.revision)
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from workers.run import run_worker

    return run_worker(settings, threads=args.threads)


def _token(settings: Settings, args: argparse.Namespace) -> int:
    if settings.auth_mode != "hs256":
        print(
            f"lumi token: LUMI_AUTH_MODE is {settings.auth_mode}; tokens come from the "
            "identity provider, not from lumi (only hs256 tokens can be minted here)",
            file=sys.stderr,
        )
        return 2
    verifier = TokenVerifier.from_settings(settings)
    ttl = args.ttl or settings.dev_token_ttl_seconds
    print(verifier.mint(args.user, name=args.name, ttl_seconds=ttl))
    return 0


def _queue(settings: Settings, args: argparse.Namespace) -> int:
    from workers import admin

    if args.action == "status":
        for line in admin.describe_status(admin.run(settings, admin.status)):
            print(line)
        return 0
    if args.action == "dead":
        letters = admin.run(settings, lambda deps: admin.dead(deps, args.limit))
        for letter in letters:
            print(admin.describe_letter(letter))
        print(f"{len(letters)} dead letter(s)")
        return 0
    if args.action == "requeue":
        if not args.all and not args.id:
            print("lumi queue requeue: name a dead letter id, or pass --all", file=sys.stderr)
            return 2
        outcomes = admin.run(settings, lambda deps: admin.requeue(deps, args.id))
        for letter, outcome in outcomes:
            print(f"{letter.id}  {admin.describe_request(letter)}  {outcome}")
        if args.id and not outcomes:
            print(f"lumi queue requeue: no dead letter {args.id}", file=sys.stderr)
            return 1
        return 0
    target = args.target
    if not args.yes:
        if not sys.stdin.isatty():
            print("lumi queue purge: pass --yes to confirm without a terminal", file=sys.stderr)
            return 2
        answer = input(f"Purge {target!r}? This cannot be undone. Type its name to confirm: ")
        if answer.strip() != target:
            print("not confirmed; nothing purged")
            return 1
    if target == "dead":
        print(f"purged {admin.run(settings, admin.purge_dead)} dead letter(s)")
        return 0
    try:
        dropped, failed = admin.run(settings, lambda deps: admin.purge_queue(deps, target))
    except ValueError as exc:
        print(f"lumi queue purge: {exc}", file=sys.stderr)
        return 2
    print(f"purged {target}: {dropped} message(s) dropped, {failed} waiting job(s) failed")
    return 0


def _user(settings: Settings, args: argparse.Namespace) -> int:
    from workers import admin

    try:
        if args.action == "credits":
            balance = admin.run(
                settings, lambda deps: admin.grant_credits(deps, args.subject, args.amount, "cli")
            )
            print(f"{args.subject}: {balance} credits")
        else:
            admin.run(settings, lambda deps: admin.set_role(deps, args.subject, args.role))
            print(f"{args.subject}: role {args.role}")
    except LookupError:
        print(
            f"lumi user: no user {args.subject!r} (users appear on first sign-in)", file=sys.stderr
        )
        return 1
    except ValueError as exc:
        print(f"lumi user: {exc}", file=sys.stderr)
        return 2
    return 0


def _maintenance(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "orphans":
        return _orphans(settings, args)
    return _s3_cors(settings, args)


def _orphans(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import timedelta

    from app import maintenance
    from workers import admin

    if args.older_than < 0:
        print("lumi maintenance orphans: --older-than must not be negative", file=sys.stderr)
        return 2
    grace = timedelta(seconds=args.older_than)

    async def sweep(deps: Deps) -> list[StoredObject]:
        orphans = await maintenance.find_orphans(deps.storage, deps.db, grace=grace)
        if not args.dry_run:
            await maintenance.delete_expired_uploads(deps.db)  # their files are in `orphans`
            await maintenance.delete_orphans(deps.storage, orphans)
        return orphans

    orphans = admin.run(settings, sweep)
    for orphan in orphans:
        print(f"{orphan.key}  {orphan.size} bytes  written {orphan.modified:%Y-%m-%d %H:%M:%S}Z")
    total = sum(orphan.size for orphan in orphans)
    outcome = "listed only (--dry-run)" if args.dry_run else "deleted"
    print(f"{len(orphans)} orphaned file(s), {total} bytes, {outcome}")
    return 0


def _s3_cors(settings: Settings, args: argparse.Namespace) -> int:
    from app import maintenance
    from workers import admin

    if settings.storage_backend != "s3":
        print(
            f"lumi maintenance s3-cors: LUMI_STORAGE_BACKEND is {settings.storage_backend}; "
            "there is no bucket to configure (the API serves local files itself)",
            file=sys.stderr,
        )
        return 2
    try:
        origins = maintenance.check_origins(args.origin)
    except ValueError as exc:
        print(f"lumi maintenance s3-cors: {exc}", file=sys.stderr)
        return 2
    try:
        rules = admin.run(settings, lambda deps: maintenance.allow_browsers(deps.storage, origins))
    except Exception as exc:  # the store refused or cannot be reached: say so, briefly
        print(f"lumi maintenance s3-cors: could not set the rules: {exc}", file=sys.stderr)
        return 1
    print(f"CORS rules of bucket {settings.s3_bucket}:")
    print(json.dumps(rules, indent=2))
    return 0


def _schema(settings: Settings, args: argparse.Namespace) -> int:
    from app.schema import export_sdl

    sys.stdout.write(export_sdl())
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="lumi", description="Lumi Gateway")
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API (embedded workers by default)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-level", help="overrides LUMI_LOG_LEVEL")
    serve.set_defaults(run=_serve)
    worker = commands.add_parser("worker", help="run pipeline workers (Redis broker)")
    worker.add_argument("--threads", type=int, help="worker threads (LUMI_WORKER_THREADS)")
    worker.set_defaults(run=_worker)
    migrate = commands.add_parser("migrate", help="upgrade the database")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(run=_migrate)
    token = commands.add_parser("token", help="print a development token (hs256 only)")
    token.add_argument("--user", required=True, help="the token's subject")
    token.add_argument(
        "--name", help="display name of a new user (default: a neutral name, not the user)"
    )
    token.add_argument("--ttl", type=int, help="lifetime in seconds")
    token.set_defaults(run=_token)
    queue = commands.add_parser("queue", help="inspect and repair the job queues")
    actions = queue.add_subparsers(dest="action", required=True)
    actions.add_parser("status", help="messages per queue, jobs per kind and status")
    dead = actions.add_parser("dead", help="list dead letters with their error")
    dead.add_argument("--limit", type=int, default=100)
    requeue = actions.add_parser("requeue", help="run dead letters again")
    requeue.add_argument("id", nargs="?", help="the dead letter's id")
    requeue.add_argument("--all", action="store_true", help="every dead letter")
    purge = actions.add_parser(
        "purge", help="drop a queue's waiting work (high, default, low) or the dead letters"
    )
    purge.add_argument("target", help="high, default, low or dead")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    queue.set_defaults(run=_queue)
    user = commands.add_parser("user", help="adjust a user's credits or role")
    user_actions = user.add_subparsers(dest="action", required=True)
    grant = user_actions.add_parser("credits", help="add (or take) credits, in the ledger")
    grant.add_argument("subject", help="the user's token subject")
    grant.add_argument("amount", type=int, help="credits to add; negative to take")
    role = user_actions.add_parser("role", help="set the user's role")
    role.add_argument("subject", help="the user's token subject")
    role.add_argument("role", help="e.g. user, priority, admin")
    user.set_defaults(run=_user)
    _maintenance_parser(commands)
    add_generate_parsers(commands)  # generate, watch: a client of the public API
    export = commands.add_parser("schema", help="print the GraphQL SDL")
    export.set_defaults(run=_schema)
    return root


def _maintenance_parser(commands: Any) -> None:
    maintenance = commands.add_parser("maintenance", help="orphaned files, bucket CORS rules")
    actions = maintenance.add_subparsers(dest="action", required=True)
    orphans = actions.add_parser(
        "orphans", help="delete stored files that nothing refers to (list them with --dry-run)"
    )
    orphans.add_argument("--dry-run", action="store_true", help="list them, delete nothing")
    orphans.add_argument(
        "--older-than",
        type=float,
        default=3600,
        metavar="SECONDS",
        help="only files last written longer ago (default 3600); keep it above "
        "LUMI_STAGE_TIME_LIMIT_SECONDS, or a file a stage is storing right now may go",
    )
    cors = actions.add_parser(
        "s3-cors", help="let browser pages on ORIGIN download from S3 and post uploads to it"
    )
    cors.add_argument(
        "--origin", action="append", required=True, help="e.g. https://studio.example.com"
    )
    maintenance.set_defaults(run=_maintenance)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level)
    register_secrets(settings.secret_values())
    if args.command in {"serve", "worker", "migrate"} and (
        problems := settings.production_problems()
    ):
        print("lumi: refusing to start in production mode:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    return int(args.run(settings, args))


if __name__ == "__main__":
    raise SystemExit(main())
