"""A worker that dies under a relayed connection: the client learns it with a real close code.

The gateway used to pass on the reserved 1006 (which no endpoint may send);
now the client gets 1011 with the reason ``worker_connection_lost``.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from rap.v1 import admin_pb2, identity_pb2, session_pb2
from rap_common import frames
from tests.e2e.cluster import Cluster, cluster, states
from tests.support.processes import free_port, start_gateway
from tests.support.sshd import Sshd
from tests.support.tls import make_server_tls

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def setup(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, subprocess.Popen[bytes]]]:
    directory: Path = tmp_path_factory.mktemp("gwloss")
    tls = make_server_tls(directory)
    (directory / "gw-ca.pem").write_bytes(tls.ca_pem)
    port = free_port()
    with cluster(
        postgres_url,
        directory,
        None,
        RAP_GATEWAY_URL=f"wss://localhost:{port}/v1/connect",
        RAP_GATEWAY_CA_FILE=str(directory / "gw-ca.pem"),
    ) as c:
        token = c.admin.admin.CreateWorkerEnrollmentToken(
            admin_pb2.CreateWorkerEnrollmentTokenRequest(
                worker_name="gw", role=identity_pb2.IDENTITY_ROLE_GATEWAY
            )
        ).enrollment_token
        gateway = start_gateway(
            directory, port, c.a.target, token, [c.a.worker_target], tls.cert_file, tls.key_file
        )
        try:
            yield c, gateway
        finally:
            gateway.terminate()
            gateway.wait(10)


def test_a_worker_killed_under_a_relayed_connection_closes_the_client_with_1011(
    setup: tuple[Cluster, subprocess.Popen[bytes]], sshd: Sshd
) -> None:
    plane, _ = setup
    worker = plane.enroll_worker("doomed")
    session = plane.start(plane.ssh_resource(sshd))
    assert plane.wait_state(session.id, states("active", "failed")).state == session_pb2.SESSION_STATE_ACTIVE
    attachment = plane.admin.sessions.AttachSession(
        session_pb2.AttachSessionRequest(session_id=session.id)
    ).attachment
    gw = attachment.candidates[-1]
    assert gw.kind == session_pb2.CANDIDATE_KIND_GATEWAY

    async def go() -> tuple[int | None, str]:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(
                gw.url,
                headers={"Authorization": f"Bearer {attachment.data_plane_token}"},
                protocols=(frames.SUBPROTOCOL,),
                ssl=ssl.create_default_context(cadata=gw.ca_bundle_pem),
            )
            await ws.send_bytes(frames.terminal(b"echo relayed-$((5*5))\n"))
            seen = b""
            while b"relayed-25" not in seen:
                message = await asyncio.wait_for(ws.receive(), 20)
                frame = frames.decode(message.data)
                if frame.HasField("terminal_data"):
                    seen += frame.terminal_data.data
            worker.kill()  # SIGKILL: no closing handshake from the worker
            while True:
                message = await asyncio.wait_for(ws.receive(), 30)
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    code = ws.close_code
                    await ws.close()
                    break
        await asyncio.sleep(0.25)  # aiohttp's graceful TLS shutdown
        return code, str(message.extra or "")

    assert asyncio.run(go()) == (1011, "worker_connection_lost")
