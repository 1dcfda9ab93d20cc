"""Worker enrollment over real gRPC: one-time tokens, the platform CA, refusals."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import psycopg2.extensions
import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from rap.v1 import admin_pb2, audit_pb2, worker_pb2, worker_pb2_grpc
from rap_control.pki.certificates import worker_id_of
from tests.conftest import Org
from tests.support.client import Client, paginate, rpc_error, trailer
from tests.support.pki import make_csr, tamper
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration


def _token(admin: Client, ttl: int = 0) -> str:
    return admin.admin.CreateWorkerEnrollmentToken(
        admin_pb2.CreateWorkerEnrollmentTokenRequest(worker_name="edge-1", ttl_seconds=ttl)
    ).enrollment_token


def _enroll(
    server: ServerThread,
    token: str,
    csr_pem: str | None = None,
    names: tuple[str, ...] = ("worker-1.internal", "127.0.0.1"),
) -> worker_pb2.EnrollResponse:
    with server.channel() as channel:
        return worker_pb2_grpc.WorkerServiceStub(channel).Enroll(
            worker_pb2.EnrollRequest(
                enrollment_token=token, csr_pem=csr_pem or make_csr()[0], direct_host_names=list(names)
            ),
            timeout=15,
        )


def test_a_worker_enrolls_once_and_gets_a_certificate_under_the_platform_ca(
    dev_server: ServerThread,
    admin: Client,
    org: Org,
    sql: psycopg2.extensions.connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = _token(admin)
    assert token.startswith("rap_enr_")
    enrolled = _enroll(dev_server, token)
    cert = x509.load_pem_x509_certificate(enrolled.certificate_pem.encode())
    ca = x509.load_pem_x509_certificate(enrolled.ca_bundle_pem.encode())
    assert str(worker_id_of(cert)) == enrolled.worker_id
    PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName("worker-1.internal")).verify(
        cert, []
    )

    with sql.cursor() as cur:
        cur.execute(
            "SELECT organization_id::text, name, status FROM workers WHERE id = %s", (enrolled.worker_id,)
        )
        assert cur.fetchone() == (org.id, "edge-1", "offline")
        for table in ("worker_enrollment_tokens", "audit_events", "workers", "platform_ca"):
            cur.execute(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t")
            assert token not in cur.fetchone()[0]
        cur.execute(
            "SELECT count(*), bool_and(position('PRIVATE KEY' in encode(sealed_private_key, 'escape')) = 0) FROM platform_ca"
        )
        assert cur.fetchone() == (1, True), "one CA, its key sealed"
    assert token not in caplog.text
    events, _ = paginate(
        admin.audit.ListAuditEvents, audit_pb2.ListAuditEventsRequest(event_type="worker_enrolled"), "events"
    )
    assert [e.target_id for e in events] == [enrolled.worker_id]

    reused = rpc_error(_enroll, dev_server, token)
    assert reused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert trailer(reused, "rap-reason") == "token_used"


def test_an_expired_token_is_refused(dev_server: ServerThread, admin: Client) -> None:
    token = _token(admin, ttl=1)
    time.sleep(1.2)
    error = rpc_error(_enroll, dev_server, token)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert trailer(error, "rap-reason") == "token_expired"


def test_a_tampered_csr_is_refused_without_spending_the_token(
    dev_server: ServerThread, admin: Client
) -> None:
    token = _token(admin)
    error = rpc_error(_enroll, dev_server, token, tamper(make_csr()[0]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "signature does not verify" in error.details()
    bad_names = rpc_error(_enroll, dev_server, token, None, ("not a host",))
    assert bad_names.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _enroll(dev_server, token).worker_id


@pytest.mark.parametrize(
    ("token", "reason"), [("rap_enr_" + "A" * 43, "unknown_token"), ("letmein", "malformed_token")]
)
def test_unknown_and_malformed_tokens_are_unauthenticated(
    dev_server: ServerThread, token: str, reason: str
) -> None:
    error = rpc_error(_enroll, dev_server, token)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert trailer(error, "rap-reason") == reason


def test_only_admins_create_enrollment_tokens(
    dev_server: ServerThread, admin: Client, make_org: Callable[[], Org]
) -> None:
    user = admin.admin.CreateUser(
        admin_pb2.CreateUserRequest(email="m@w.test", role=admin_pb2.ROLE_MEMBER)
    ).user
    token = admin.admin.CreateApiToken(admin_pb2.CreateApiTokenRequest(user_id=user.id)).token
    with dev_server.channel() as channel:
        member = Client(channel, token)
        error = rpc_error(
            member.admin.CreateWorkerEnrollmentToken,
            admin_pb2.CreateWorkerEnrollmentTokenRequest(worker_name="w"),
        )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    for bad in (
        admin_pb2.CreateWorkerEnrollmentTokenRequest(worker_name=""),
        admin_pb2.CreateWorkerEnrollmentTokenRequest(worker_name="w", ttl_seconds=100000),
    ):
        assert (
            rpc_error(admin.admin.CreateWorkerEnrollmentToken, bad).code() == grpc.StatusCode.INVALID_ARGUMENT
        )


def test_workers_are_listed_and_revoked_by_their_organizations_admins(
    dev_server: ServerThread, admin: Client, make_org: Callable[[], Org]
) -> None:
    first, second = (_enroll(dev_server, _token(admin)).worker_id for _ in range(2))
    listed, pages = paginate(admin.admin.ListWorkers, admin_pb2.ListWorkersRequest(page_size=1), "workers")
    assert sorted(w.id for w in listed) == sorted([first, second]) and pages == 2
    assert {w.status for w in listed} == {admin_pb2.WORKER_STATUS_OFFLINE}
    with dev_server.channel() as channel:
        stranger = Client(channel, make_org().admin_token)
        error = rpc_error(stranger.admin.RevokeWorker, admin_pb2.RevokeWorkerRequest(id=first))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert stranger.admin.ListWorkers(admin_pb2.ListWorkersRequest()).workers == []
    revoked = admin.admin.RevokeWorker(admin_pb2.RevokeWorkerRequest(id=first)).worker
    assert revoked.status == admin_pb2.WORKER_STATUS_REVOKED
    again = admin.admin.RevokeWorker(admin_pb2.RevokeWorkerRequest(id=first)).worker
    assert again.status == admin_pb2.WORKER_STATUS_REVOKED
    events, _ = paginate(
        admin.audit.ListAuditEvents, audit_pb2.ListAuditEventsRequest(event_type="worker_revoked"), "events"
    )
    assert [e.target_id for e in events] == [first], "revoked once, audited once"
