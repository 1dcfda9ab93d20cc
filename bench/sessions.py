"""Session benchmark: each figure beside a floor measured in the same run.

    python bench/sessions.py [--sessions 2000] [--workers 4] [--streams 5000] [--window 30]

1. Sessions per second from StartSession to "assignment acknowledged and
   secret resolved" (the simulated worker acks the Assignment and calls
   ResolveSecret over mTLS), with p50 and p99, for --workers simulated
   workers and 32 StartSession calls in flight, against a `rap-control
   serve` process. Floor: a bare grpc.aio unary call, in a process of its
   own, whose handler does one psycopg2 transaction (SELECT by key, INSERT,
   INSERT, UPDATE) and one RS256 signature (3072-bit, like the lease
   token's), at 32 in flight. Target: at least 0.5 of the floor.
2. Idle worker streams: --streams enrolled workers each hold a Connect
   stream and heartbeat every 10 s; the CPU the replica spends over a
   --window seconds window. Target: 5,000 streams under half a core.

Uses DATABASE_URL (default: the local PostgreSQL), makes and drops its
own databases. Loopback only. The simulated workers and the clients share
this process; the control plane and the floor server run in their own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# bench/ holds secrets.py, named like the standard library's module: take the
# folder off the path (Python put it first) so that `import secrets` works.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import grpc  # noqa: E402
import psycopg2  # noqa: E402
import psycopg2.pool  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from jose import jwk, jwt  # noqa: E402

from rap.v1 import (  # noqa: E402
    admin_pb2,
    admin_pb2_grpc,
    credentials_pb2,
    resolver_pb2,
    resolver_pb2_grpc,
    resource_pb2,
    resource_pb2_grpc,
    secret_pb2,
    secret_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)
from rap_control.audit.service import AuditLog  # noqa: E402
from rap_control.db.engine import Database  # noqa: E402
from rap_control.identity.service import IdentityService  # noqa: E402
from tests.conftest import _libpq, fresh_database  # noqa: E402
from tests.support.pki import make_csr  # noqa: E402
from tests.support.processes import ControlPlane, control_env, free_port, new_key_b64, wait_for  # noqa: E402

IN_FLIGHT = 32
_EOF: Any = getattr(grpc.aio, "EOF")  # noqa: B009


def report(name: str, value: float, unit: str, floor: float, target: str, ok: bool, extra: str = "") -> None:
    ratio = value / floor if floor else float("nan")
    verdict = "meets" if ok else "MISSES"
    print(
        f"{name}: {value:,.1f} {unit}{extra}; floor {floor:,.1f} {unit}; ratio {ratio:.2f} "
        f"({verdict} target {target})",
        flush=True,
    )


def percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


async def run_in_flight(count: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Run ``one(i)`` for i < count, IN_FLIGHT at a time; the seconds it took."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def lane() -> None:
        while not queue.empty():
            await one(queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
    return time.perf_counter() - started


# -- the control plane ------------------------------------------------------


def bootstrap(url: str) -> str:
    db = Database(url, pool_size=2)
    try:
        _, _, issued = db.run_sync(
            lambda uow: IdentityService(AuditLog()).bootstrap(uow, "bench", "b@bench.test")
        )
        return issued.token.reveal()
    finally:
        db.close()


def start_plane(url: str, work: Path, name: str) -> ControlPlane:
    env = control_env(
        url,
        new_key_b64(),
        None,
        work,
        RAP_SESSION_LEASE_TTL_SECONDS="30",
        RAP_WORKER_HEARTBEAT_SECONDS="10",
        RAP_LOG_LEVEL="INFO",  # start-up waits for the "serving on" line
        RAP_DB_POOL_SIZE="10",
    )
    return ControlPlane(name, env, work / f"{name}.log").start()


class Identity:
    def __init__(self, worker_id: str, key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> None:
        self.worker_id, self.key_pem, self.cert_pem, self.ca_pem = worker_id, key_pem, cert_pem, ca_pem

    def channel(self, target: str) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(self.ca_pem, self.key_pem, self.cert_pem)
        return grpc.aio.secure_channel(target, credentials)


async def enroll_many(target: str, token: str, count: int) -> list[Identity]:
    metadata = (("authorization", f"Bearer {token}"),)
    out: list[Identity] = []
    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        workers = worker_pb2_grpc.WorkerServiceStub(channel)

        async def one(i: int) -> None:
            enrollment = await admin.CreateWorkerEnrollmentToken(
                admin_pb2.CreateWorkerEnrollmentTokenRequest(worker_name=f"sim-{i}"), metadata=metadata
            )
            csr, key = make_csr()
            enrolled = await workers.Enroll(
                worker_pb2.EnrollRequest(enrollment_token=enrollment.enrollment_token, csr_pem=csr)
            )
            pem = key.private_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            out.append(
                Identity(
                    enrolled.worker_id,
                    pem,
                    enrolled.certificate_pem.encode(),
                    enrolled.ca_bundle_pem.encode(),
                )
            )

        await run_in_flight(count, one)
    return out


class SimWorker:
    """A worker that acks each Assignment and resolves its secret, nothing more."""

    def __init__(self, identity: Identity, target: str, on_resolved: Callable[[str], None]) -> None:
        self.identity, self.target, self.on_resolved = identity, target, on_resolved
        self.sessions: list[str] = []
        self.connected = asyncio.Event()
        self.errors = 0

    async def run(self, stop: asyncio.Event, heartbeat: float = 10.0) -> None:
        async with self.identity.channel(self.target) as channel:
            call: Any = worker_pb2_grpc.WorkerServiceStub(channel).Connect()  # type: ignore[call-arg]
            resolver = resolver_pb2_grpc.SecretResolverStub(channel)
            lock = asyncio.Lock()

            async def send(**message: Any) -> None:
                async with lock:
                    await call.write(worker_pb2.ConnectRequest(**message))

            await send(
                hello=worker_pb2.Hello(version="sim", protocols=[resource_pb2.PROTOCOL_SSH], capacity=100000)
            )
            welcome = await call.read()
            assert welcome is not _EOF and welcome.WhichOneof("message") == "welcome", welcome
            self.connected.set()

            async def beat() -> None:
                await asyncio.sleep(heartbeat * (hash(self.identity.worker_id) % 1000) / 1000)
                while True:
                    await send(heartbeat=worker_pb2.Heartbeat(session_ids=list(self.sessions)))
                    await asyncio.sleep(heartbeat)

            async def handle(a: worker_pb2.Assignment) -> None:
                self.sessions.append(a.session_id)
                await send(assignment_ack=worker_pb2.AssignmentAck(session_id=a.session_id, accepted=True))
                try:
                    await resolver.ResolveSecret(
                        resolver_pb2.ResolveSecretRequest(
                            organization_id=a.organization_id,
                            resource_id=a.resource_id,
                            worker_id=self.identity.worker_id,
                            session_id=a.session_id,
                            secret_ref=a.secret_ref,
                            lease_token=a.lease_token,
                        )
                    )
                except grpc.aio.AioRpcError:
                    self.errors += 1
                    return
                self.on_resolved(a.session_id)

            beats = asyncio.create_task(beat())
            reader = asyncio.create_task(self._read(call, handle))
            await stop.wait()
            beats.cancel()
            reader.cancel()
            call.cancel()

    async def _read(self, call: Any, handle: Callable[[worker_pb2.Assignment], Awaitable[None]]) -> None:
        tasks = set()
        while True:
            message = await call.read()
            if message is _EOF:
                return
            if message.WhichOneof("message") == "assignment":
                task = asyncio.create_task(handle(message.assignment))
                tasks.add(task)
                task.add_done_callback(tasks.discard)


async def session_rate(
    url: str, work: Path, sessions: int, worker_count: int
) -> tuple[float, float, float, int]:
    plane = start_plane(url, work, "sessions")
    try:
        token = bootstrap(url)
        metadata = (("authorization", f"Bearer {token}"),)
        identities = await enroll_many(plane.target, token, worker_count)
        async with grpc.aio.insecure_channel(plane.target) as channel:
            resources = resource_pb2_grpc.ResourceServiceStub(channel)
            secrets = secret_pb2_grpc.SecretServiceStub(channel)
            resource_ids = []
            for i in range(16):
                created = await resources.CreateResource(
                    resource_pb2.CreateResourceRequest(
                        resource=resource_pb2.Resource(
                            name=f"r{i}", protocol=resource_pb2.PROTOCOL_SSH, address="10.0.0.1"
                        )
                    ),
                    metadata=metadata,
                )
                await secrets.PutResourceSecret(
                    secret_pb2.PutResourceSecretRequest(
                        resource_id=created.resource.id,
                        ssh=credentials_pb2.SshCredential(username="bench", password="p" * 24),
                    ),
                    metadata=metadata,
                )
                resource_ids.append(created.resource.id)

            waiters: dict[str, asyncio.Future[float]] = {}
            loop = asyncio.get_running_loop()

            def resolved(session_id: str) -> None:
                waiters.setdefault(session_id, loop.create_future())
                if not waiters[session_id].done():
                    waiters[session_id].set_result(time.perf_counter())

            stop = asyncio.Event()
            workers = [SimWorker(i, plane.worker_target, resolved) for i in identities]
            runs = [asyncio.create_task(w.run(stop)) for w in workers]
            await asyncio.wait_for(asyncio.gather(*(w.connected.wait() for w in workers)), 60)
            stub = session_pb2_grpc.SessionServiceStub(channel)
            latencies: list[float] = []

            async def one(i: int) -> None:
                started = time.perf_counter()
                response = await stub.StartSession(
                    session_pb2.StartSessionRequest(resource_id=resource_ids[i % len(resource_ids)]),
                    metadata=metadata,
                )
                future = waiters.setdefault(response.session.id, loop.create_future())
                done_at = await asyncio.wait_for(future, 30)
                latencies.append(done_at - started)

            await run_in_flight(64, one)  # warm-up: connections, caches, the signing key
            latencies.clear()
            elapsed = await run_in_flight(sessions, one)
            # For scale: one authenticated unary RPC doing one small unit of work.
            some = list(waiters)[:64]

            async def get(i: int) -> None:
                await stub.GetSession(
                    session_pb2.GetSessionRequest(id=some[i % len(some)]), metadata=metadata
                )

            get_rate = sessions / await run_in_flight(sessions, get)
            stop.set()
            await asyncio.gather(*runs, return_exceptions=True)
            p50, p99 = percentiles(latencies)
            return sessions / elapsed, p50, p99, sum(w.errors for w in workers), get_rate
    finally:
        plane.stop()
        import shutil

        shutil.copy(plane.log, "/tmp/bench-sessions.log")


# -- the floor -------------------------------------------------------------


def floor_server(port: int, url: str) -> None:
    """A bare grpc.aio unary service: one psycopg2 transaction and one RS256 signature per call."""
    pool = psycopg2.pool.ThreadedConnectionPool(10, 10, _libpq(url))
    # Parsed once, as the control plane's key ring does.
    signer = jwk.construct(rsa.generate_private_key(public_exponent=65537, key_size=3072), "RS256")
    executor = ThreadPoolExecutor(10)

    def work(request: bytes) -> bytes:
        conn = pool.getconn()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT id, n FROM floor_keys WHERE id = %s", (int.from_bytes(request[:2], "big") % 16,)
                )
                row = cur.fetchone()
                session_id = str(uuid.uuid4())
                cur.execute("INSERT INTO floor_sessions VALUES (%s, %s)", (session_id, row[0]))
                cur.execute("INSERT INTO floor_leases VALUES (%s, %s)", (str(uuid.uuid4()), session_id))
                cur.execute("UPDATE floor_keys SET n = n + 1 WHERE id = %s", (row[0],))
        finally:
            pool.putconn(conn)
        token = jwt.encode(
            {"sid": session_id, "exp": int(time.time()) + 30}, signer, algorithm="RS256", headers={"kid": "k"}
        )
        return token.encode()

    async def handler(request: bytes, context: Any) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(executor, work, request)

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "bench.Floor", {"Call": grpc.unary_unary_rpc_method_handler(handler)}
                ),
            )
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("floor serving", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


def floor_rate(url: str, work: Path, calls: int) -> tuple[float, float, float]:
    conn = psycopg2.connect(_libpq(url))
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE floor_keys (id int PRIMARY KEY, n bigint)")
        cur.execute("INSERT INTO floor_keys SELECT g, 0 FROM generate_series(0, 15) g")
        cur.execute("CREATE TABLE floor_sessions (id uuid PRIMARY KEY, key_id int)")
        cur.execute("CREATE TABLE floor_leases (id uuid PRIMARY KEY, session_id uuid)")
    conn.close()
    port = free_port()
    log = work / "floor.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, __file__, "--floor-server", str(port), "--url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for("floor serving", log, process)
        return asyncio.run(_floor_calls(port, calls))
    finally:
        process.terminate()
        process.wait(10)


async def _floor_calls(port: int, calls: int) -> tuple[float, float, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/bench.Floor/Call")
        latencies: list[float] = []

        async def one(i: int) -> None:
            started = time.perf_counter()
            await call(i.to_bytes(4, "big"))
            latencies.append(time.perf_counter() - started)

        await run_in_flight(64, one)
        latencies.clear()
        elapsed = await run_in_flight(calls, one)
    p50, p99 = percentiles(latencies)
    return calls / elapsed, p50, p99


# -- idle streams ----------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle_streams(url: str, work: Path, count: int, window: float) -> tuple[float, int, int]:
    plane = start_plane(url, work, "streams")
    try:
        token = bootstrap(url)
        identities = await enroll_many(plane.target, token, count)
        stop = asyncio.Event()
        workers = [SimWorker(i, plane.worker_target, lambda _: None) for i in identities]
        runs = []
        for start in range(0, count, 200):  # connect in waves
            runs.extend(asyncio.create_task(w.run(stop)) for w in workers[start : start + 200])
            await asyncio.wait_for(
                asyncio.gather(*(w.connected.wait() for w in workers[start : start + 200])), 120
            )
        await asyncio.sleep(12)  # one full heartbeat round after the last connection
        assert plane.process is not None
        before, started = cpu_seconds(plane.process.pid), time.perf_counter()
        await asyncio.sleep(window)
        cores = (cpu_seconds(plane.process.pid) - before) / (time.perf_counter() - started)
        alive = sum(1 for r in runs if not r.done())
        stop.set()
        await asyncio.gather(*runs, return_exceptions=True)
        return cores, alive, count
    finally:
        plane.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server:
        floor_server(args.floor_server, args.url)
        return 0
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the replica inherits it
    server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())

    with tempfile.TemporaryDirectory() as tmp, fresh_database(server_url) as url:
        rate, p50, p99, errors, get_rate = asyncio.run(
            session_rate(url, Path(tmp), args.sessions, args.workers)
        )
    with tempfile.TemporaryDirectory() as tmp, fresh_database(server_url) as url:
        floor, f50, f99 = floor_rate(url, Path(tmp), args.sessions)
    report(
        f"sessions started to resolved ({args.workers} workers, {IN_FLIGHT} in flight)",
        rate,
        "sessions/s",
        floor,
        ">= 0.5",
        rate / floor >= 0.5,
        f" (p50 {p50:.1f} ms, p99 {p99:.1f} ms, {errors} resolve errors)",
    )
    print(f"  floor latency: p50 {f50:.1f} ms, p99 {f99:.1f} ms", flush=True)
    print(
        f"  for scale: GetSession (one authenticated RPC, one small unit of work) at {IN_FLIGHT} in flight: "
        f"{get_rate:,.1f} calls/s; a session takes two RPCs, three stream messages and four units of work",
        flush=True,
    )
    if args.streams:
        with tempfile.TemporaryDirectory() as tmp, fresh_database(server_url) as url:
            cores, alive, count = asyncio.run(idle_streams(url, Path(tmp), args.streams, args.window))
        verdict = "meets" if cores < 0.5 and alive == count else "MISSES"
        print(
            f"idle worker streams: {alive:,} of {count:,} held, heartbeats every 10 s; replica CPU "
            f"{cores:.3f} cores over {args.window:.0f} s; ratio {cores / 0.5:.2f} of the limit "
            f"({verdict} target: 5,000 streams under 0.5 core)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
