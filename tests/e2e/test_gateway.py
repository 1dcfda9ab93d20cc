"""The gateway end to end: client WSS to the gateway, mTLS WSS from the gateway to the worker."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from rap.v1 import admin_pb2, session_pb2
from rap_common import frames
from tests.e2e.cluster import Cluster, cluster, states
from tests.support.processes import WorkerProcess, free_port, start_gateway
from tests.support.sshd import Sshd
from tests.support.tls import make_server_tls

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def gateway_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, bytes, Path, Path]:
    directory = tmp_path_factory.mktemp("gateway")
    tls = make_server_tls(directory)
    (directory / "gw-ca.pem").write_bytes(tls.ca_pem)
    return directory, free_port(), tls.ca_pem, tls.cert_file, tls.key_file


@pytest.fixture(scope="module")
def plane(postgres_url: str, gateway_setup: tuple[Path, int, bytes, Path, Path]) -> Iterator[Cluster]:
    directory, port, _, _, _ = gateway_setup
    with cluster(
        postgres_url,
        directory,
        None,
        RAP_GATEWAY_URL=f"wss://localhost:{port}/v1/connect",
        RAP_GATEWAY_CA_FILE=str(directory / "gw-ca.pem"),
    ) as c:
        yield c


@pytest.fixture(scope="module")
def gateway(
    plane: Cluster, gateway_setup: tuple[Path, int, bytes, Path, Path]
) -> Iterator[subprocess.Popen[bytes]]:
    directory, port, _, cert, key = gateway_setup
    token = plane.admin.admin.CreateWorkerEnrollmentToken(
        admin_pb2.CreateWorkerEnrollmentTokenRequest(worker_name="gateway")
    ).enrollment_token
    process = start_gateway(directory, port, plane.a.target, token, plane.admin.token, cert, key)
    yield process
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def worker(plane: Cluster) -> WorkerProcess:
    return plane.enroll_worker("behind-gateway")


async def _session(
    gw: session_pb2.Candidate, token: str
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    context = ssl.create_default_context(cadata=gw.ca_bundle_pem)
    ws = await http.ws_connect(
        gw.url, headers={"Authorization": f"Bearer {token}"}, protocols=(frames.SUBPROTOCOL,), ssl=context
    )
    return http, ws


async def _close(http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.close()
    await http.close()
    await asyncio.sleep(0.25)


def test_a_terminal_through_the_gateway_and_the_workers_refusals_relayed(
    plane: Cluster,
    sshd: Sshd,
    worker: WorkerProcess,
    gateway: subprocess.Popen[bytes],
    gateway_setup: tuple[Path, int, bytes, Path, Path],
) -> None:
    session = plane.start(plane.ssh_resource(sshd))
    assert plane.wait_state(session.id, states("active", "failed")).state == session_pb2.SESSION_STATE_ACTIVE
    attachment = plane.admin.sessions.AttachSession(
        session_pb2.AttachSessionRequest(session_id=session.id)
    ).attachment
    kinds = [c.kind for c in attachment.candidates]
    assert kinds == [session_pb2.CANDIDATE_KIND_DIRECT_WORKER, session_pb2.CANDIDATE_KIND_GATEWAY]
    gw = attachment.candidates[1]
    assert gw.trust_mode == session_pb2.TRUST_MODE_PLATFORM_CA
    assert gw.ca_bundle_pem == (gateway_setup[0] / "gw-ca.pem").read_text(), "the gateway's own CA"

    async def go() -> tuple[str, tuple[int, str], tuple[int, str]]:
        http, ws = await _session(gw, attachment.data_plane_token)
        await ws.send_bytes(frames.terminal(b"echo via-gateway-$((6*7))\n"))
        seen = b""
        deadline = time.monotonic() + 15
        while b"via-gateway-42" not in seen and time.monotonic() < deadline:
            message = await asyncio.wait_for(ws.receive(), 15)
            frame = frames.decode(message.data)
            if frame.HasField("terminal_data"):
                seen += frame.terminal_data.data
        await _close(http, ws)
        # The same token again: the worker refuses (replay) and the gateway relays its code.
        http, ws = await _session(gw, attachment.data_plane_token)
        message = await asyncio.wait_for(ws.receive(), 10)
        replay = (int(message.data), str(message.extra))
        await _close(http, ws)
        # A forged token: the gateway refuses it itself.
        head, body, sig = attachment.data_plane_token.split(".")
        http, ws = await _session(gw, f"{head}.{body}.{sig[::-1]}")
        message = await asyncio.wait_for(ws.receive(), 10)
        forged = (int(message.data), str(message.extra))
        await _close(http, ws)
        return seen.decode(errors="replace"), replay, forged

    output, replay, forged = asyncio.run(go())
    assert "via-gateway-42" in output
    assert replay == (4403, "replayed_jti")
    assert forged == (4401, "bad_signature")


def test_an_upload_through_the_gateway(
    plane: Cluster, sshd: Sshd, worker: WorkerProcess, gateway: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    from rap_client.connection import DataConnection

    session = plane.start(plane.ssh_resource(sshd))
    assert plane.wait_state(session.id, states("active", "failed")).state == session_pb2.SESSION_STATE_ACTIVE
    attachment = plane.admin.sessions.AttachSession(
        session_pb2.AttachSessionRequest(session_id=session.id)
    ).attachment
    only_gateway = session_pb2.Attachment()
    only_gateway.CopyFrom(attachment)
    del only_gateway.candidates[0]
    payload = tmp_path / f"gw-{time.time_ns()}.bin"
    payload.write_bytes(os.urandom(8 * 1024 * 1024))

    async def go() -> str:
        # First a direct connection, closed; then a takeover through the gateway.
        direct = await DataConnection.open(attachment, production=True)
        assert direct.chosen.kind == "direct"
        first = await direct.upload(payload, name=f"first-{payload.name}")
        assert first.ok, first.reason
        await direct.close()
        again = await asyncio.to_thread(
            plane.admin.sessions.AttachSession,
            session_pb2.AttachSessionRequest(session_id=session.id, takeover=True),
        )
        only_gateway.CopyFrom(again.attachment)
        del only_gateway.candidates[0]
        connection = await DataConnection.open(only_gateway, production=True)
        try:
            assert connection.chosen.kind == "gateway"
            result = await connection.upload(payload)
            assert result.ok, result.reason
            return str(result.path)
        finally:
            await connection.close()

    assert asyncio.run(go()) == f"RAP_Transfers/{payload.name}"
