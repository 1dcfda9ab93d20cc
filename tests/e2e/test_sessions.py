"""Sessions end to end: control plane, worker agent and sshd as separate processes.

A secret-backed SSH resource whose password only the secret store knows
becomes an active session through assignment-time resolution, and a
command over it answers the target user's name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import struct_pb2

from rap.v1 import resource_pb2, session_pb2
from tests.e2e.cluster import Cluster, cluster, states
from tests.support.sshd import Sshd

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def one(postgres_url: str, tmp_path: Path) -> Iterator[Cluster]:
    with cluster(postgres_url, tmp_path, None) as c:
        yield c


def _probe(path: Path, session_id: str, timeout: float = 20) -> str:
    """What the worker's probe got from the command it ran over the session."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        for entry in map(json.loads, lines):
            if entry["session_id"] == session_id:
                return str(entry["output"])
        time.sleep(0.05)
    raise AssertionError(f"the worker ran no command over session {session_id}")


def test_an_ssh_session_resolves_its_secret_and_runs_a_command(one: Cluster, sshd: Sshd) -> None:
    resource_id = one.ssh_resource(sshd)
    worker = one.enroll_worker("w1")
    session = one.start(resource_id)
    assert session.state == session_pb2.SESSION_STATE_REQUESTED
    active = one.wait_state(session.id, states("active", "failed"))
    assert active.state == session_pb2.SESSION_STATE_ACTIVE, active.end_reason
    assert _probe(worker.probe_out, session.id).strip() == sshd.username
    accessed = one.audit("resource_secret_accessed")
    assert [e.target_id for e in accessed if e.details["session_id"] == session.id]
    assert one.audit("session_started")
    # The password is nowhere but in the ciphertext and the worker's memory.
    for table, dump in one.table_dump().items():
        assert sshd.password not in dump, table
    assert sshd.password not in one.logs()

    ended = one.admin.sessions.TerminateSession(session_pb2.TerminateSessionRequest(id=session.id)).session
    assert ended.state == session_pb2.SESSION_STATE_TERMINATED
    assert [e for e in one.audit("session_terminated") if e.target_id == session.id]


def test_a_host_key_that_is_not_the_pinned_one_is_refused(one: Cluster, sshd: Sshd) -> None:
    one.enroll_worker("w-pin")
    wrong = one.start(one.ssh_resource(sshd, host_key=sshd.other_host_key))
    failed = one.wait_state(wrong.id, states("active", "failed"))
    assert (failed.state, failed.end_reason) == (session_pb2.SESSION_STATE_FAILED, "host_key_mismatch")
    assert [e for e in one.audit("session_failed") if e.target_id == wrong.id]
    unpinned = one.start(one.secret_resource(sshd.address, sshd.username, sshd.password))
    failed = one.wait_state(unpinned.id, states("active", "failed"))
    assert (failed.state, failed.end_reason) == (session_pb2.SESSION_STATE_FAILED, "host_key_not_pinned")
    assert sshd.password not in one.logs()


def test_development_may_use_plaintext_metadata_credentials_and_says_so(one: Cluster, sshd: Sshd) -> None:
    worker = one.enroll_worker("w-dev")
    metadata = struct_pb2.Struct()
    metadata.update({"ssh_host_key": sshd.host_key, "username": sshd.username, "password": sshd.password})
    resource = one.admin.resources.CreateResource(
        resource_pb2.CreateResourceRequest(
            resource=resource_pb2.Resource(
                name="legacy-dev", protocol=resource_pb2.PROTOCOL_SSH, address=sshd.address, metadata=metadata
            )
        )
    ).resource
    session = one.start(resource.id)
    assert one.wait_state(session.id, states("active", "failed")).state == session_pb2.SESSION_STATE_ACTIVE
    assert _probe(worker.probe_out, session.id).strip() == sshd.username
    log = worker.log.read_text()
    assert "plaintext credentials from resource metadata (development only)" in log
    assert sshd.password not in log
