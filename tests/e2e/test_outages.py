"""What an operator's bad day does to live sessions: the database goes away and comes back.

The replicas reach PostgreSQL through a proxy the test cuts; the test
itself reads the database directly. Lease TTL 6 s, heartbeats every second.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import grpc
import psycopg2
import pytest

from rap.v1 import resource_pb2, session_pb2
from rap_common import frames
from tests.conftest import _libpq
from tests.e2e.cluster import Cluster, cluster, states
from tests.support.client import rpc_error
from tests.support.processes import WorkerProcess
from tests.support.raw_worker import RawWorker
from tests.support.sshd import Sshd

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def plane(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(postgres_url, tmp_path_factory.mktemp("outages"), None, database_proxy=True) as c:
        yield c


def _sql(plane: Cluster, query: str, *args: Any) -> Any:
    with psycopg2.connect(_libpq(plane.database_url)) as conn, conn.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchone()


def _until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def _lapsed(plane: Cluster, session_id: str) -> bool:
    return bool(
        _sql(plane, "SELECT expires_at < now() FROM session_leases WHERE session_id = %s", session_id)[0]
    )


def _state(plane: Cluster, session_id: str) -> str:
    return str(_sql(plane, "SELECT state FROM sessions WHERE id = %s", session_id)[0])


def _tcp_resource(plane: Cluster) -> str:
    return str(
        plane.admin.resources.CreateResource(
            resource_pb2.CreateResourceRequest(
                resource=resource_pb2.Resource(
                    name=f"tcp-{uuid.uuid4().hex[:8]}",
                    protocol=resource_pb2.PROTOCOL_TCP,
                    address="127.0.0.1:9",
                )
            )
        ).resource.id
    )


async def _round_trip(ws: aiohttp.ClientWebSocketResponse, marker: str) -> None:
    await ws.send_bytes(frames.terminal(f"echo {marker}-$((2*21))\n".encode()))
    seen = b""
    while f"{marker}-42".encode() not in seen:
        message = await asyncio.wait_for(ws.receive(), 20)
        assert message.type == aiohttp.WSMsgType.BINARY, (message.type, message.extra)
        frame = frames.decode(message.data)
        if frame.HasField("terminal_data"):
            seen += frame.terminal_data.data


def test_a_database_outage_longer_than_a_lease_fails_only_the_silent_workers_sessions(
    plane: Cluster, sshd: Sshd
) -> None:
    assert plane.proxy is not None
    silent = RawWorker(plane.admin, plane.a.target, plane.a.worker_target, "silent")
    silent.connect(protocols=(resource_pb2.PROTOCOL_TCP,))
    tcp = _tcp_resource(plane)
    doomed = plane.start(tcp)
    silent.activate(silent.assignment(doomed.id))
    assert plane.wait_state(doomed.id, states("active")).state == session_pb2.SESSION_STATE_ACTIVE
    plane.enroll_worker("steady")
    kept = plane.start(plane.ssh_resource(sshd))
    assert plane.wait_state(kept.id, states("active", "failed")).state == session_pb2.SESSION_STATE_ACTIVE
    attachment = plane.admin.sessions.AttachSession(
        session_pb2.AttachSessionRequest(session_id=kept.id)
    ).attachment
    direct = attachment.candidates[0]

    async def go() -> None:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(
                direct.url,
                headers={"Authorization": f"Bearer {attachment.data_plane_token}"},
                protocols=(frames.SUBPROTOCOL,),
                ssl=ssl.create_default_context(cadata=direct.ca_bundle_pem),
            )
            await _round_trip(ws, "before")
            plane.proxy.cut()  # type: ignore[union-attr]
            silent.close()  # this worker goes silent during the outage
            # The outage lasts until both leases have lapsed in the database.
            await asyncio.to_thread(
                _until, "both leases lapse", lambda: _lapsed(plane, kept.id) and _lapsed(plane, doomed.id)
            )
            await _round_trip(ws, "during")
            # Meanwhile a new start answers UNAVAILABLE, and writes nothing.
            error = await asyncio.to_thread(
                rpc_error, plane.admin.sessions.StartSession, session_pb2.StartSessionRequest(resource_id=tcp)
            )
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            plane.proxy.restore()  # type: ignore[union-attr]
            await asyncio.to_thread(
                _until, "the silent worker's session fails", lambda: _state(plane, doomed.id) == "failed"
            )
            assert _state(plane, kept.id) == "active"
            assert not _lapsed(plane, kept.id), "the live worker's heartbeats renewed its lease"
            await _round_trip(ws, "after")
            await ws.close()

    asyncio.run(go())
    reason = _sql(plane, "SELECT end_reason FROM sessions WHERE id = %s", doomed.id)[0]
    assert reason == "lease_expired"
    assert not [e for e in plane.audit("session_failed") if e.target_id == kept.id]


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (sshd's per-connection processes and theirs)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    children = {int(p) for p in found.stdout.split()}
    return children.union(*(_children(c) for c in children)) if children else children


def _activations(worker: WorkerProcess, session_id: str) -> int:
    if not worker.probe_out.exists():
        return 0
    return sum(
        1
        for line in worker.probe_out.read_text().splitlines()
        if json.loads(line)["session_id"] == session_id
    )


def test_a_session_the_target_ended_during_an_outage_is_never_started_again(
    plane: Cluster, sshd: Sshd
) -> None:
    """The worker's report that the target hung up is sent while PostgreSQL is down; at
    recovery the session ends as terminated (target_closed), and the worker never logs
    in to the target again for it."""
    assert plane.proxy is not None
    worker = next((w for w in plane.workers if w.process and w.process.poll() is None), None)
    worker = worker or plane.enroll_worker("steady-2")
    before = _children(sshd.process.pid)
    session = plane.start(plane.ssh_resource(sshd))
    assert plane.wait_state(session.id, states("active", "failed")).state == session_pb2.SESSION_STATE_ACTIVE
    _until("the worker's probe ran", lambda: _activations(worker, session.id) == 1)
    ours = _children(sshd.process.pid) - before
    assert ours, "the session's sshd process"
    connects = worker.log.read_text().count("connected to")
    plane.proxy.cut()
    try:
        for pid in ours:
            os.kill(pid, signal.SIGKILL)  # the target hangs up
        _until(
            "the worker reports the end",
            lambda: f"session {session.id} ended (terminated: target_closed)" in worker.log.read_text(),
        )
    finally:
        plane.proxy.restore()
    _until("the session is terminated", lambda: _state(plane, session.id) == "terminated")
    assert _sql(plane, "SELECT end_reason FROM sessions WHERE id = %s", session.id)[0] == "target_closed"
    # The report killed the stream (the database could not record it): the worker
    # reconnected since, and was re-synced from PostgreSQL.
    _until("the worker reconnected", lambda: worker.log.read_text().count("connected to") > connects)
    assert _activations(worker, session.id) == 1, "the worker logged in to the target again"
