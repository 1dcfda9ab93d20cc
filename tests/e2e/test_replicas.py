"""Two control-plane replicas on one PostgreSQL and one Redis, a worker, sshd:
all separate processes.

* The worker streams to replica A; a session started on replica B reaches it.
* Replica A is killed: the worker reconnects to B and keeps its live session.
* Redis never sees a credential: every command it receives during the whole
  session (MONITOR) and every key left at the end are searched for the canary.
* The worker is killed with SIGKILL during a session: within the lease window
  the session is failed and audited, and the next session goes to another worker.
* A replica that loses Redis refuses new sessions with UNAVAILABLE, and
  recovers by itself when Redis returns.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from rap.v1 import session_pb2
from tests.e2e.cluster import cluster, states
from tests.support.client import rpc_error, trailer
from tests.support.redis_server import PrivateRedis
from tests.support.sshd import Sshd

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

LEASE_TTL = 6  # tests.support.processes.control_env


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


class Monitor:
    """Every command a Redis server receives, as MONITOR reports it."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.sendall(b"MONITOR\r\n")
        self.data = bytearray()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while chunk := self._recv():
            self.data.extend(chunk)

    def _recv(self) -> bytes:
        try:
            return self._sock.recv(65536)
        except OSError:
            return b""

    def stop(self) -> str:
        time.sleep(0.2)
        self._sock.close()
        self._thread.join(5)
        return self.data.decode(errors="replace")


def _probe(path: Path, session_id: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines() if path.exists() else []:
            entry = json.loads(line)
            if entry["session_id"] == session_id:
                return str(entry["output"])
        time.sleep(0.05)
    raise AssertionError(f"the worker ran no command over session {session_id}")


def _wait_log(path: Path, text: str, after: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace")[after:]:
        assert time.monotonic() < deadline, f"{path.name}: no {text!r}"
        time.sleep(0.1)


def test_a_session_started_on_b_reaches_the_worker_on_a_which_survives_a_losing_a(
    postgres_url: str, private_redis: PrivateRedis, sshd: Sshd, tmp_path: Path
) -> None:
    monitor = Monitor(private_redis.port)
    with cluster(postgres_url, tmp_path, private_redis.url, replicas=2) as c:
        a, b = c.replicas
        resource_id = c.ssh_resource(sshd)
        worker = c.enroll_worker("w1", targets=[a.worker_target, b.worker_target])
        assert "connected to " + a.worker_target in worker.log.read_text()
        on_b = c.client(b)
        session = c.start(resource_id, client=on_b)
        active = c.wait_state(session.id, states("active", "failed"), client=on_b)
        assert active.state == session_pb2.SESSION_STATE_ACTIVE, active.end_reason
        assert _probe(worker.probe_out, session.id).strip() == sshd.username

        mark = len(worker.log.read_text(errors="replace"))
        a.kill()
        _wait_log(worker.log, "connected to " + b.worker_target, mark)
        # Longer than a lease: only B's heartbeats can have kept it alive.
        time.sleep(LEASE_TTL + 3)
        kept = c.wait_state(session.id, states("active", "failed", "terminated"), client=on_b)
        assert kept.state == session_pb2.SESSION_STATE_ACTIVE, kept.end_reason
        failed = [e for e in c.audit("session_failed", client=on_b) if e.target_id == session.id]
        assert not failed
        on_b.sessions.TerminateSession(session_pb2.TerminateSessionRequest(id=session.id))
        c.wait_state(session.id, states("terminated"), client=on_b)
        commands = monitor.stop()
        keys = redis.Redis.from_url(private_redis.url)
        left = {k: keys.dump(k) for k in keys.keys("*")}
        keys.close()
    assert "rpush" in commands.lower() or "RPUSH" in commands, "MONITOR saw no coordination traffic"
    for form in (sshd.password, sshd.password.encode().hex()):
        assert form not in commands
        assert all(form.encode() not in k and form.encode() not in (v or b"") for k, v in left.items())


def test_a_killed_worker_fails_its_session_within_the_lease_and_the_next_goes_elsewhere(
    postgres_url: str, private_redis: PrivateRedis, sshd: Sshd, tmp_path: Path
) -> None:
    with cluster(postgres_url, tmp_path, private_redis.url, replicas=2) as c:
        resource_id = c.ssh_resource(sshd)
        doomed = c.enroll_worker("doomed")
        session = c.start(resource_id)
        assert session.worker_id  # the only worker
        c.wait_state(session.id, states("active"))
        survivor = c.enroll_worker("survivor")
        doomed.kill()
        killed_at = time.monotonic()
        failed = c.wait_state(session.id, states("failed", "terminated"), timeout=LEASE_TTL + 10)
        assert failed.state == session_pb2.SESSION_STATE_FAILED
        assert failed.end_reason == "lease_expired"
        assert time.monotonic() - killed_at < LEASE_TTL + 10
        rows = [e for e in c.audit("session_failed") if e.target_id == session.id]
        assert len(rows) == 1 and rows[0].details["reason"] == "lease_expired"
        again = c.start(resource_id)
        assert again.worker_id != session.worker_id
        assert c.wait_state(again.id, states("active", "failed")).state == session_pb2.SESSION_STATE_ACTIVE
        assert _probe(survivor.probe_out, again.id).strip() == sshd.username


def test_a_replica_without_redis_refuses_new_sessions_and_recovers(
    postgres_url: str, private_redis: PrivateRedis, sshd: Sshd, tmp_path: Path
) -> None:
    with cluster(postgres_url, tmp_path, private_redis.url) as c:
        resource_id = c.ssh_resource(sshd)
        c.enroll_worker("w1")
        private_redis.stop()
        error = rpc_error(
            c.admin.sessions.StartSession, session_pb2.StartSessionRequest(resource_id=resource_id)
        )
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert trailer(error, "rap-reason") == "coordination_unavailable"
        assert not c.admin.sessions.ListSessions(session_pb2.ListSessionsRequest()).sessions, (
            "nothing half-started"
        )
        private_redis.start()
        deadline = time.monotonic() + 30
        session = None
        while session is None:
            try:
                session = c.start(resource_id)
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                # Until the bus is back (UNAVAILABLE) and the worker's next heartbeat
                # marks it online again (FAILED_PRECONDITION, no worker).
                assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION), code
                assert time.monotonic() < deadline, "no recovery within 30 s"
                time.sleep(0.5)
        assert c.wait_state(session.id, states("active", "failed")).state == session_pb2.SESSION_STATE_ACTIVE
