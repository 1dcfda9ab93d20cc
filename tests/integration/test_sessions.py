"""SessionService and the worker stream against an in-process control plane.

The worker side is a RawWorker: enrolled for real, speaking Connect and
ResolveSecret over mTLS, one message at a time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import psycopg2
import pytest
from google.protobuf import struct_pb2

from rap.v1 import admin_pb2, audit_pb2, credentials_pb2, resource_pb2, secret_pb2, session_pb2, worker_pb2
from rap_control.audit.service import AuditLog
from rap_control.config import Environment
from rap_control.db.engine import Database
from rap_control.keys.local import LocalKeyProvider
from rap_control.sessions.sweeper import LeaseSweeper
from tests.conftest import Org, _settings
from tests.support.client import Client, rpc_error, trailer
from tests.support.raw_worker import RawWorker
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(db: Database, database_url: str, provider: LocalKeyProvider) -> Iterator[ServerThread]:
    s = ServerThread(
        _settings(Environment.DEVELOPMENT, None, database_url), db, provider, workers=True
    ).start()
    yield s
    s.stop()


@pytest.fixture
def admin(server: ServerThread, org: Org) -> Iterator[Client]:
    with server.channel() as channel:
        yield Client(channel, org.admin_token)


@pytest.fixture
def worker(server: ServerThread, admin: Client) -> Iterator[RawWorker]:
    w = RawWorker(admin, server.target, f"127.0.0.1:{server.worker_port}")
    w.connect()
    yield w
    w.close()


def _resource(admin: Client, metadata: dict[str, object] | None = None, secret: bool = True) -> str:
    md = struct_pb2.Struct()
    md.update(metadata or {})
    resource = admin.resources.CreateResource(
        resource_pb2.CreateResourceRequest(
            resource=resource_pb2.Resource(
                name=f"r-{uuid.uuid4().hex[:8]}",
                protocol=resource_pb2.PROTOCOL_SSH,
                address="10.1.2.3",
                metadata=md,
            )
        )
    ).resource
    if secret:
        admin.secrets.PutResourceSecret(
            secret_pb2.PutResourceSecretRequest(
                resource_id=resource.id, ssh=credentials_pb2.SshCredential(username="u", password="p")
            )
        )
    return str(resource.id)


def _start(client: Client, resource_id: str, channels: list[int] | None = None) -> session_pb2.Session:
    return client.sessions.StartSession(
        session_pb2.StartSessionRequest(resource_id=resource_id, channels=channels or [])
    ).session


def _member(server: ServerThread, admin: Client) -> Client:
    user = admin.admin.CreateUser(
        admin_pb2.CreateUserRequest(
            email=f"m-{uuid.uuid4().hex[:6]}@example.test", role=admin_pb2.ROLE_MEMBER
        )
    ).user
    token = admin.admin.CreateApiToken(admin_pb2.CreateApiTokenRequest(user_id=user.id, name="t")).token
    return Client(server.channel(), token)


def test_without_an_online_worker_a_start_is_a_failed_precondition(admin: Client) -> None:
    error = rpc_error(
        admin.sessions.StartSession, session_pb2.StartSessionRequest(resource_id=_resource(admin))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert trailer(error, "rap-reason") == "no_worker_available"
    assert not admin.sessions.ListSessions(session_pb2.ListSessionsRequest()).sessions


def test_while_workers_are_reconnecting_a_start_is_unavailable_not_a_failed_precondition(
    admin: Client, org: Org, sql: psycopg2.extensions.connection
) -> None:
    """After an outage the workers are online but not heard from lately: retry, not fix."""
    with sql.cursor() as cur:
        # A worker as the database has it after an outage: online (its disconnect could
        # not be written), last heard of before the outage.
        cur.execute(
            "INSERT INTO workers (id, organization_id, name, status, protocols, capacity, direct_host_names, "
            "role, last_seen_at) VALUES (%s, %s, 'quiet', 'online', '{ssh}', 8, '{}', 'worker', "
            "now() - interval '10 minutes')",
            (str(uuid.uuid4()), org.id),
        )
    error = rpc_error(
        admin.sessions.StartSession, session_pb2.StartSessionRequest(resource_id=_resource(admin))
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert trailer(error, "rap-reason") == "workers_reconnecting"


def test_a_start_is_assigned_acknowledged_and_activated(admin: Client, worker: RawWorker) -> None:
    session = _start(admin, _resource(admin))
    assert session.state == session_pb2.SESSION_STATE_REQUESTED and session.worker_id == worker.worker_id
    assignment = worker.assignment(session.id)
    assert assignment.lease_token and assignment.secret_ref.startswith("rap-secret://")
    assert assignment.environment == worker_pb2.ENVIRONMENT_DEVELOPMENT
    got = admin.sessions.GetSession(session_pb2.GetSessionRequest(id=session.id)).session
    assert got.state == session_pb2.SESSION_STATE_ASSIGNED
    worker.accept(assignment)
    worker.send(
        session_state_update=worker_pb2.SessionStateUpdate(
            session_id=session.id, state=session_pb2.SESSION_STATE_ACTIVE
        )
    )
    _wait(admin, session.id, session_pb2.SESSION_STATE_ACTIVE)


def _wait(client: Client, session_id: str, state: int, timeout: float = 10) -> session_pb2.Session:
    deadline = time.monotonic() + timeout
    while True:
        got = client.sessions.GetSession(session_pb2.GetSessionRequest(id=session_id)).session
        if got.state == state:
            return got
        assert time.monotonic() < deadline, session_pb2.SessionState.Name(got.state)
        time.sleep(0.05)


def test_members_see_their_own_sessions_and_strangers_none(
    server: ServerThread, admin: Client, worker: RawWorker, make_org
) -> None:  # type: ignore[no-untyped-def]
    resource_id = _resource(admin)
    alice, bob = _member(server, admin), _member(server, admin)
    mine = _start(alice, resource_id)
    error = rpc_error(bob.sessions.GetSession, session_pb2.GetSessionRequest(id=mine.id))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = rpc_error(bob.sessions.TerminateSession, session_pb2.TerminateSessionRequest(id=mine.id))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert [s.id for s in alice.sessions.ListSessions(session_pb2.ListSessionsRequest()).sessions] == [
        mine.id
    ]
    assert not bob.sessions.ListSessions(session_pb2.ListSessionsRequest()).sessions
    assert mine.id in {s.id for s in admin.sessions.ListSessions(session_pb2.ListSessionsRequest()).sessions}
    stranger = make_org()
    with server.channel() as channel:
        other = Client(channel, stranger.admin_token)
        assert (
            rpc_error(other.sessions.GetSession, session_pb2.GetSessionRequest(id=mine.id)).code()
            == grpc.StatusCode.NOT_FOUND
        )
        error = rpc_error(
            other.sessions.StartSession, session_pb2.StartSessionRequest(resource_id=resource_id)
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND


def test_terminate_reaches_the_worker_and_is_audited(admin: Client, worker: RawWorker) -> None:
    session = _start(admin, _resource(admin))
    worker.accept(worker.assignment(session.id))
    ended = admin.sessions.TerminateSession(
        session_pb2.TerminateSessionRequest(id=session.id, reason="operator_request")
    ).session
    assert ended.state == session_pb2.SESSION_STATE_TERMINATED and ended.end_reason == "operator_request"
    while True:
        message = worker.responses.get(timeout=10)
        if message.WhichOneof("message") == "terminate":
            assert message.terminate.session_id == session.id
            break
    again = admin.sessions.TerminateSession(session_pb2.TerminateSessionRequest(id=session.id)).session
    assert again.state == session_pb2.SESSION_STATE_TERMINATED  # idempotent


def test_a_deleted_secret_makes_a_start_a_failed_precondition(admin: Client, worker: RawWorker) -> None:
    resource_id = _resource(admin)
    admin.secrets.DeleteResourceSecret(secret_pb2.DeleteResourceSecretRequest(resource_id=resource_id))
    error = rpc_error(admin.sessions.StartSession, session_pb2.StartSessionRequest(resource_id=resource_id))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert trailer(error, "rap-reason") == "secret_missing"


def test_production_refuses_a_legacy_resource_with_plaintext_credentials(
    prod_server: ServerThread, dev_server: ServerThread, org: Org
) -> None:
    # Stored before the guard existed (here: by the development server on the same database).
    with dev_server.channel() as channel:
        legacy = _resource(
            Client(channel, org.admin_token), {"db": {"password": "Legacy-canary"}}, secret=False
        )
    with prod_server.channel() as channel:
        error = rpc_error(
            Client(channel, org.admin_token).sessions.StartSession,
            session_pb2.StartSessionRequest(resource_id=legacy),
        )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert trailer(error, "rap-reason") == "plaintext_credentials_in_metadata"
    assert "metadata.db.password" in error.details() and "Legacy-canary" not in error.details()


def test_the_resource_policy_narrows_the_channels(admin: Client, worker: RawWorker) -> None:
    resource_id = _resource(admin, {"rap_channels": ["terminal"]})
    session = _start(admin, resource_id, [session_pb2.CHANNEL_TERMINAL, session_pb2.CHANNEL_FILE_UPLOAD])
    assert list(session.channels) == [session_pb2.CHANNEL_TERMINAL]
    assert list(worker.assignment(session.id).channels) == [session_pb2.CHANNEL_TERMINAL]


def test_a_reconnecting_worker_gets_its_live_sessions_and_ends_the_others(
    server: ServerThread, admin: Client, worker: RawWorker
) -> None:
    session = _start(admin, _resource(admin))
    first = worker.assignment(session.id)
    worker.accept(first)
    gone = _start(admin, _resource(admin))
    worker.accept(worker.assignment(gone.id))
    worker.close()
    admin.sessions.TerminateSession(session_pb2.TerminateSessionRequest(id=gone.id))
    unknown = str(uuid.uuid4())
    worker.connect(session_ids=[session.id, gone.id, unknown])
    resent = worker.assignment(session.id)
    assert resent.lease_token != first.lease_token  # signed afresh
    ended = {}
    while len(ended) < 2:
        message = worker.responses.get(timeout=10)
        if message.WhichOneof("message") == "terminate":
            ended[message.terminate.session_id] = message.terminate.reason
    # Each says how it ended, so that the worker refuses later binds with the right reason.
    assert ended == {gone.id: "terminated", unknown: "unknown"}


def test_the_sweeper_fails_a_session_whose_lease_lapsed(
    admin: Client, worker: RawWorker, db: Database, sql
) -> None:  # type: ignore[no-untyped-def]
    session = _start(admin, _resource(admin))
    worker.accept(worker.assignment(session.id))
    worker.session_ids.remove(session.id)  # its heartbeats stop renewing it
    with sql.cursor() as cur:
        cur.execute(
            "UPDATE session_leases SET expires_at = now() - interval '1 second' WHERE session_id = %s",
            (session.id,),
        )
    # This sweeper, or another replica's on the same database (SKIP LOCKED shares the work).
    db.run_sync(LeaseSweeper(db, AuditLog()).sweep_once)
    got = _wait(admin, session.id, session_pb2.SESSION_STATE_FAILED)
    assert (got.state, got.end_reason) == (session_pb2.SESSION_STATE_FAILED, "lease_expired")


def test_heartbeats_renew_the_leases_of_the_sessions_the_worker_runs(
    admin: Client, worker: RawWorker, sql
) -> None:  # type: ignore[no-untyped-def]
    session = _start(admin, _resource(admin))
    worker.accept(worker.assignment(session.id))

    def expiry() -> object:
        with sql.cursor() as cur:
            cur.execute("SELECT expires_at FROM session_leases WHERE session_id = %s", (session.id,))
            return cur.fetchone()[0]

    before = expiry()
    deadline = time.monotonic() + 10
    while expiry() == before:
        assert time.monotonic() < deadline, "no heartbeat renewed the lease"
        time.sleep(0.2)


def _age(sql, session_id: str, *, created: str = "0", active: str = "0") -> None:  # type: ignore[no-untyped-def]
    with sql.cursor() as cur:
        cur.execute(
            "UPDATE sessions SET created_at = created_at - %s::interval, updated_at = updated_at - %s::interval "
            "WHERE id = %s",
            (f"{created} seconds", f"{active} seconds", session_id),
        )


@pytest.fixture
def direct_worker(server: ServerThread, admin: Client) -> Iterator[RawWorker]:
    """A worker that says it has a direct endpoint, so that its sessions can be attached."""
    w = RawWorker(admin, server.target, f"127.0.0.1:{server.worker_port}")
    w.connect(direct_url="wss://127.0.0.1:1/v1/connect")
    yield w
    w.close()


def test_an_active_session_without_an_attachment_past_its_idle_timeout_is_terminated(
    admin: Client, direct_worker: RawWorker, db: Database, sql
) -> None:  # type: ignore[no-untyped-def]
    worker = direct_worker
    admin.admin.UpdateOrganizationPolicy(
        admin_pb2.UpdateOrganizationPolicyRequest(policy=_struct({"rap_session_idle_timeout_seconds": 60}))
    )
    idle, attached = _start(admin, _resource(admin)), _start(admin, _resource(admin))
    for session in (idle, attached):
        worker.activate(worker.assignment(session.id))
        _wait(admin, session.id, session_pb2.SESSION_STATE_ACTIVE)
    admin.sessions.AttachSession(session_pb2.AttachSessionRequest(session_id=attached.id))
    for session in (idle, attached):
        _age(sql, session.id, created="120", active="120")
    sweeper = LeaseSweeper(db, AuditLog())
    db.run_sync(sweeper.end_overdue_once)
    got = _wait(admin, idle.id, session_pb2.SESSION_STATE_TERMINATED)
    assert got.end_reason == "idle_timeout"
    still = admin.sessions.GetSession(session_pb2.GetSessionRequest(id=attached.id)).session
    assert still.state == session_pb2.SESSION_STATE_ACTIVE, "an attached session is not idle"
    events = [
        e
        for e in admin.audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(event_type="session_terminated")
        ).events
        if e.target_id == idle.id
    ]
    assert len(events) == 1 and events[0].details["reason"] == "idle_timeout"
    _wait_terminate(worker, idle.id)  # the worker is told


def test_a_session_past_its_maximum_duration_is_terminated_even_when_attached(
    admin: Client, direct_worker: RawWorker, db: Database, sql
) -> None:  # type: ignore[no-untyped-def]
    worker = direct_worker
    session = _start(admin, _resource(admin))
    worker.activate(worker.assignment(session.id))
    _wait(admin, session.id, session_pb2.SESSION_STATE_ACTIVE)
    admin.sessions.AttachSession(session_pb2.AttachSessionRequest(session_id=session.id))
    db.run_sync(LeaseSweeper(db, AuditLog()).end_overdue_once)
    assert admin.sessions.GetSession(session_pb2.GetSessionRequest(id=session.id)).session.state == (
        session_pb2.SESSION_STATE_ACTIVE
    ), "within its limits"
    _age(sql, session.id, created=str(8 * 3600 + 1))  # the default maximum: 8 hours
    db.run_sync(LeaseSweeper(db, AuditLog()).end_overdue_once)
    got = _wait(admin, session.id, session_pb2.SESSION_STATE_TERMINATED)
    assert got.end_reason == "max_duration"


def _struct(value: dict[str, object]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def _wait_terminate(worker: RawWorker, session_id: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        message = worker.responses.get(timeout=max(0.01, deadline - time.monotonic()))
        if message.WhichOneof("message") == "terminate" and message.terminate.session_id == session_id:
            assert message.terminate.reason == "terminated"
            return


def test_a_retried_start_with_the_same_request_id_returns_the_first_session(
    admin: Client, worker: RawWorker, sql
) -> None:  # type: ignore[no-untyped-def]
    import concurrent.futures

    resource_id = _resource(admin)
    request = session_pb2.StartSessionRequest(resource_id=resource_id, request_id=f"start-{uuid.uuid4().hex}")
    # Sequential retries, and concurrent duplicates (as a client retrying an ambiguous failure).
    first = admin.sessions.StartSession(request).session
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        again = list(pool.map(lambda _: admin.sessions.StartSession(request).session, range(4)))
    assert {s.id for s in again} == {first.id}
    with sql.cursor() as cur:
        cur.execute("SELECT count(*) FROM sessions WHERE resource_id = %s", (resource_id,))
        assert cur.fetchone() == (1,), "one session, however many retries"
    other = session_pb2.StartSessionRequest(resource_id=_resource(admin), request_id=request.request_id)
    error = rpc_error(admin.sessions.StartSession, other)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(error, "rap-reason") == "request_id_reused"
    bad = session_pb2.StartSessionRequest(resource_id=resource_id, request_id="no spaces allowed")
    assert rpc_error(admin.sessions.StartSession, bad).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_refused_start_leaves_its_request_id_free_for_the_retry(admin: Client, sql) -> None:  # type: ignore[no-untyped-def]
    request = session_pb2.StartSessionRequest(
        resource_id=_resource(admin), request_id=f"s-{uuid.uuid4().hex}"
    )
    assert rpc_error(admin.sessions.StartSession, request).code() == grpc.StatusCode.FAILED_PRECONDITION
    with sql.cursor() as cur:
        cur.execute("SELECT count(*) FROM idempotency_keys WHERE request_id = %s", (request.request_id,))
        assert cur.fetchone() == (0,), "the refusal rolled the claim back"


def test_a_message_kind_the_control_plane_does_not_know_is_ignored_not_fatal(
    admin: Client, worker: RawWorker
) -> None:
    """A newer worker may send a kind this replica does not know: the stream stays up."""
    unknown = worker_pb2.ConnectRequest()
    unknown.MergeFromString(b"\xba\x06\x05later")  # field 103, not in this contract
    assert unknown.WhichOneof("message") is None and unknown.SerializeToString()
    worker._requests.put(unknown)
    session = _start(admin, _resource(admin))
    assert worker.assignment(session.id).session_id == session.id, "the same stream still delivers"
    assert worker.error is None
