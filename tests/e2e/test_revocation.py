"""Revocation reaches live sessions at once, not when a lease lapses.

A disabled user's bound terminal closes (4412) and the session is
terminated (user_disabled); a revoked worker's sessions fail
(worker_revoked), its bound clients are closed (4412, worker_revoked), and
the worker process stops. The lease TTL is long here, so nothing below can
be the sweeper's doing.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from rap.v1 import admin_pb2, session_pb2
from rap_common import frames
from tests.e2e.cluster import Cluster, cluster, states
from tests.support.client import Client
from tests.support.processes import WorkerProcess
from tests.support.sshd import Sshd

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def plane(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(
        postgres_url, tmp_path_factory.mktemp("revocation"), None, RAP_SESSION_LEASE_TTL_SECONDS="600"
    ) as c:
        yield c


def _member(plane: Cluster) -> tuple[str, Client]:
    user = plane.admin.admin.CreateUser(
        admin_pb2.CreateUserRequest(
            email=f"m-{uuid.uuid4().hex[:8]}@e2e.test", display_name="member", role=admin_pb2.ROLE_MEMBER
        )
    ).user
    token = plane.admin.admin.CreateApiToken(admin_pb2.CreateApiTokenRequest(user_id=user.id, name="t")).token
    return user.id, Client(plane.a.channel(), token)


def _active(plane: Cluster, sshd: Sshd, client: Client) -> str:
    session = plane.start(plane.ssh_resource(sshd), client)
    reached = plane.wait_state(session.id, states("active", "failed"), client=client)
    assert reached.state == session_pb2.SESSION_STATE_ACTIVE, reached.end_reason
    return str(session.id)


async def _bound(
    client: Client, session_id: str
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    attachment = await asyncio.to_thread(
        client.sessions.AttachSession, session_pb2.AttachSessionRequest(session_id=session_id)
    )
    direct = attachment.attachment.candidates[0]
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(
        direct.url,
        headers={"Authorization": f"Bearer {attachment.attachment.data_plane_token}"},
        protocols=(frames.SUBPROTOCOL,),
        ssl=ssl.create_default_context(cadata=direct.ca_bundle_pem),
    )
    await ws.send_bytes(frames.terminal(b"echo bound-$((3*4))\n"))
    seen = b""
    while b"bound-12" not in seen:
        message = await asyncio.wait_for(ws.receive(), 15)
        assert message.type == aiohttp.WSMsgType.BINARY, message
        frame = frames.decode(message.data)
        if frame.HasField("terminal_data"):
            seen += frame.terminal_data.data
    return http, ws


async def _closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    """Read until the worker closes the connection; its code and reason."""
    while True:
        message = await asyncio.wait_for(ws.receive(), 20)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return ws.close_code, str(message.extra or "")


def test_disabling_a_user_ends_their_bound_session_at_once(plane: Cluster, sshd: Sshd) -> None:
    plane.enroll_worker("for-users")
    user_id, member = _member(plane)
    session_id = _active(plane, sshd, member)

    async def go() -> tuple[int | None, str]:
        http, ws = await _bound(member, session_id)
        try:
            await asyncio.to_thread(
                plane.admin.admin.UpdateUser, admin_pb2.UpdateUserRequest(id=user_id, disabled=True)
            )
            return await _closed_with(ws)
        finally:
            await ws.close()
            await http.close()
            # aiohttp's documented graceful shutdown: let the TLS transports finish closing.
            await asyncio.sleep(0.25)

    assert asyncio.run(go()) == (4412, "session_ended")
    ended = plane.admin.sessions.GetSession(session_pb2.GetSessionRequest(id=session_id)).session
    assert ended.state == session_pb2.SESSION_STATE_TERMINATED and ended.end_reason == "user_disabled"
    rows = [e for e in plane.audit("session_terminated") if e.target_id == session_id]
    assert len(rows) == 1 and rows[0].details["reason"] == "user_disabled"


def test_revoking_a_worker_ends_its_sessions_and_closes_its_clients_at_once(
    plane: Cluster, sshd: Sshd
) -> None:
    for worker in plane.workers:
        worker.stop()
    doomed: WorkerProcess = plane.enroll_worker("doomed")
    session_id = _active(plane, sshd, plane.admin)
    worker_id = next(
        w.id
        for w in plane.admin.admin.ListWorkers(admin_pb2.ListWorkersRequest()).workers
        if w.name == "doomed"
    )

    async def go() -> tuple[int | None, str]:
        http, ws = await _bound(plane.admin, session_id)
        try:
            started = time.monotonic()
            await asyncio.to_thread(
                plane.admin.admin.RevokeWorker, admin_pb2.RevokeWorkerRequest(id=worker_id)
            )
            closed = await _closed_with(ws)
            assert time.monotonic() - started < 15
            return closed
        finally:
            await ws.close()
            await http.close()
            # aiohttp's documented graceful shutdown: let the TLS transports finish closing.
            await asyncio.sleep(0.25)

    assert asyncio.run(go()) == (4412, "worker_revoked")
    failed = plane.admin.sessions.GetSession(session_pb2.GetSessionRequest(id=session_id)).session
    assert failed.state == session_pb2.SESSION_STATE_FAILED and failed.end_reason == "worker_revoked"
    rows = [e for e in plane.audit("session_failed") if e.target_id == session_id]
    assert len(rows) == 1 and rows[0].details["reason"] == "worker_revoked"
    assert doomed.process is not None and doomed.process.wait(20) == 3
