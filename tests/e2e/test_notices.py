"""Every notice the bus carries is recoverable from PostgreSQL.

Two replicas on a private Redis; the worker streams to replica A, the
client attaches through replica B. The test loses a notice on purpose by
pointing the worker's route at a replica that does not exist (as a Redis
flush or restart would lose it) and checks the event landed in that dead
inbox. A bind whose attachment notice was lost still binds (the worker asks
the control plane); a detach whose notice was lost still closes the bound
connection (the worker's heartbeat lists it, the control plane answers).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
import redis

from rap.v1 import admin_pb2, session_pb2
from rap_common import frames
from tests.e2e.cluster import Cluster, cluster, states
from tests.support.processes import WorkerProcess
from tests.support.redis_server import PrivateRedis
from tests.support.sshd import Sshd

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

GHOST = "ghost-replica"


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("bus"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plane(
    postgres_url: str, bus: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    with cluster(postgres_url, tmp_path_factory.mktemp("notices"), bus.url, replicas=2) as c:
        yield c


@pytest.fixture(scope="module")
def worker(plane: Cluster) -> WorkerProcess:
    return plane.enroll_worker("noticed", targets=[plane.a.worker_target])


def _worker_id(plane: Cluster) -> str:
    workers = plane.admin.admin.ListWorkers(admin_pb2.ListWorkersRequest()).workers
    return next(w.id for w in workers if w.name == "noticed")


def _lost(bus: PrivateRedis, worker_id: str, act: Callable[[], Any]) -> Any:
    """Run ``act`` while the worker's route points at a dead replica, until its notice
    is seen in the dead inbox (the heartbeats re-claim the route every second, so a
    try can race them; each try is a fresh act)."""
    r = redis.Redis.from_url(bus.url)
    try:
        for _ in range(20):
            r.delete(f"rap:inbox:{GHOST}")
            r.set(f"rap:route:{worker_id}", GHOST, ex=30)
            result = act()
            if r.llen(f"rap:inbox:{GHOST}"):
                return result
        raise AssertionError("could not lose a notice in 20 tries")
    finally:
        r.close()


async def _bind(
    attachment: session_pb2.Attachment,
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    direct = attachment.candidates[0]
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(
        direct.url,
        headers={"Authorization": f"Bearer {attachment.data_plane_token}"},
        protocols=(frames.SUBPROTOCOL,),
        ssl=ssl.create_default_context(cadata=direct.ca_bundle_pem),
    )
    await ws.send_bytes(frames.terminal(b"echo noticed-$((40+2))\n"))
    seen = b""
    while b"noticed-42" not in seen:
        message = await asyncio.wait_for(ws.receive(), 20)
        assert message.type == aiohttp.WSMsgType.BINARY, (message.type, message.extra)
        frame = frames.decode(message.data)
        if frame.HasField("terminal_data"):
            seen += frame.terminal_data.data
    return http, ws


async def _close(http: aiohttp.ClientSession) -> None:
    await http.close()
    # aiohttp's documented graceful shutdown: let the TLS transports finish closing.
    await asyncio.sleep(0.25)


def _active(plane: Cluster, sshd: Sshd) -> str:
    session = plane.start(plane.ssh_resource(sshd), plane.client(plane.replicas[1]))
    assert plane.wait_state(session.id, states("active", "failed")).state == session_pb2.SESSION_STATE_ACTIVE
    return str(session.id)


def test_a_bind_whose_attachment_notice_was_lost_still_binds(
    plane: Cluster, bus: PrivateRedis, sshd: Sshd, worker: WorkerProcess
) -> None:
    session_id = _active(plane, sshd)
    b = plane.client(plane.replicas[1])

    def attach() -> session_pb2.Attachment:
        return b.sessions.AttachSession(
            session_pb2.AttachSessionRequest(session_id=session_id, takeover=True)
        ).attachment

    attachment = _lost(bus, _worker_id(plane), attach)

    async def go() -> None:
        http, ws = await _bind(attachment)
        await ws.close()
        await _close(http)

    asyncio.run(go())
    assert not [e for e in plane.audit("data_plane_bind_rejected") if e.target_id == session_id]


def test_a_detach_whose_notice_was_lost_still_closes_the_bound_connection(
    plane: Cluster, bus: PrivateRedis, sshd: Sshd, worker: WorkerProcess
) -> None:
    session_id = _active(plane, sshd)
    b = plane.client(plane.replicas[1])
    attachment = b.sessions.AttachSession(session_pb2.AttachSessionRequest(session_id=session_id)).attachment

    async def go() -> tuple[int | None, str]:
        http, ws = await _bind(attachment)
        try:
            started = time.monotonic()
            await asyncio.to_thread(
                _lost,
                bus,
                _worker_id(plane),
                lambda: b.sessions.DetachSession(
                    session_pb2.DetachSessionRequest(
                        session_id=session_id, attachment_id=attachment.attachment_id
                    )
                ),
            )
            while True:
                message = await asyncio.wait_for(ws.receive(), 30)
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    assert time.monotonic() - started < 30
                    return ws.close_code, str(message.extra or "")
        finally:
            await ws.close()
            await _close(http)

    assert asyncio.run(go()) == (4411, "detached")
