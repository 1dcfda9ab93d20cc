"""AttachSession: candidates by trust mode, takeover, detach, and what the worker is told."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from jose import jwt

from rap.v1 import credentials_pb2, resource_pb2, secret_pb2, session_pb2
from rap_control.config import Environment, Settings, TrustMode
from rap_control.db.engine import Database
from rap_control.keys.local import LocalKeyProvider
from tests.conftest import Org, _settings
from tests.support.client import Client, rpc_error, trailer
from tests.support.raw_worker import RawWorker
from tests.support.server import ServerThread
from tests.support.tls import make_server_tls

pytestmark = pytest.mark.integration

DIRECT = "wss://127.0.0.1:9/v1/connect"


def _server(
    settings: Settings, db: Database, provider: LocalKeyProvider, ca_pem: bytes | None = None
) -> ServerThread:
    return ServerThread(settings, db, provider, ca_pem=ca_pem, workers=True).start()


def _active_session(server: ServerThread, org: Org) -> tuple[Client, RawWorker, str]:
    channel = server.channel()
    admin = Client(channel, org.admin_token)
    worker = RawWorker(
        admin, server.target, f"127.0.0.1:{server.worker_port}", enroll_channel=server.channel()
    )
    worker.connect(direct_url=DIRECT)
    resource_id = str(uuid.uuid4())
    resource = admin.resources.CreateResource(
        resource_pb2.CreateResourceRequest(
            resource_id=resource_id,
            resource=resource_pb2.Resource(
                name=f"r-{uuid.uuid4().hex[:6]}",
                protocol=resource_pb2.PROTOCOL_SSH,
                address="10.0.0.9",
                secret_ref=f"rap-secret://org/{org.id}/resources/{resource_id}/default",
            ),
        )
    ).resource
    admin.secrets.PutResourceSecret(
        secret_pb2.PutResourceSecretRequest(
            resource_id=resource.id, ssh=credentials_pb2.SshCredential(username="u", password="p")
        )
    )
    session = admin.sessions.StartSession(session_pb2.StartSessionRequest(resource_id=resource.id)).session
    worker.activate(worker.assignment(session.id))
    deadline = time.monotonic() + 10
    while (
        admin.sessions.GetSession(session_pb2.GetSessionRequest(id=session.id)).session.state
        != session_pb2.SESSION_STATE_ACTIVE
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return admin, worker, session.id


@pytest.fixture
def dev_smoke(db: Database, database_url: str, provider: LocalKeyProvider) -> Iterator[ServerThread]:
    settings = dataclasses.replace(
        _settings(Environment.DEVELOPMENT, None, database_url), direct_trust_mode=TrustMode.SMOKE_INSECURE
    )
    server = _server(settings, db, provider)
    yield server
    server.stop()


def test_development_offers_the_smoke_direct_candidate_flagged(dev_smoke: ServerThread, org: Org) -> None:
    admin, worker, session_id = _active_session(dev_smoke, org)
    try:
        attachment = admin.sessions.AttachSession(
            session_pb2.AttachSessionRequest(session_id=session_id)
        ).attachment
        [direct] = attachment.candidates
        assert (direct.kind, direct.url, direct.trust_mode, direct.smoke_only) == (
            session_pb2.CANDIDATE_KIND_DIRECT_WORKER,
            DIRECT,
            session_pb2.TRUST_MODE_SMOKE_INSECURE,
            True,
        )
        claims = jwt.get_unverified_claims(attachment.data_plane_token)
        assert claims["aud"] == "rap-data-plane" and claims["att"] == attachment.attachment_id
        assert claims["wrk"] == worker.worker_id and claims["sid"] == session_id and claims["org"] == org.id
        assert claims["ch"] == ["terminal", "clipboard", "file_upload"]
        assert {"sub", "res", "iat", "nbf", "exp", "jti", "iss"} <= set(claims)
        # The worker is told about the attachment.
        while True:
            message = worker.responses.get(timeout=10)
            if message.WhichOneof("message") == "attachment_update":
                update = message.attachment_update
                assert (update.attachment_id, update.user_id, update.state) == (
                    attachment.attachment_id,
                    org.admin_id,
                    session_pb2.ATTACHMENT_STATE_ACTIVE,
                )
                break
        # A second attach needs takeover; with it, the first is superseded.
        error = rpc_error(
            admin.sessions.AttachSession, session_pb2.AttachSessionRequest(session_id=session_id)
        )
        assert (
            error.code() == grpc.StatusCode.FAILED_PRECONDITION
            and trailer(error, "rap-reason") == "attachment_active"
        )
        second = admin.sessions.AttachSession(
            session_pb2.AttachSessionRequest(session_id=session_id, takeover=True)
        ).attachment
        states = {}
        while len(states) < 2:
            message = worker.responses.get(timeout=10)
            if message.WhichOneof("message") == "attachment_update":
                states[message.attachment_update.attachment_id] = message.attachment_update.state
        assert states == {
            attachment.attachment_id: session_pb2.ATTACHMENT_STATE_SUPERSEDED,
            second.attachment_id: session_pb2.ATTACHMENT_STATE_ACTIVE,
        }
        admin.sessions.DetachSession(
            session_pb2.DetachSessionRequest(session_id=session_id, attachment_id=second.attachment_id)
        )
        while True:
            message = worker.responses.get(timeout=10)
            if message.WhichOneof("message") == "attachment_update":
                assert message.attachment_update.state == session_pb2.ATTACHMENT_STATE_DETACHED
                break
    finally:
        worker.close()


def test_production_offers_only_the_gateway_for_smoke_insecure(
    db: Database, database_url: str, provider: LocalKeyProvider, org: Org, tmp_path: Path
) -> None:
    tls = make_server_tls(tmp_path)
    base = _settings(Environment.PRODUCTION, (tls.cert_file, tls.key_file), database_url)
    with_gateway = dataclasses.replace(
        base, direct_trust_mode=TrustMode.SMOKE_INSECURE, gateway_url="wss://gw.example.test/v1/connect"
    )
    server = _server(with_gateway, db, provider, tls.ca_pem)
    try:
        admin, worker, session_id = _active_session(server, org)
        attachment = admin.sessions.AttachSession(
            session_pb2.AttachSessionRequest(session_id=session_id)
        ).attachment
        assert [
            (c.kind, c.url, c.smoke_only, c.trust_mode, c.ca_bundle_pem) for c in attachment.candidates
        ] == [
            (
                session_pb2.CANDIDATE_KIND_GATEWAY,
                "wss://gw.example.test/v1/connect",
                False,
                session_pb2.TRUST_MODE_PUBLIC_CA,
                "",
            )
        ]
        worker.close()
    finally:
        server.stop()
    without = dataclasses.replace(base, direct_trust_mode=TrustMode.SMOKE_INSECURE)
    server = _server(without, db, provider, tls.ca_pem)
    try:
        admin, worker, session_id = _active_session(server, org)
        error = rpc_error(
            admin.sessions.AttachSession, session_pb2.AttachSessionRequest(session_id=session_id)
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert trailer(error, "rap-reason") == "no_data_plane_route"
        assert "RAP_GATEWAY_URL" in error.details()
        worker.close()
    finally:
        server.stop()


def test_platform_ca_offers_the_direct_candidate_with_the_bundle(
    db: Database, database_url: str, provider: LocalKeyProvider, org: Org
) -> None:
    server = _server(_settings(Environment.DEVELOPMENT, None, database_url), db, provider)
    try:
        admin, worker, session_id = _active_session(server, org)
        attachment = admin.sessions.AttachSession(
            session_pb2.AttachSessionRequest(session_id=session_id)
        ).attachment
        [direct] = attachment.candidates
        assert direct.trust_mode == session_pb2.TRUST_MODE_PLATFORM_CA and not direct.smoke_only
        assert direct.ca_bundle_pem == server.platform_ca_pem
        worker.close()
    finally:
        server.stop()
