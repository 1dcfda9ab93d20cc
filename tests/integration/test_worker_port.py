"""The worker-facing listener: mTLS under the platform CA, and certificate renewal."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rap.v1 import admin_pb2, audit_pb2, worker_pb2, worker_pb2_grpc
from rap_control.config import Environment
from rap_control.db.engine import Database
from rap_control.keys.local import LocalKeyProvider
from rap_control.pki import certificates
from tests.conftest import Org, _settings
from tests.support.client import Client, paginate, rpc_error, trailer
from tests.support.pki import make_csr
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mtls_server(db: Database, database_url: str, provider: LocalKeyProvider) -> Iterator[ServerThread]:
    server = ServerThread(
        _settings(Environment.DEVELOPMENT, None, database_url), db, provider, workers=True
    ).start()
    yield server
    server.stop()


def _pem_key(key: object) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )  # type: ignore[attr-defined, no-any-return]


def _enrolled(server: ServerThread, admin: Client) -> tuple[str, bytes, bytes]:
    """(worker id, certificate PEM, key PEM) of a freshly enrolled worker."""
    token = admin.admin.CreateWorkerEnrollmentToken(
        admin_pb2.CreateWorkerEnrollmentTokenRequest(worker_name="w")
    ).enrollment_token
    csr, key = make_csr()
    with server.channel() as channel:
        enrolled = worker_pb2_grpc.WorkerServiceStub(channel).Enroll(
            worker_pb2.EnrollRequest(enrollment_token=token, csr_pem=csr, direct_host_names=["w.internal"]),
            timeout=15,
        )
    return enrolled.worker_id, enrolled.certificate_pem.encode(), _pem_key(key)


def _worker_channel(server: ServerThread, cert: bytes | None, key: bytes | None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=server.platform_ca_pem.encode(), private_key=key, certificate_chain=cert
    )
    return grpc.secure_channel(
        f"127.0.0.1:{server.worker_port}",
        credentials,
        options=[("grpc.ssl_target_name_override", "localhost")],
    )


def _renew(channel: grpc.Channel) -> worker_pb2.RenewCertificateResponse:
    return worker_pb2_grpc.WorkerServiceStub(channel).RenewCertificate(
        worker_pb2.RenewCertificateRequest(csr_pem=make_csr()[0]), timeout=15
    )


def test_a_worker_renews_its_certificate_over_mtls(mtls_server: ServerThread, admin: Client) -> None:
    worker_id, cert, key = _enrolled(mtls_server, admin)
    with _worker_channel(mtls_server, cert, key) as channel:
        renewed = _renew(channel)
    new = x509.load_pem_x509_certificate(renewed.certificate_pem.encode())
    old = x509.load_pem_x509_certificate(cert)
    assert str(certificates.worker_id_of(new)) == worker_id
    assert new.serial_number != old.serial_number
    assert new.not_valid_after_utc > dt.datetime.now(dt.UTC)
    events, _ = paginate(
        admin.audit.ListAuditEvents,
        audit_pb2.ListAuditEventsRequest(event_type="worker_certificate_renewed"),
        "events",
    )
    assert [e.target_id for e in events] == [worker_id]


def test_no_client_certificate_or_a_foreign_one_fails_the_handshake(mtls_server: ServerThread) -> None:
    with _worker_channel(mtls_server, None, None) as channel:
        assert rpc_error(_renew, channel).code() == grpc.StatusCode.UNAVAILABLE
    foreign_key, foreign_ca = certificates.new_ca(dt.datetime.now(dt.UTC))
    csr_pem, rogue_key = make_csr()
    rogue = certificates.issue_worker_certificate(
        foreign_key, foreign_ca, certificates.parse_csr(csr_pem), uuid.uuid4(), [], dt.datetime.now(dt.UTC)
    )
    with _worker_channel(
        mtls_server, rogue.public_bytes(serialization.Encoding.PEM), _pem_key(rogue_key)
    ) as channel:
        assert rpc_error(_renew, channel).code() == grpc.StatusCode.UNAVAILABLE


def test_a_revoked_worker_cannot_renew(mtls_server: ServerThread, admin: Client) -> None:
    worker_id, cert, key = _enrolled(mtls_server, admin)
    admin.admin.RevokeWorker(admin_pb2.RevokeWorkerRequest(id=worker_id))
    with _worker_channel(mtls_server, cert, key) as channel:
        error = rpc_error(_renew, channel)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert trailer(error, "rap-reason") == "worker_revoked"


def test_renewal_on_the_bearer_token_port_asks_for_the_worker_port(
    mtls_server: ServerThread, org: Org
) -> None:
    with mtls_server.channel() as channel:
        error = rpc_error(_renew, channel)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert trailer(error, "rap-reason") == "client_certificate_required"
