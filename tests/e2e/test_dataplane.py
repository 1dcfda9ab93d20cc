"""The direct data plane end to end: control plane, worker agent, sshd and a WSS client.

A client attaches, reaches the worker's WSS endpoint with the attachment's
token (verified with the platform CA bundle of the candidate), and runs a
command on the target's terminal. Every bind the worker must refuse is its
own case, asserting the close code and the audit row.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import pwd
import shutil
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg2
import pytest
from google.protobuf import struct_pb2
from jose import jwt

from rap.v1 import admin_pb2, dataplane_pb2, session_pb2
from rap_common import frames
from rap_common.tokens import LEASE_AUDIENCE
from tests.conftest import _libpq
from tests.e2e.cluster import Cluster, cluster, states
from tests.support.client import Client
from tests.support.processes import WorkerProcess
from tests.support.signer import PlatformSigner
from tests.support.sshd import Sshd

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def plane(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(postgres_url, tmp_path_factory.mktemp("dataplane"), None) as c:
        yield c


@pytest.fixture(scope="module")
def worker(plane: Cluster) -> WorkerProcess:
    return plane.enroll_worker("direct")


@pytest.fixture(scope="module")
def signer(plane: Cluster) -> Iterator[PlatformSigner]:
    s = PlatformSigner(plane.database_url, plane.a.env["SECRET_ENCRYPTION_KEY_B64"])
    yield s
    s.close()


def _active(plane: Cluster, sshd: Sshd, worker: WorkerProcess, metadata: dict[str, Any] | None = None) -> str:
    resource_id = plane.ssh_resource(sshd, extra=metadata)
    session = plane.start(resource_id)
    active = plane.wait_state(session.id, states("active", "failed"))
    assert active.state == session_pb2.SESSION_STATE_ACTIVE, active.end_reason
    return str(session.id)


def _attach(client: Client, session_id: str, takeover: bool = False) -> session_pb2.Attachment:
    return client.sessions.AttachSession(
        session_pb2.AttachSessionRequest(session_id=session_id, takeover=takeover)
    ).attachment


def _direct(attachment: session_pb2.Attachment) -> session_pb2.Candidate:
    direct = [c for c in attachment.candidates if c.kind == session_pb2.CANDIDATE_KIND_DIRECT_WORKER]
    assert direct and direct[0].trust_mode == session_pb2.TRUST_MODE_PLATFORM_CA and direct[0].ca_bundle_pem
    return direct[0]


def _tls(candidate: session_pb2.Candidate) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=candidate.ca_bundle_pem)
    return context


async def _open(
    candidate: session_pb2.Candidate, token: str, *, via_subprotocol: bool = False
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    headers = {} if via_subprotocol else {"Authorization": f"Bearer {token}"}
    protocols = (
        (frames.SUBPROTOCOL, frames.TOKEN_SUBPROTOCOL_PREFIX + token)
        if via_subprotocol
        else (frames.SUBPROTOCOL,)
    )
    ws = await http.ws_connect(candidate.url, headers=headers, protocols=protocols, ssl=_tls(candidate))
    return http, ws


async def _close(http: aiohttp.ClientSession) -> None:
    await http.close()
    # aiohttp's documented graceful shutdown: let the TLS transports finish closing.
    await asyncio.sleep(0.25)


async def _refused(candidate: session_pb2.Candidate, token: str) -> tuple[int, str]:
    http, ws = await _open(candidate, token)
    try:
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        ), message
        return int(ws.close_code or 0), str(message.extra or "")
    finally:
        await ws.close()
        await _close(http)


async def _terminal_round_trip(ws: aiohttp.ClientWebSocketResponse, command: bytes, expect: str) -> str:
    await ws.send_bytes(frames.terminal(command))
    seen = b""
    deadline = time.monotonic() + 15
    while expect.encode() not in seen:
        message = await asyncio.wait_for(ws.receive(), max(0.1, deadline - time.monotonic()))
        assert message.type == aiohttp.WSMsgType.BINARY, (message.type, message.extra)
        frame = frames.decode(message.data)
        if frame.HasField("terminal_data"):
            seen += frame.terminal_data.data
    return seen.decode(errors="replace")


def _rejections(plane: Cluster, reason: str) -> list[Any]:
    return [e for e in plane.audit("data_plane_bind_rejected") if e.details["reason"] == reason]


def _wait_audit(plane: Cluster, reason: str) -> None:
    deadline = time.monotonic() + 10
    while not _rejections(plane, reason):
        assert time.monotonic() < deadline, f"no data_plane_bind_rejected row with reason {reason}"
        time.sleep(0.1)


def test_a_terminal_round_trip_over_the_direct_worker_endpoint(
    plane: Cluster, sshd: Sshd, worker: WorkerProcess
) -> None:
    session_id = _active(plane, sshd, worker)
    attachment = _attach(plane.admin, session_id)
    candidate = _direct(attachment)
    assert attachment.data_plane_token and attachment.data_plane_token not in candidate.url

    async def go() -> str:
        http, ws = await _open(candidate, attachment.data_plane_token, via_subprotocol=True)
        try:
            return await _terminal_round_trip(ws, b"whoami; echo done-$((40+2))\n", "done-42")
        finally:
            await ws.close()
            await _close(http)

    output = asyncio.run(go())
    assert sshd.username in output
    assert [e for e in plane.audit("session_attached") if e.target_id == session_id]


def _legit_claims(
    plane: Cluster, sshd: Sshd, worker: WorkerProcess
) -> tuple[dict[str, Any], session_pb2.Candidate]:
    session_id = _active(plane, sshd, worker)
    attachment = _attach(plane.admin, session_id)
    claims = jwt.get_unverified_claims(attachment.data_plane_token)
    return {k: claims[k] for k in ("sub", "sid", "att", "org", "wrk", "res", "ch")}, _direct(attachment)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("bad_signature", 4401, "bad_signature"),
        ("alg_none", 4401, "wrong_alg"),
        ("hs256_with_public_key", 4401, "wrong_alg"),
        ("unknown_kid", 4401, "unknown_kid"),
        ("expired", 4401, "expired"),
        ("wrong_audience", 4401, "wrong_audience"),
        ("wrong_issuer", 4401, "wrong_issuer"),
        ("wrong_worker", 4403, "wrong_worker"),
        ("wrong_user", 4403, "wrong_user"),
        ("wrong_organization", 4403, "wrong_organization"),
        ("wrong_resource", 4403, "wrong_resource"),
        ("channels_beyond_policy", 4403, "channels_beyond_policy"),
        ("unknown_attachment", 4403, "unknown_attachment"),
    ],
)
def test_the_worker_refuses_a_bad_bind(
    plane: Cluster,
    sshd: Sshd,
    worker: WorkerProcess,
    signer: PlatformSigner,
    case: str,
    code: int,
    reason: str,
) -> None:
    claims, candidate = _legit_claims(plane, sshd, worker)
    header = {"alg": "RS256", "kid": signer.kid(), "typ": "JWT"}
    body = {
        **claims,
        "iss": "rap-control-plane",
        "aud": "rap-data-plane",
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
        "jti": uuid.uuid4().hex,
    }
    if case == "bad_signature":
        token = signer.sign(claims)
        head, payload, sig = token.split(".")
        token = f"{head}.{payload}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
    elif case == "alg_none":
        token = f"{_b64(json.dumps({**header, 'alg': 'none'}).encode())}.{_b64(json.dumps(body).encode())}."
    elif case == "hs256_with_public_key":
        jwks = plane.admin.admin.GetJwks(admin_pb2.GetJwksRequest()).jwks
        public = next(k for k in jwks.keys if k.kid == signer.kid())
        secret = json.dumps({"n": public.n, "e": public.e}).encode()  # what a confused verifier would use
        signing_input = (
            f"{_b64(json.dumps({**header, 'alg': 'HS256'}).encode())}.{_b64(json.dumps(body).encode())}"
        )
        token = signing_input + "." + _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
    elif case == "unknown_kid":
        from cryptography.hazmat.primitives.asymmetric import rsa

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(body, other, algorithm="RS256", headers={"kid": "not-published"})
    elif case == "expired":
        token = signer.sign(claims, ttl=-30)
    elif case == "wrong_audience":
        token = signer.sign(claims, audience=LEASE_AUDIENCE)
    elif case == "wrong_issuer":
        token = signer.sign(claims, issuer="someone-else")
    elif case == "channels_beyond_policy":
        session_id = _active(plane, sshd, worker, {"rap_channels": ["terminal"]})
        attachment = _attach(plane.admin, session_id)
        narrow = jwt.get_unverified_claims(attachment.data_plane_token)
        token = signer.sign({**{k: narrow[k] for k in claims}, "ch": ["terminal", "file_upload"]})
        candidate = _direct(attachment)
    else:
        field = {
            "wrong_worker": "wrk",
            "wrong_user": "sub",
            "wrong_organization": "org",
            "wrong_resource": "res",
            "unknown_attachment": "att",
        }[case]
        token = signer.sign({**claims, field: str(uuid.uuid4())})
    got = asyncio.run(_refused(candidate, token))
    assert got == (code, reason)
    _wait_audit(plane, reason)


def test_old_failed_and_terminated_sessions_and_replays_are_refused(
    plane: Cluster, sshd: Sshd, worker: WorkerProcess
) -> None:
    # An old attachment: superseded by a takeover before it was ever used.
    session_id = _active(plane, sshd, worker)
    old = _attach(plane.admin, session_id)
    _attach(plane.admin, session_id, takeover=True)
    assert asyncio.run(_refused(_direct(old), old.data_plane_token)) == (4403, "old_attachment")
    _wait_audit(plane, "old_attachment")

    # A replayed token: the same token binds once.
    session_id = _active(plane, sshd, worker)
    attachment = _attach(plane.admin, session_id)

    async def bind_then_replay() -> tuple[int, str]:
        http, ws = await _open(_direct(attachment), attachment.data_plane_token)
        await _terminal_round_trip(ws, b"echo first-$((1+1))\n", "first-2")
        await ws.close()
        await _close(http)
        return await _refused(_direct(attachment), attachment.data_plane_token)

    assert asyncio.run(bind_then_replay()) == (4403, "replayed_jti")
    _wait_audit(plane, "replayed_jti")

    # A failed session: its lease lapses (as if its heartbeats had stopped) and the sweeper fails it.
    session_id = _active(plane, sshd, worker)
    attachment = _attach(plane.admin, session_id)
    conn = psycopg2.connect(_libpq(plane.database_url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE session_leases SET expires_at = now() - interval '1 second' WHERE session_id = %s",
                (session_id,),
            )
    finally:
        conn.close()
    plane.wait_state(session_id, states("failed"), timeout=15)
    time.sleep(0.5)
    assert asyncio.run(_refused(_direct(attachment), attachment.data_plane_token)) == (4412, "session_failed")
    _wait_audit(plane, "session_failed")

    # A terminated session.
    session_id = _active(plane, sshd, worker)
    attachment = _attach(plane.admin, session_id)
    plane.admin.sessions.TerminateSession(session_pb2.TerminateSessionRequest(id=session_id))
    time.sleep(0.5)
    assert asyncio.run(_refused(_direct(attachment), attachment.data_plane_token)) == (
        4412,
        "session_terminated",
    )
    _wait_audit(plane, "session_terminated")


def test_a_takeover_closes_the_old_connection_with_its_code(
    plane: Cluster, sshd: Sshd, worker: WorkerProcess
) -> None:
    session_id = _active(plane, sshd, worker)
    first = _attach(plane.admin, session_id)

    async def go() -> tuple[int, str]:
        http, ws = await _open(_direct(first), first.data_plane_token)
        await _terminal_round_trip(ws, b"echo one-$((0+1))\n", "one-1")
        second = await asyncio.to_thread(_attach, plane.admin, session_id, True)
        http2, ws2 = await _open(_direct(second), second.data_plane_token)
        try:
            output = await _terminal_round_trip(ws2, b"echo two-$((1+1))\n", "two-2")
            assert "two-2" in output
            while True:
                message = await asyncio.wait_for(ws.receive(), 10)
                if message.type == aiohttp.WSMsgType.CLOSE:
                    return int(message.data), str(message.extra or "")
                assert message.type == aiohttp.WSMsgType.BINARY, message
        finally:
            await ws2.close()
            await http2.close()
            await ws.close()
            await _close(http)

    assert asyncio.run(go()) == (frames.CLOSE_SUPERSEDED, "superseded")
    assert [e for e in plane.audit("session_takeover") if e.target_id == session_id]


def test_a_channel_the_token_does_not_carry_is_refused(
    plane: Cluster, sshd: Sshd, worker: WorkerProcess
) -> None:
    session_id = _active(plane, sshd, worker, {"rap_channels": ["terminal"]})
    attachment = _attach(plane.admin, session_id)

    async def go() -> dataplane_pb2.ControlMessage:
        http, ws = await _open(_direct(attachment), attachment.data_plane_token)
        try:
            await ws.send_bytes(
                frames.encode(
                    dataplane_pb2.DataPlaneFrame(
                        clipboard_text=dataplane_pb2.ClipboardText(
                            direction=dataplane_pb2.CLIPBOARD_DIRECTION_CLIENT_TO_TARGET, text="x"
                        )
                    )
                )
            )
            while True:
                frame = frames.decode((await asyncio.wait_for(ws.receive(), 10)).data)
                if frame.HasField("control"):
                    return frame.control
        finally:
            await ws.close()
            await _close(http)

    control = asyncio.run(go())
    assert control.kind == dataplane_pb2.CONTROL_KIND_ERROR and control.reason == "channel_not_allowed"


async def _frames_until(
    ws: aiohttp.ClientWebSocketResponse, want: str, within: float = 15
) -> dataplane_pb2.DataPlaneFrame:
    """Read frames until one of kind ``want`` (terminal output is skipped)."""
    deadline = time.monotonic() + within
    while True:
        message = await asyncio.wait_for(ws.receive(), max(0.1, deadline - time.monotonic()))
        assert message.type == aiohttp.WSMsgType.BINARY, (message.type, message.extra)
        frame = frames.decode(message.data)
        if frame.WhichOneof("body") == want:
            return frame


def _clip(text: str) -> bytes:
    return frames.encode(
        dataplane_pb2.DataPlaneFrame(
            clipboard_text=dataplane_pb2.ClipboardText(
                direction=dataplane_pb2.CLIPBOARD_DIRECTION_CLIENT_TO_TARGET, text=text
            )
        )
    )


def test_clipboard_follows_the_policy_each_way(plane: Cluster, sshd: Sshd, worker: WorkerProcess) -> None:
    open_session = _active(plane, sshd, worker)
    limited = _active(plane, sshd, worker, {"rap_clipboard": {"client_to_target": False, "max_bytes": 16}})
    first, second = _attach(plane.admin, open_session), _attach(plane.admin, limited)

    async def go() -> None:
        http, ws = await _open(_direct(first), first.data_plane_token)
        try:
            # Client to target: pasted into the shell.
            await ws.send_bytes(_clip("echo pasted-$((2*3))"))
            assert "pasted-6" in await _terminal_round_trip(ws, b"\r", "pasted-6")
            # Target to client: an OSC 52 sequence becomes a clipboard frame, cut out of the stream.
            await ws.send_bytes(
                frames.terminal(b"printf '\\033]52;c;%s\\a' \"$(printf copied-text | base64)\"\r")
            )
            frame = await _frames_until(ws, "clipboard_text")
            assert frame.clipboard_text.direction == dataplane_pb2.CLIPBOARD_DIRECTION_TARGET_TO_CLIENT
            assert frame.clipboard_text.text == "copied-text"
        finally:
            await ws.close()
            await _close(http)
        http, ws = await _open(_direct(second), second.data_plane_token)
        try:
            await ws.send_bytes(_clip("echo nope"))
            control = (await _frames_until(ws, "control")).control
            assert (control.kind, control.reason) == (
                dataplane_pb2.CONTROL_KIND_ERROR,
                "clipboard_direction_forbidden",
            )
            await ws.send_bytes(
                frames.terminal(
                    b"printf '\\033]52;c;%s\\a' \"$(head -c 100 /dev/zero | tr '\\\\0' x | base64 -w0)\"\r"
                )
            )
            control = (await _frames_until(ws, "control")).control
            assert (control.kind, control.reason) == (dataplane_pb2.CONTROL_KIND_ERROR, "clipboard_too_large")
        finally:
            await ws.close()
            await _close(http)

    asyncio.run(go())


async def _upload(
    ws: aiohttp.ClientWebSocketResponse,
    name: str,
    data: bytes,
    *,
    sha256: str | None = None,
    size: int | None = None,
) -> dataplane_pb2.FileUploadResult:
    upload_id = uuid.uuid4().hex
    await ws.send_bytes(
        frames.encode(
            dataplane_pb2.DataPlaneFrame(
                file_upload_begin=dataplane_pb2.FileUploadBegin(
                    upload_id=upload_id, file_name=name, size=len(data) if size is None else size
                )
            )
        )
    )
    for start in range(0, len(data), 64 * 1024):
        await ws.send_bytes(
            frames.encode(
                dataplane_pb2.DataPlaneFrame(
                    file_upload_chunk=dataplane_pb2.FileUploadChunk(
                        upload_id=upload_id, data=data[start : start + 64 * 1024]
                    )
                )
            )
        )
    await ws.send_bytes(
        frames.encode(
            dataplane_pb2.DataPlaneFrame(
                file_upload_end=dataplane_pb2.FileUploadEnd(
                    upload_id=upload_id, sha256=sha256 or hashlib.sha256(data).hexdigest()
                )
            )
        )
    )
    return (await _frames_until(ws, "file_upload_result")).file_upload_result


def test_uploads_land_in_rap_transfers_and_nowhere_else(
    plane: Cluster, sshd: Sshd, worker: WorkerProcess
) -> None:
    home = Path(pwd.getpwnam(sshd.username).pw_dir)
    transfers = home / "RAP_Transfers"
    shutil.rmtree(transfers, ignore_errors=True)
    outside = Path("/tmp") / f"rap-outside-{uuid.uuid4().hex[:8]}"
    session_id = _active(plane, sshd, worker, {"rap_upload_max_bytes": 400_000})
    attachment = _attach(plane.admin, session_id)
    data = os.urandom(300_000)

    async def go() -> dict[str, dataplane_pb2.FileUploadResult]:
        results = {}
        http, ws = await _open(_direct(attachment), attachment.data_plane_token)
        try:
            results["ok"] = await _upload(ws, "report.bin", data)
            assert results["ok"].ok, results["ok"]
            results["dotdot"] = await _upload(ws, "../x", b"x")
            results["absolute"] = await _upload(ws, "/etc/rap-x", b"x")
            results["nul"] = await _upload(ws, "a\x00b", b"x")
            results["too_big"] = await _upload(ws, "big.bin", b"x" * 500_000)
            results["bad_sha"] = await _upload(ws, "sha.bin", b"abc", sha256="0" * 64)
            # A link planted in the folder, pointing outside: never followed, never replaced.
            os.symlink(outside, transfers / "link")
            results["symlink"] = await _upload(ws, "link", b"x")
            # The folder itself replaced by a link: refused.
            transfers.rename(home / "RAP_Transfers.real")
            os.symlink("/tmp", transfers)
            results["folder_link"] = await _upload(ws, "other.bin", b"x")
        finally:
            await ws.close()
            await _close(http)
        return results

    try:
        results = asyncio.run(go())
    finally:
        if transfers.is_symlink():
            transfers.unlink()
            (home / "RAP_Transfers.real").rename(transfers)
    assert results["ok"].ok and results["ok"].path == "RAP_Transfers/report.bin"
    landed = transfers / "report.bin"
    assert hashlib.sha256(landed.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert landed.stat().st_uid == pwd.getpwnam(sshd.username).pw_uid
    expected = {
        "dotdot": "bad_file_name",
        "absolute": "bad_file_name",
        "nul": "bad_file_name",
        "too_big": "file_too_large",
        "bad_sha": "sha256_mismatch",
        "symlink": "file_exists",
        "folder_link": "bad_transfer_folder",
    }
    assert {k: (r.ok, r.reason) for k, r in results.items() if k != "ok"} == {
        k: (False, v) for k, v in expected.items()
    }
    assert not outside.exists()
    assert not (Path("/tmp") / "other.bin").exists()
    assert sorted(p.name for p in transfers.iterdir()) == ["link", "report.bin"], "no partial files left"


def test_the_organizations_defaults_apply_unless_the_resource_overrides_them(
    plane: Cluster, sshd: Sshd, worker: WorkerProcess
) -> None:
    policy = struct_pb2.Struct()
    policy.update({"rap_clipboard": {"client_to_target": False, "max_bytes": 1000}})
    org = plane.admin.admin.UpdateOrganizationPolicy(
        admin_pb2.UpdateOrganizationPolicyRequest(policy=policy)
    ).organization
    assert org.policy["rap_clipboard"]["client_to_target"] is False
    try:
        defaults = _attach(plane.admin, _active(plane, sshd, worker))
        overridden = _attach(
            plane.admin, _active(plane, sshd, worker, {"rap_clipboard": {"client_to_target": True}})
        )

        async def paste(attachment: session_pb2.Attachment) -> str:
            http, ws = await _open(_direct(attachment), attachment.data_plane_token)
            try:
                await ws.send_bytes(_clip("echo from-clip-$((3*3))"))
                await ws.send_bytes(frames.terminal(b"\r"))
                deadline = time.monotonic() + 10
                seen = b""
                while time.monotonic() < deadline:
                    frame = frames.decode((await asyncio.wait_for(ws.receive(), 10)).data)
                    if frame.HasField("control") and frame.control.kind == dataplane_pb2.CONTROL_KIND_ERROR:
                        return frame.control.reason
                    if frame.HasField("terminal_data"):
                        seen += frame.terminal_data.data
                        if b"from-clip-9" in seen:
                            return "pasted"
                return "nothing"
            finally:
                await ws.close()
                await _close(http)

        assert asyncio.run(paste(defaults)) == "clipboard_direction_forbidden"
        assert asyncio.run(paste(overridden)) == "pasted"
        assert [e for e in plane.audit("organization_policy_updated")]
    finally:
        plane.admin.admin.UpdateOrganizationPolicy(
            admin_pb2.UpdateOrganizationPolicyRequest(policy=struct_pb2.Struct())
        )


def test_a_partial_upload_left_by_a_dead_worker_is_removed_at_the_next_upload(
    plane: Cluster, sshd: Sshd, worker: WorkerProcess
) -> None:
    """A `.part` file is never a complete name, and a stale one is swept; a young one (another
    session's upload in progress) is left alone."""
    account = pwd.getpwnam(sshd.username)
    transfers = Path(account.pw_dir) / "RAP_Transfers"
    transfers.mkdir(mode=0o700, exist_ok=True)
    os.chown(transfers, account.pw_uid, account.pw_gid)
    stale, young = (
        transfers / ".report.pdf.0123456789abcdef.part",
        transfers / ".live.bin.fedcba9876543210.part",
    )
    for part in (stale, young):
        part.write_bytes(b"half a file")
        os.chown(part, account.pw_uid, account.pw_gid)
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    session_id = _active(plane, sshd, worker)
    attachment = _attach(plane.admin, session_id)

    async def go() -> dataplane_pb2.FileUploadResult:
        http, ws = await _open(_direct(attachment), attachment.data_plane_token)
        try:
            return await _upload(ws, f"next-{uuid.uuid4().hex[:6]}.bin", b"whole")
        finally:
            await ws.close()
            await _close(http)

    assert asyncio.run(go()).ok
    assert not stale.exists(), "the stale partial upload was removed"
    assert young.exists(), "an upload that may be in progress elsewhere was left alone"
    young.unlink()
