"""SecretResolver refusals, against a control-plane process over mTLS.

Each refusal is its own case; each answers with its status and reason
code, returns no credential, and leaves a resource_secret_access_denied
row with that reason. The lease TTL is long here so that the sweeper
stays out of the way of the cases that age a lease by hand.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import psycopg2
import pytest

from rap.v1 import admin_pb2, resolver_pb2, resolver_pb2_grpc, session_pb2, worker_pb2
from tests.conftest import _libpq
from tests.e2e.cluster import Cluster, cluster
from tests.support.client import rpc_error, trailer
from tests.support.raw_worker import RawWorker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CANARY = f"Resolver-canary-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def plane(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(
        postgres_url, tmp_path_factory.mktemp("resolver"), None, RAP_SESSION_LEASE_TTL_SECONDS="600"
    ) as c:
        yield c


@pytest.fixture(scope="module")
def worker(plane: Cluster) -> Iterator[RawWorker]:
    w = RawWorker(plane.admin, plane.a.target, plane.a.worker_target, "resolver-a")
    w.connect(capacity=100)
    yield w
    w.close()


@pytest.fixture(scope="module")
def resource_id(plane: Cluster) -> str:
    return plane.secret_resource("127.0.0.1:22", "alice", CANARY)


def _assigned(plane: Cluster, worker: RawWorker, resource_id: str) -> worker_pb2.Assignment:
    session = plane.start(resource_id)
    assignment = worker.assignment(session.id)
    worker.accept(assignment)
    return assignment


def _refused(
    plane: Cluster, call: object, code: grpc.StatusCode, reason: str, *args: object, **kwargs: object
) -> None:
    error = rpc_error(call, *args, **kwargs)  # type: ignore[arg-type]
    assert error.code() == code, (error.code(), error.details())
    assert trailer(error, "rap-reason") == reason
    assert CANARY not in str(error.details())
    denied = [e for e in plane.audit("resource_secret_access_denied") if e.details["reason"] == reason]
    assert denied, f"no resource_secret_access_denied row with reason {reason}"


def test_the_assigned_worker_gets_the_credential_and_the_read_is_audited(
    plane: Cluster, worker: RawWorker, resource_id: str
) -> None:
    assignment = _assigned(plane, worker, resource_id)
    assert assignment.lease_token and CANARY not in str(assignment)
    response = worker.resolve(assignment)
    assert response.ssh.username == "alice" and response.ssh.password == CANARY
    accessed = [
        e for e in plane.audit("resource_secret_accessed") if e.details["session_id"] == assignment.session_id
    ]
    assert len(accessed) == 1 and accessed[0].actor_id == worker.worker_id


def test_another_enrolled_workers_certificate_is_refused(
    plane: Cluster, worker: RawWorker, resource_id: str
) -> None:
    assignment = _assigned(plane, worker, resource_id)
    other = RawWorker(plane.admin, plane.a.target, plane.a.worker_target, "resolver-b")
    # Claiming to be the assigned worker, with its own certificate.
    _refused(
        plane,
        other.resolve,
        grpc.StatusCode.PERMISSION_DENIED,
        "worker_mismatch",
        assignment,
        worker_id=worker.worker_id,
    )
    # Or as itself: the session is not its.
    _refused(plane, other.resolve, grpc.StatusCode.PERMISSION_DENIED, "wrong_worker", assignment)


def test_no_client_certificate_is_refused(plane: Cluster, worker: RawWorker, resource_id: str) -> None:
    assignment = _assigned(plane, worker, resource_id)
    request = resolver_pb2.ResolveSecretRequest(
        organization_id=assignment.organization_id,
        resource_id=assignment.resource_id,
        worker_id=worker.worker_id,
        session_id=assignment.session_id,
        secret_ref=assignment.secret_ref,
        lease_token=assignment.lease_token,
    )
    # On the user-facing port the call arrives without a certificate: refused and audited.
    with plane.a.channel() as channel:
        stub = resolver_pb2_grpc.SecretResolverStub(channel)
        _refused(
            plane,
            stub.ResolveSecret,
            grpc.StatusCode.UNAUTHENTICATED,
            "client_certificate_required",
            request,
            timeout=10,
        )
    # On the worker port the TLS handshake itself fails.
    credentials = grpc.ssl_channel_credentials(root_certificates=worker.ca_pem)
    with grpc.secure_channel(plane.a.worker_target, credentials) as channel:
        error = rpc_error(resolver_pb2_grpc.SecretResolverStub(channel).ResolveSecret, request, timeout=10)
        assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_a_revoked_worker_is_refused(plane: Cluster, worker: RawWorker, resource_id: str) -> None:
    _assigned(plane, worker, resource_id)  # the shared worker is busier than the new one
    doomed = RawWorker(plane.admin, plane.a.target, plane.a.worker_target, "doomed")
    doomed.connect()
    try:
        # The least loaded worker gets the session: the new one, with none yet.
        assignment = _assigned(plane, doomed, resource_id)
        plane.admin.admin.RevokeWorker(admin_pb2.RevokeWorkerRequest(id=doomed.worker_id))
        _refused(plane, doomed.resolve, grpc.StatusCode.PERMISSION_DENIED, "worker_revoked", assignment)
        # Its stream is closed too, with the reason.
        deadline = time.monotonic() + 10
        while doomed.error is None:
            assert time.monotonic() < deadline, "the revoked worker's stream stayed open"
            time.sleep(0.05)
        assert doomed.error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert trailer(doomed.error, "rap-reason") == "worker_revoked"
    finally:
        doomed.close()


def test_a_wrong_session_id_is_refused(plane: Cluster, worker: RawWorker, resource_id: str) -> None:
    assignment = _assigned(plane, worker, resource_id)
    _refused(
        plane,
        worker.resolve,
        grpc.StatusCode.NOT_FOUND,
        "session_not_found",
        assignment,
        session_id=str(uuid.uuid4()),
    )


def test_a_terminated_session_is_refused(plane: Cluster, worker: RawWorker, resource_id: str) -> None:
    assignment = _assigned(plane, worker, resource_id)
    plane.admin.sessions.TerminateSession(session_pb2.TerminateSessionRequest(id=assignment.session_id))
    _refused(plane, worker.resolve, grpc.StatusCode.FAILED_PRECONDITION, "session_terminated", assignment)


def test_a_failed_session_is_refused(plane: Cluster, worker: RawWorker, resource_id: str) -> None:
    assignment = _assigned(plane, worker, resource_id)
    worker.send(
        session_state_update=worker_pb2.SessionStateUpdate(
            session_id=assignment.session_id,
            state=session_pb2.SESSION_STATE_FAILED,
            reason="target_unreachable",
        )
    )
    plane.wait_state(assignment.session_id, {session_pb2.SESSION_STATE_FAILED})
    _refused(plane, worker.resolve, grpc.StatusCode.FAILED_PRECONDITION, "session_failed", assignment)


def test_an_expired_lease_is_refused(plane: Cluster, worker: RawWorker, resource_id: str) -> None:
    assignment = _assigned(plane, worker, resource_id)
    # The lease lapses (as if its heartbeats had stopped a while ago).
    conn = psycopg2.connect(_libpq(plane.database_url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE session_leases SET expires_at = now() - interval '1 second' WHERE session_id = %s",
                (assignment.session_id,),
            )
    finally:
        conn.close()
    _refused(plane, worker.resolve, grpc.StatusCode.FAILED_PRECONDITION, "lease_expired", assignment)


def test_the_lease_token_of_another_session_is_refused(
    plane: Cluster, worker: RawWorker, resource_id: str
) -> None:
    first = _assigned(plane, worker, resource_id)
    second = _assigned(plane, worker, resource_id)
    _refused(
        plane,
        worker.resolve,
        grpc.StatusCode.PERMISSION_DENIED,
        "lease_session_mismatch",
        first,
        lease_token=second.lease_token,
    )


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("organization_id", "organization_mismatch"),
        ("resource_id", "resource_mismatch"),
        ("secret_ref", "secret_ref_mismatch"),
    ],
)
def test_a_mismatched_organization_resource_or_secret_ref_is_refused(
    plane: Cluster, worker: RawWorker, resource_id: str, field: str, reason: str
) -> None:
    assignment = _assigned(plane, worker, resource_id)
    other = plane.secret_resource("127.0.0.1:22", "bob", CANARY + "-other")
    wrong = {
        "organization_id": str(uuid.uuid4()),
        "resource_id": other,
        "secret_ref": f"rap-secret://org/{assignment.organization_id}/resources/{other}/default",
    }[field]
    _refused(plane, worker.resolve, grpc.StatusCode.PERMISSION_DENIED, reason, assignment, **{field: wrong})


def test_no_credential_reached_a_table_or_a_log(plane: Cluster, worker: RawWorker) -> None:
    for table, dump in plane.table_dump().items():
        assert CANARY not in dump, table
    assert CANARY not in plane.logs()
