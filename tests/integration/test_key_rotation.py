"""KEK rotation on a database of its own: rewrap 10,000 secrets, killed midway and resumed."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg2
import pytest
from sqlalchemy import select

from rap.v1 import admin_pb2
from rap_common.errors import FailedPrecondition
from rap_common.secrets import SecretBytes
from rap_control.audit.service import AuditLog
from rap_control.config import Environment
from rap_control.db import models as m
from rap_control.db.engine import Database
from rap_control.identity.service import IdentityService
from rap_control.keys.local import LocalKeyProvider
from rap_control.keys.service import KeyService
from rap_control.principal import Actor
from rap_control.secrets import envelope, payload
from rap_control.secrets.repository import binding_of, sealed_of
from rap_control.server import register_keys
from tests.conftest import _libpq, _settings, fresh_database
from tests.support.bulk import bulk_secrets, password_of
from tests.support.client import Client
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration

RAPCTL = str(Path(sys.executable).parent / "rapctl")


class Keys:
    def __init__(self, directory: Path) -> None:
        self.a, self.b = os.urandom(32), os.urandom(32)
        self.b_file = directory / "kek-b.key"
        self.b_file.write_bytes(base64.b64encode(self.b))
        self.b_file.chmod(0o600)
        self.ring = directory / "keyring.json"
        self.ring.write_text(json.dumps({"kek-a": base64.b64encode(self.a).decode()}))

    def provider(self, *ids: str) -> LocalKeyProvider:
        material = {"kek-a": self.a, "kek-b": self.b}
        return LocalKeyProvider(ids[0], {i: SecretBytes(material[i]) for i in ids})

    def env(self, database_url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRET_", "PKCS11_", "APP_ENV"))}
        env.update(
            DATABASE_URL=database_url,
            SECRET_ENCRYPTION_KEY_FILE=str(self.b_file),
            SECRET_ENCRYPTION_KEY_ID="kek-b",
            SECRET_ENCRYPTION_KEYRING_FILE=str(self.ring),
        )
        return env


@pytest.fixture
def rotation_db(postgres_url: str) -> Iterator[tuple[str, Database]]:
    with fresh_database(postgres_url) as url:
        database = Database(url, pool_size=4)
        yield url, database
        database.close()


def _org(db: Database) -> uuid.UUID:
    org, _, _ = db.run_sync(
        lambda uow: IdentityService(AuditLog()).bootstrap(uow, "rotation", "ops@rotation.test")
    )
    return org.id


def _key_counts(url: str) -> dict[str, int]:
    with psycopg2.connect(_libpq(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT key_id, count(*) FROM resource_secrets WHERE deleted_at IS NULL GROUP BY key_id")
        return dict(cur.fetchall())


def test_rewrap_of_10000_secrets_survives_sigkill_and_retires_the_old_key(
    rotation_db: tuple[str, Database], tmp_path: Path
) -> None:
    url, db = rotation_db
    keys = Keys(tmp_path)
    old = keys.provider("kek-a")
    db.run_sync(lambda uow: KeyService(AuditLog(), old).register_at_startup(uow, Actor.system("test")))
    org_id = _org(db)
    total = 10_000
    bulk_secrets(db, old, "kek-a", org_id, total)
    assert _key_counts(url) == {"kek-a": total}

    # First run: killed with SIGKILL once it has done part of the work.
    first = subprocess.Popen(
        [RAPCTL, "keys", "rewrap", "--batch-size", "250"],
        env=keys.env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert first.stderr is not None
    deadline = time.monotonic() + 120
    for line in first.stderr:
        if line.startswith("rewrapped ") and int(line.split()[1].split("/")[0]) >= 2500:
            break
        assert time.monotonic() < deadline, "rewrap made no progress"
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    first.stderr.close()
    assert first.stdout is not None
    first.stdout.close()
    partial = _key_counts(url)
    assert sum(partial.values()) == total
    assert 2500 <= partial.get("kek-b", 0) < total, partial

    refused = subprocess.run(
        [RAPCTL, "keys", "retire", "kek-a"], env=keys.env(url), capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "still need encryption key 'kek-a'" in refused.stderr

    second = subprocess.run(
        [RAPCTL, "keys", "rewrap"], env=keys.env(url), capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stderr
    assert "none is left under another key" in second.stdout
    assert _key_counts(url) == {"kek-b": total}

    # Nothing wrapped twice: the audited batch counts add up to exactly the rows.
    with psycopg2.connect(_libpq(url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT sum((details->>'count')::int) FROM audit_events WHERE event_type = 'secrets_rewrapped'"
        )
        assert cur.fetchone()[0] == total
        cur.execute(
            "SELECT count(*) FROM audit_events WHERE event_type = 'encryption_key_rotated' AND target_id = 'kek-b'"
        )
        assert cur.fetchone()[0] == 1

    retired = subprocess.run(
        [RAPCTL, "keys", "retire", "kek-a"], env=keys.env(url), capture_output=True, text=True, timeout=60
    )
    assert retired.returncode == 0, retired.stderr
    status = subprocess.run(
        [RAPCTL, "keys", "status"], env=keys.env(url), capture_output=True, text=True, timeout=60
    )
    assert "kek-a" in status.stdout and "kek-b" in status.stdout

    # Every secret decrypts with key B alone, to the password it was given.
    only_b = keys.provider("kek-b")

    def check_all(uow) -> int:  # type: ignore[no-untyped-def]
        rows = uow.session.execute(
            select(m.ResourceSecret, m.Resource.name).join(
                m.Resource, m.Resource.id == m.ResourceSecret.resource_id
            )
        ).all()
        for row, name in rows:
            credential = payload.decode(envelope.open_sealed(only_b, binding_of(row), sealed_of(row)))
            assert credential.password.reveal() == password_of(int(name.split("-")[1]))
        return len(rows)

    assert db.run_sync(check_all) == total


def test_a_replica_without_the_active_key_refuses_to_start(
    rotation_db: tuple[str, Database], tmp_path: Path
) -> None:
    """A stale replica, still configured with only the old key after a rotation, must not write."""
    _, db = rotation_db
    keys = Keys(tmp_path)
    for provider in (keys.provider("kek-a"), keys.provider("kek-b", "kek-a")):
        db.run_sync(
            lambda uow, p=provider: KeyService(AuditLog(), p).register_at_startup(uow, Actor.system("t"))
        )
    stale = keys.provider("kek-a")
    with pytest.raises(FailedPrecondition) as info:
        db.run_sync(lambda uow: KeyService(AuditLog(), stale).register_at_startup(uow, Actor.system("t")))
    assert "kek-b" in info.value.message and "keyring" in info.value.message


def test_an_operator_lists_switches_and_rewraps_over_grpc(
    rotation_db: tuple[str, Database], tmp_path: Path
) -> None:
    url, db = rotation_db
    keys = Keys(tmp_path)
    org_id = _org(db)
    _, _, issued = db.run_sync(
        lambda uow: IdentityService(AuditLog()).bootstrap(uow, "operators", "root@ops.test")
    )
    operator_org = db.run_sync(
        lambda uow: uow.session.scalar(select(m.Organization.id).where(m.Organization.name == "operators"))
    )
    both = keys.provider("kek-a", "kek-b")
    assert asyncio.run(register_keys(db, both)) == "kek-a"
    bulk_secrets(db, both, "kek-a", org_id, 1200)
    settings = _settings(Environment.DEVELOPMENT, None, url)
    settings = type(settings)(**{**vars(settings), "operator_organization_id": operator_org})
    server = ServerThread(settings, db, both, register=False).start()
    try:
        with server.channel() as channel:
            operator = Client(channel, issued.token.reveal())
            listed = {
                k.key_id: k
                for k in operator.admin.ListEncryptionKeys(admin_pb2.ListEncryptionKeysRequest()).keys
            }
            assert listed["kek-a"].active and listed["kek-a"].secret_count == 1200
            switched = operator.admin.SetActiveEncryptionKey(
                admin_pb2.SetActiveEncryptionKeyRequest(key_id="kek-b")
            ).key
            assert switched.active
            with pytest.raises(grpc.RpcError) as info:
                operator.admin.SetActiveEncryptionKey(
                    admin_pb2.SetActiveEncryptionKeyRequest(key_id="kek-zzz")
                )
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            progress = list(
                operator.admin.RewrapSecrets(admin_pb2.RewrapSecretsRequest(batch_size=500), timeout=120)
            )
    finally:
        server.stop()
        both.close()
    assert [p.rewrapped for p in progress] == [0, 500, 1000, 1200]
    assert progress[0].total == 1200 and progress[-1].remaining == 0
    assert _key_counts(url) == {"kek-b": 1200}
