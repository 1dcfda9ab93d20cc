"""The worker agent's enrollment and certificate renewal against an in-process control plane."""

from __future__ import annotations

import asyncio
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rap.v1 import admin_pb2, audit_pb2
from rap_common.identity import ROLE_WORKER, StateDir, enroll, platform_channel
from rap_control.config import Environment
from rap_control.db.engine import Database
from rap_control.keys.local import LocalKeyProvider
from rap_control.pki import certificates
from rap_worker.agent import Agent, AgentConfig, key_matches
from tests.conftest import Org, _settings
from tests.support.client import Client
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(db: Database, database_url: str, provider: LocalKeyProvider) -> Iterator[ServerThread]:
    s = ServerThread(
        _settings(Environment.DEVELOPMENT, None, database_url), db, provider, workers=True
    ).start()
    yield s
    s.stop()


async def test_the_agent_renews_its_certificate_and_keeps_its_id(
    server: ServerThread, org: Org, tmp_path: Path
) -> None:
    with server.channel() as channel:
        admin = Client(channel, org.admin_token)
        token = admin.admin.CreateWorkerEnrollmentToken(
            admin_pb2.CreateWorkerEnrollmentTokenRequest(worker_name="agent")
        ).enrollment_token
        identity = await enroll(
            server.target, token, "agent", ["agent.internal"], tls_ca_pem=None, expected_role=ROLE_WORKER
        )
        state = StateDir(tmp_path / "state")
        state.save(identity)
        target = f"127.0.0.1:{server.worker_port}"
        agent = Agent(AgentConfig(state.path, [target]))
        agent.worker_id = identity.identity_id
        async with platform_channel(target, identity) as worker:
            await agent.renew(worker)
        renewed = state.load()
        assert renewed.certificate().serial_number != identity.certificate().serial_number
        assert str(certificates.worker_id_of(renewed.certificate())) == identity.identity_id
        assert key_matches(renewed) and renewed.key_pem != identity.key_pem
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in state.path.iterdir())
        events = admin.audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(event_type="worker_certificate_renewed")
        ).events
        assert [e.target_id for e in events] == [identity.identity_id]


async def test_the_agent_fetches_the_published_keys_with_its_own_identity_rate_limited(
    server: ServerThread, org: Org, tmp_path: Path
) -> None:
    with server.channel() as channel:
        admin = Client(channel, org.admin_token)
        token = admin.admin.CreateWorkerEnrollmentToken(
            admin_pb2.CreateWorkerEnrollmentTokenRequest(worker_name="keys")
        ).enrollment_token
        published = admin.admin.GetJwks(admin_pb2.GetJwksRequest()).jwks
    identity = await enroll(server.target, token, "keys", [], tls_ca_pem=None, expected_role=ROLE_WORKER)
    state = StateDir(tmp_path / "state")
    state.save(identity)
    target = f"127.0.0.1:{server.worker_port}"
    agent = Agent(AgentConfig(state.path, [target]))
    assert agent.jwks == {}
    async with platform_channel(target, identity) as worker:
        agent._channel = worker
        assert await agent.refresh_jwks()
        assert set(agent.jwks) == {k.kid for k in published.keys}
        # A second unknown kid right away does not make another call.
        assert not await agent.refresh_jwks()


async def test_an_unexpected_failure_in_a_session_reaches_the_control_plane_at_once(
    server: ServerThread,
    org: Org,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception no adapter expected (here, in the TCP adapter) fails the session with
    a reason right away; before, the session stayed `starting` until its lease lapsed."""
    from rap.v1 import resource_pb2, session_pb2
    from rap_worker import agent as agent_module

    canary = f"adapter-bug-{uuid.uuid4().hex}"

    async def broken(address: str) -> None:
        raise RuntimeError(canary)

    monkeypatch.setattr(agent_module.tcp, "connect", broken)
    with server.channel() as channel:
        admin = Client(channel, org.admin_token)
        token = admin.admin.CreateWorkerEnrollmentToken(
            admin_pb2.CreateWorkerEnrollmentTokenRequest(worker_name="broken")
        ).enrollment_token
        identity = await enroll(
            server.target, token, "broken", [], tls_ca_pem=None, expected_role=ROLE_WORKER
        )
        state = StateDir(tmp_path / "state")
        state.save(identity)
        agent = Agent(AgentConfig(state.path, [f"127.0.0.1:{server.worker_port}"], protocols=["tcp"]))
        running = asyncio.create_task(agent.run())
        try:
            await asyncio.wait_for(agent.connected.wait(), 30)
            resource = admin.resources.CreateResource(
                resource_pb2.CreateResourceRequest(
                    resource=resource_pb2.Resource(
                        name=f"tcp-{uuid.uuid4().hex[:6]}",
                        protocol=resource_pb2.PROTOCOL_TCP,
                        address="127.0.0.1:9",
                    )
                )
            ).resource
            session = await asyncio.to_thread(
                admin.sessions.StartSession, session_pb2.StartSessionRequest(resource_id=resource.id)
            )
            ended = session.session
            for _ in range(600):
                ended = (
                    await asyncio.to_thread(
                        admin.sessions.GetSession, session_pb2.GetSessionRequest(id=session.session.id)
                    )
                ).session
                if ended.state == session_pb2.SESSION_STATE_FAILED:
                    break
                await asyncio.sleep(0.05)
            assert ended.state == session_pb2.SESSION_STATE_FAILED
            assert ended.end_reason == "worker_error_runtimeerror"
            # The log has the type and where, never the message (a library's text could quote
            # what it was handed).
            assert "failed unexpectedly: RuntimeError" in caplog.text
            assert canary not in caplog.text
        finally:
            agent.shutdown()
            await asyncio.wait_for(running, 30)
