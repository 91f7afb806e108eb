"""`lumi`: serve the API, run workers, migrate the database, mint a development token."""

from __future__ import annotations

import argparse
import sys

from app.auth import TokenVerifier
from app.config import Settings
from app.observability import configure_logging


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    host, port = args.host or settings.host, args.port or settings.port
    if settings.env == "development":
        token = TokenVerifier.from_settings(settings).mint(
            "dev", ttl_seconds=settings.dev_token_ttl_seconds
        )
        print(
            f"Lumi Gateway on http://{host}:{port}/graphql\n"
            f"Development token for user 'dev' (send as 'Authorization: Bearer <token>'):\n"
            f"{token}\n",
            flush=True,
        )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=args.log_level or settings.log_level,
        log_config=None,  # keep our JSON handler
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
    verifier = TokenVerifier.from_settings(settings)
    ttl = args.ttl or settings.dev_token_ttl_seconds
    print(verifier.mint(args.user, name=args.name, ttl_seconds=ttl))
    return 0


def _schema(settings: Settings, args: argparse.Namespace) -> int:
    from app.graphql.schema import export_sdl

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
    token = commands.add_parser("token", help="print a development token")
    token.add_argument("--user", required=True, help="the token's subject")
    token.add_argument("--name", help="display name (defaults to the user)")
    token.add_argument("--ttl", type=int, help="lifetime in seconds")
    token.set_defaults(run=_token)
    export = commands.add_parser("schema", help="print the GraphQL SDL")
    export.set_defaults(run=_schema)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level)
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
