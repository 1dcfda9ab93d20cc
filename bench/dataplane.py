"""Data-plane benchmark: each figure beside a floor measured in the same run.

    python bench/dataplane.py [--tokens 2000] [--upload-mib 32]

Each upload figure is the median of three runs.

1. Worker token validations per second, every bind check included (signature,
   audience, issuer, times, worker, session, organization, resource, channels,
   attachment, user, jti), beside raw `cryptography` RSA verification of the
   same tokens. Target: at least 0.4.
2. Upload throughput through RAP (direct WSS to the worker, SFTP to the
   target) beside a bare asyncssh SFTP upload of the same bytes to the same
   sshd. Target: at least 0.6.
3. The same upload through the gateway beside direct. Target: at least 0.45.
   And the gateway beside websockify relaying the same bytes (an SFTP upload
   of the same file over SSH carried in a WebSocket) to the same sshd, with TLS
   on the WebSocket like the gateway. Target: at least 1.5.
4. Time to first terminal byte through RAP (StartSession to the shell's first
   output, with assignment, secret resolution, attach and bind) beside a bare
   asyncssh connect and first byte. Target: at most 1.3x.

Needs root and openssh-server (a real sshd on loopback), like the e2e tests;
uses DATABASE_URL (default: the local PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import aiohttp  # noqa: E402
import asyncssh  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402
from jose import jwk, jwt  # noqa: E402

from rap.v1 import admin_pb2, identity_pb2, session_pb2  # noqa: E402
from rap_client import RapClient  # noqa: E402
from rap_client.connection import DataConnection  # noqa: E402
from rap_control.tokens.keyring import public_jwk  # noqa: E402
from rap_worker.dataplane import AttachmentInfo, DataPlane, SessionView  # noqa: E402
from tests.e2e.cluster import cluster  # noqa: E402
from tests.support.processes import BIN, free_port, start_gateway  # noqa: E402
from tests.support.sshd import start_sshd  # noqa: E402
from tests.support.tls import make_server_tls  # noqa: E402


def report(name: str, value: float, unit: str, floor: float, target: str, ok: bool) -> None:
    ratio = value / floor if floor else float("nan")
    print(
        f"{name}: {value:,.2f} {unit}; floor {floor:,.2f} {unit}; ratio {ratio:.2f} "
        f"({'meets' if ok else 'MISSES'} target {target})",
        flush=True,
    )


# -- 1. token validation ------------------------------------------------------


class _Host:
    def __init__(self, jwks: dict[str, dict[str, str]]) -> None:
        self.worker_id = "w1"
        self.jwks = jwks
        self.session = SessionView("s1", "o1", "r1", ["terminal", "clipboard", "file_upload"], None)

    def live_session(self, session_id: str) -> SessionView | None:
        return self.session if session_id == "s1" else None

    def ended_state(self, session_id: str) -> str | None:
        return None

    def report_bind_rejected(self, *args: str) -> None:
        raise AssertionError("a benchmark token was refused")


def token_validation(count: int) -> tuple[float, float]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    signer = jwk.construct(key, "RS256")
    jwks = {"k1": public_jwk("k1", key.public_key())}
    now = int(time.time())
    tokens = [
        jwt.encode(
            {
                "sub": "u1",
                "sid": "s1",
                "att": "a1",
                "org": "o1",
                "wrk": "w1",
                "res": "r1",
                "ch": ["terminal"],
                "iss": "rap-control-plane",
                "aud": "rap-data-plane",
                "iat": now,
                "nbf": now,
                "exp": now + 600,
                "jti": uuid.uuid4().hex,
            },
            signer,
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        for _ in range(count)
    ]
    plane = DataPlane(_Host(jwks))
    plane.attachments["a1"] = AttachmentInfo(
        "a1", "s1", "u1", "active", ["terminal", "clipboard", "file_upload"]
    )

    async def checks() -> float:
        started = time.perf_counter()
        for token in tokens:
            claims = plane._verify(token)
            await plane._bind(claims, None)  # type: ignore[arg-type]
        return count / (time.perf_counter() - started)

    rate = asyncio.run(checks())
    public = key.public_key()
    started = time.perf_counter()
    for token in tokens:
        head, body, sig = token.split(".")
        raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        public.verify(raw, f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    floor = count / (time.perf_counter() - started)
    return rate, floor


# -- 2-4. the full stack --------------------------------------------------------


async def bare_upload(sshd: Any, data: bytes, name: str) -> float:
    async with (
        asyncssh.connect(
            "127.0.0.1",
            port=sshd.port,
            username=sshd.username,
            password=sshd.password,
            known_hosts=([asyncssh.import_public_key(sshd.host_key)], [], []),
            agent_path=None,
            config=None,
        ) as conn,
        conn.start_sftp_client() as sftp,
    ):
        started = time.perf_counter()
        async with sftp.open(name, "wb") as f:
            for i in range(0, len(data), 64 * 1024):
                await f.write(data[i : i + 64 * 1024])
        return time.perf_counter() - started


class _WsTransport(asyncio.Transport):
    """SSH bytes over a WebSocket (binary messages), for asyncssh's ``tunnel``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._ws, self._protocol = ws, protocol
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closing = False
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._receive())]

    async def _send(self) -> None:
        while (data := await self._out.get()) is not None:
            await self._ws.send_bytes(data)

    async def _receive(self) -> None:
        async for message in self._ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                self._protocol.data_received(message.data)
        self._protocol.connection_lost(None)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._out.put_nowait(bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True
        self._out.put_nowait(None)
        self._tasks.append(asyncio.ensure_future(self._ws.close()))

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 0) if name in ("peername", "sockname") else default


class _WsTunnel:
    def __init__(self, url: str, context: ssl.SSLContext, http: aiohttp.ClientSession) -> None:
        self._url, self._context, self._http = url, context, http

    async def create_connection(self, protocol_factory: Any, host: str, port: int) -> tuple[Any, Any]:
        ws = await self._http.ws_connect(self._url, ssl=self._context, protocols=("binary",), max_msg_size=0)
        protocol = protocol_factory()
        transport = _WsTransport(ws, protocol)
        protocol.connection_made(transport)
        return transport, protocol


async def websockify_upload(sshd: Any, data: bytes, url: str, ca_pem: bytes) -> float:
    """SFTP upload of ``data`` with SSH carried over websockify's WebSocket."""
    async with aiohttp.ClientSession() as http:
        tunnel = _WsTunnel(url, ssl.create_default_context(cadata=ca_pem.decode()), http)
        async with (
            asyncssh.connect(
                "127.0.0.1",
                port=sshd.port,
                tunnel=tunnel,
                username=sshd.username,
                password=sshd.password,
                known_hosts=([asyncssh.import_public_key(sshd.host_key)], [], []),
                agent_path=None,
                config=None,
            ) as conn,
            conn.start_sftp_client() as sftp,
        ):
            started = time.perf_counter()
            async with sftp.open(f"wsk-{uuid.uuid4().hex[:6]}.bin", "wb") as f:
                for i in range(0, len(data), 64 * 1024):
                    await f.write(data[i : i + 64 * 1024])
            elapsed = time.perf_counter() - started
        await asyncio.sleep(0.25)
    return elapsed


async def bare_first_byte(sshd: Any) -> float:
    started = time.perf_counter()
    async with asyncssh.connect(
        "127.0.0.1",
        port=sshd.port,
        username=sshd.username,
        password=sshd.password,
        known_hosts=([asyncssh.import_public_key(sshd.host_key)], [], []),
        agent_path=None,
        config=None,
    ) as conn:
        process = await conn.create_process(term_type="xterm", encoding=None)
        await process.stdout.read(1)
        elapsed = time.perf_counter() - started
        process.close()
    return elapsed


async def median_of(runs: int, measure: Any) -> float:
    """The median of ``runs`` timings: this VM's neighbours make single runs noisy."""
    times = sorted([await measure() for _ in range(runs)])
    return float(times[len(times) // 2])


def fresh(path: Path) -> Path:
    """A new name for the same bytes (an upload never replaces a file)."""
    copy = path.with_name(f"{path.stem}-{uuid.uuid4().hex[:6]}{path.suffix}")
    os.link(path, copy)
    return copy


async def rap_upload(connection: DataConnection, path: Path) -> float:
    started = time.perf_counter()
    result = await connection.upload(path)
    assert result.ok, result.reason
    return time.perf_counter() - started


def full_stack(upload_mib: int) -> None:
    server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(os.environ.get("BENCH_WORK_DIR") or tmp)
        os.chmod(work, 0o755)  # noqa: S103 - sshd (as root) and the embedded PostgreSQL read it
        sshd = start_sshd(work)
        tls = make_server_tls(work)
        (work / "gw-ca.pem").write_bytes(tls.ca_pem)
        gw_port = free_port()
        gateway = websockify = None
        try:
            with cluster(
                server_url,
                work,
                None,
                RAP_GATEWAY_URL=f"wss://localhost:{gw_port}/v1/connect",
                RAP_GATEWAY_CA_FILE=str(work / "gw-ca.pem"),
            ) as c:
                token = c.admin.admin.CreateWorkerEnrollmentToken(
                    admin_pb2.CreateWorkerEnrollmentTokenRequest(
                        worker_name="gateway", role=identity_pb2.IDENTITY_ROLE_GATEWAY
                    )
                ).enrollment_token
                gateway = start_gateway(
                    work, gw_port, c.a.target, token, [c.a.worker_target], tls.cert_file, tls.key_file
                )
                wsk_port = free_port()
                wsk_log = work / "websockify.log"
                with wsk_log.open("wb") as out:
                    websockify = subprocess.Popen(
                        [
                            str(BIN / "websockify"),
                            "--cert",
                            str(tls.cert_file),
                            "--key",
                            str(tls.key_file),
                            "--ssl-only",
                            f"127.0.0.1:{wsk_port}",
                            f"127.0.0.1:{sshd.port}",
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                c.enroll_worker("bench")
                resource_id = c.ssh_resource(sshd)
                data = os.urandom(upload_mib * 1024 * 1024)
                files = {k: work / f"{k}-{uuid.uuid4().hex[:6]}.bin" for k in ("direct", "gateway")}
                for f in files.values():
                    f.write_bytes(data)

                async def measure() -> dict[str, float]:
                    out: dict[str, float] = {}
                    async with RapClient(c.a.target, c.admin.token) as rap:
                        # Time to first terminal byte, StartSession to the shell's first output.
                        firsts = []
                        for _ in range(5):
                            started = time.perf_counter()
                            session = await rap.start_session(resource_id)
                            await session.wait_active()
                            connection = await session.connect()
                            await connection.read()
                            firsts.append(time.perf_counter() - started)
                            await connection.close()
                            await rap.terminate_session(session.id)
                        out["first_byte"] = sorted(firsts)[len(firsts) // 2]
                        session = await rap.start_session(resource_id)
                        await session.wait_active()
                        direct = await session.connect()
                        out["direct"] = await median_of(3, lambda: rap_upload(direct, fresh(files["direct"])))
                        await direct.close()
                        attachment = await rap.attach_session(session.id, takeover=True)
                        gw_only = session_pb2.Attachment()
                        gw_only.CopyFrom(attachment)
                        del gw_only.candidates[:]
                        gw_only.candidates.extend(
                            [x for x in attachment.candidates if x.kind == session_pb2.CANDIDATE_KIND_GATEWAY]
                        )
                        via_gateway = await DataConnection.open(gw_only, production=True)
                        assert via_gateway.chosen.kind == "gateway"
                        out["gateway"] = await median_of(
                            3, lambda: rap_upload(via_gateway, fresh(files["gateway"]))
                        )
                        await via_gateway.close()
                    out["bare_upload"] = await median_of(
                        3, lambda: bare_upload(sshd, data, f"bare-{uuid.uuid4().hex[:6]}.bin")
                    )
                    out["websockify"] = await median_of(
                        3, lambda: websockify_upload(sshd, data, f"wss://localhost:{wsk_port}/", tls.ca_pem)
                    )
                    out["bare_first_byte"] = sorted([await bare_first_byte(sshd) for _ in range(5)])[2]
                    return out

                got = asyncio.run(measure())
        finally:
            if websockify is not None:
                websockify.terminate()
                websockify.wait(10)
            if gateway is not None:
                gateway.terminate()
                gateway.wait(10)
            sshd.stop()
    mib = upload_mib
    direct, gw, bare = mib / got["direct"], mib / got["gateway"], mib / got["bare_upload"]
    report(
        f"upload of {mib} MiB, direct",
        direct,
        "MiB/s",
        bare,
        ">= 0.6 (floor: bare asyncssh SFTP)",
        direct / bare >= 0.6,
    )
    report(
        f"upload of {mib} MiB, through the gateway",
        gw,
        "MiB/s",
        direct,
        ">= 0.45 (floor: direct)",
        gw / direct >= 0.45,
    )
    wsk = mib / got["websockify"]
    report(
        f"upload of {mib} MiB, through the gateway",
        gw,
        "MiB/s",
        wsk,
        ">= 1.5 (floor: websockify, SSH over WSS)",
        gw / wsk >= 1.5,
    )
    first, bare_first = got["first_byte"] * 1000, got["bare_first_byte"] * 1000
    print(
        f"time to first terminal byte (median of 5): {first:.1f} ms through RAP; bare asyncssh connect and "
        f"first byte {bare_first:.1f} ms; ratio {first / bare_first:.2f}x "
        f"({'meets' if first / bare_first <= 1.3 else 'MISSES'} target <= 1.3x)",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--upload-mib", type=int, default=32)
    args = parser.parse_args()
    rate, floor = token_validation(args.tokens)
    report(
        "worker token validations (every bind check)",
        rate,
        "tokens/s",
        floor,
        ">= 0.4 (floor: raw RSA verify)",
        rate / floor >= 0.4,
    )
    full_stack(args.upload_mib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
