"""Signing-key rotation: the next key is published before it signs, a retired key stays
published until its tokens have expired, and connected workers get the new key set."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import psycopg2
import pytest
from sqlalchemy import select

from rap.v1 import admin_pb2
from rap_common.tokens import DATA_PLANE_AUDIENCE, TokenRejected, verify
from rap_control.audit.service import AuditLog
from rap_control.config import Environment
from rap_control.db import models as m
from rap_control.db.engine import Database
from rap_control.identity.service import IdentityService
from rap_control.keys.local import LocalKeyProvider
from rap_control.keys.service import KeyService
from rap_control.tokens.keyring import ISSUER, SigningKeyRing
from tests.conftest import _libpq, _settings, fresh_database
from tests.support.client import Client, rpc_error, trailer
from tests.support.raw_worker import RawWorker
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration


@pytest.fixture
def rotation_server(
    postgres_url: str, provider: LocalKeyProvider
) -> Iterator[tuple[ServerThread, Database, str, str]]:
    with fresh_database(postgres_url) as url:
        db = Database(url, pool_size=4)
        identity = IdentityService(AuditLog())
        _, _, operator = db.run_sync(lambda uow: identity.bootstrap(uow, "operators", "ops@example.test"))
        _, _, tenant = db.run_sync(lambda uow: identity.bootstrap(uow, "tenant", "t@example.test"))
        operator_org = db.run_sync(
            lambda uow: uow.session.scalar(
                select(m.Organization.id).where(m.Organization.name == "operators")
            )
        )
        settings = _settings(Environment.DEVELOPMENT, None, url)
        settings = type(settings)(**{**vars(settings), "operator_organization_id": operator_org})
        server = ServerThread(settings, db, provider, workers=True).start()
        try:
            yield server, db, operator.token.reveal(), tenant.token.reveal()
        finally:
            server.stop()
            db.close()


def _jwks(client: Client) -> dict[str, dict[str, str]]:
    keys = client.admin.GetJwks(admin_pb2.GetJwksRequest()).jwks.keys
    return {k.kid: {"kid": k.kid, "kty": k.kty, "alg": k.alg, "use": k.use, "n": k.n, "e": k.e} for k in keys}


def test_rotation_publishes_before_signing_and_retires_after_the_overlap(
    rotation_server: tuple[ServerThread, Database, str, str], provider: LocalKeyProvider
) -> None:
    server, db, operator_token, tenant_token = rotation_server
    ring = SigningKeyRing(provider, KeyService(AuditLog(), provider))
    with server.channel() as channel:
        operator, tenant = Client(channel, operator_token), Client(channel, tenant_token)
        worker = RawWorker(operator, server.target, f"127.0.0.1:{server.worker_port}")
        welcome = worker.connect()
        try:
            published = _jwks(tenant)
            assert {k.kid for k in welcome.jwks.keys} == set(published)
            assert len(published) == 2, "the active key and the next one"
            old_token, _, _ = db.run_sync(
                lambda uow: ring.sign(uow, {"sub": "u"}, audience=DATA_PLANE_AUDIENCE, ttl_seconds=60)
            )
            old_kid = db.run_sync(ring.active).kid
            upcoming = next(kid for kid in published if kid != old_kid)

            error = rpc_error(tenant.admin.RotateSigningKey, admin_pb2.RotateSigningKeyRequest())
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert trailer(error, "rap-reason") == "operator_required"

            rotated = operator.admin.RotateSigningKey(admin_pb2.RotateSigningKeyRequest())
            after = {k.kid for k in rotated.jwks.keys}
            assert after == {old_kid, upcoming, rotated.next_kid}, "old (retired), new active, new next"
            # The worker gets the new set on its stream.
            while True:
                message = worker.responses.get(timeout=10)
                if message.WhichOneof("message") == "signing_keys_update":
                    assert {k.kid for k in message.signing_keys_update.jwks.keys} == after
                    break
            # New tokens come from the key that was published as next.
            fresh_ring = SigningKeyRing(provider, KeyService(AuditLog(), provider))
            new_token, _, _ = db.run_sync(
                lambda uow: fresh_ring.sign(uow, {"sub": "u"}, audience=DATA_PLANE_AUDIENCE, ttl_seconds=60)
            )
            keys = _jwks(tenant)
            assert verify(new_token, keys, audience=DATA_PLANE_AUDIENCE, issuer=ISSUER)["sub"] == "u"
            # Old tokens still verify during the overlap...
            assert verify(old_token, keys, audience=DATA_PLANE_AUDIENCE, issuer=ISSUER)["sub"] == "u"
            # ...and not once it is over.
            conn = psycopg2.connect(_libpq(db.url))
            with conn, conn.cursor() as cur:
                cur.execute(
                    "UPDATE signing_keys SET publish_until = now() - interval '1 second' WHERE kid = %s",
                    (old_kid,),
                )
            conn.close()
            with pytest.raises(TokenRejected) as refused:
                verify(old_token, _jwks(tenant), audience=DATA_PLANE_AUDIENCE, issuer=ISSUER)
            assert refused.value.reason == "unknown_kid"
            events = db.run_sync(
                lambda uow: [
                    e.details
                    for e in uow.session.scalars(
                        select(m.AuditEvent).where(m.AuditEvent.event_type == "signing_key_rotated")
                    )
                ]
            )
            assert events == [
                {
                    "retired_kid": old_kid,
                    "next_kid": rotated.next_kid,
                    "retired_published_until": events[0]["retired_published_until"],
                }
            ]
        finally:
            worker.close()
    assert uuid.UUID(worker.worker_id)
