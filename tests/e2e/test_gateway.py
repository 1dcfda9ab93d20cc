"""The gateway end to end: client WSS to the gateway, mTLS WSS from the gateway to the worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from rap.v1 import admin_pb2, identity_pb2, session_pb2
from rap_common import frames
from rap_common.identity import CERT, KEY
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
        admin_pb2.CreateWorkerEnrollmentTokenRequest(
            worker_name="gateway", role=identity_pb2.IDENTITY_ROLE_GATEWAY
        )
    ).enrollment_token
    process = start_gateway(directory, port, plane.a.target, token, [plane.a.worker_target], cert, key)
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


def _active_attachment(plane: Cluster, sshd: Sshd) -> session_pb2.Attachment:
    session = plane.start(plane.ssh_resource(sshd))
    assert plane.wait_state(session.id, states("active", "failed")).state == session_pb2.SESSION_STATE_ACTIVE
    return plane.admin.sessions.AttachSession(
        session_pb2.AttachSessionRequest(session_id=session.id)
    ).attachment


def test_the_workers_close_code_reaches_the_client_through_the_gateway_every_time(
    plane: Cluster, sshd: Sshd, worker: WorkerProcess, gateway: subprocess.Popen[bytes]
) -> None:
    """A refusal made by the worker and relayed by the gateway arrives with the worker's
    code and reason, never as 1006, run after run."""
    attachment = _active_attachment(plane, sshd)
    gw = attachment.candidates[1]

    async def go() -> list[tuple[int | None, str]]:
        http, ws = await _session(gw, attachment.data_plane_token)  # the one good bind
        await _close(http, ws)
        seen = []
        for _ in range(40):
            http, ws = await _session(gw, attachment.data_plane_token)
            message = await asyncio.wait_for(ws.receive(), 10)
            seen.append((ws.close_code, str(message.extra)))
            await ws.close()
            await http.close()
        await asyncio.sleep(0.25)
        return seen

    seen = asyncio.run(go())
    assert seen == [(4403, "replayed_jti")] * 40, sorted(set(seen))


def test_the_worker_accepts_relay_certificates_of_the_gateway_role_only(
    plane: Cluster, sshd: Sshd, worker: WorkerProcess, gateway: subprocess.Popen[bytes]
) -> None:
    """A worker's key presented as a relay's client certificate is refused (4403
    relay_not_gateway) before the token is even looked at, and audited."""
    attachment = _active_attachment(plane, sshd)
    direct = attachment.candidates[0]
    state = worker.state_dir

    async def go() -> tuple[int | None, str]:
        context = ssl.create_default_context(cadata=direct.ca_bundle_pem)
        context.load_cert_chain(state / CERT, state / KEY)
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(
            direct.url,
            headers={"Authorization": f"Bearer {attachment.data_plane_token}"},
            protocols=(frames.SUBPROTOCOL,),
            ssl=context,
        )
        message = await asyncio.wait_for(ws.receive(), 10)
        await _close(http, ws)
        return ws.close_code, str(message.extra)

    assert asyncio.run(go()) == (4403, "relay_not_gateway")
    deadline = time.monotonic() + 15
    while not [
        e for e in plane.audit("data_plane_bind_rejected") if e.details["reason"] == "relay_not_gateway"
    ]:
        assert time.monotonic() < deadline, "no data_plane_bind_rejected row for relay_not_gateway"
        time.sleep(0.1)


def test_an_oversized_authorization_header_leaves_no_byte_of_it_in_any_log(
    plane: Cluster,
    sshd: Sshd,
    worker: WorkerProcess,
    gateway: subprocess.Popen[bytes],
    gateway_setup: tuple[Path, int, bytes, Path, Path],
) -> None:
    directory, port, ca_pem, _, _ = gateway_setup
    attachment = _active_attachment(plane, sshd)
    canary = "OversizedBearerCanary"
    header = f"Bearer {canary}{'Q' * 20000}"

    async def knock(url: str, cadata: str) -> None:
        async with aiohttp.ClientSession() as http:
            with contextlib.suppress(aiohttp.ClientError):
                ws = await http.ws_connect(
                    url, headers={"Authorization": header}, ssl=ssl.create_default_context(cadata=cadata)
                )
                await ws.close()
        await asyncio.sleep(0.25)

    asyncio.run(knock(f"wss://localhost:{port}/v1/connect", ca_pem.decode()))
    asyncio.run(knock(attachment.candidates[0].url, attachment.candidates[0].ca_bundle_pem))
    logs = {
        "gateway": (directory / "gateway.log").read_text(errors="replace"),
        "worker": worker.log.read_text(),
    }
    for name, text in logs.items():
        assert canary not in text and "QQQQQQQQ" not in text, name
    assert "refused a malformed HTTP request" in logs["gateway"]
