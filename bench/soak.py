"""Soak: many clients through an operator's bad day, with garbage alongside.

    python bench/soak.py [--clients 64] [--seconds 120]

Two control-plane replicas (PostgreSQL behind a proxy the soak cuts, a
private Redis), one worker with its direct endpoint, a real sshd. Each
client loops: StartSession (with a request_id, retried on another replica
after an ambiguous failure), wait for active, AttachSession, bind over WSS,
a terminal round trip, TerminateSession. Meanwhile, on a schedule:

* PostgreSQL unreachable for longer than a lease (connections dropped,
  new ones refused), then back;
* Redis flushed (every route and inbox lost);
* replica B killed with SIGKILL.

And all along, from other loopback addresses, a flood of idle TLS
connections and garbage against the worker's direct endpoint.

It prints errors by kind, the bind latencies of valid clients (target:
under one second), the sessions left live at the end (orphans; target 0),
terminated sessions that did not end terminated (lost terminates; target
0), refused legitimate binds (target 0), and the worker's and replicas'
RSS and open files before and after (target: flat).

Needs root and openssh-server, like the e2e tests; uses DATABASE_URL
(default: the local PostgreSQL). Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import ssl
import statistics
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
import grpc  # noqa: E402
import psycopg2  # noqa: E402
import redis  # noqa: E402

from rap.v1 import admin_pb2, session_pb2, session_pb2_grpc  # noqa: E402
from rap_common import frames  # noqa: E402
from rap_common.identity import CA  # noqa: E402
from tests.conftest import _libpq  # noqa: E402
from tests.e2e.cluster import Cluster, cluster  # noqa: E402
from tests.support.redis_server import PrivateRedis  # noqa: E402
from tests.support.sshd import start_sshd  # noqa: E402

FLOOD_SOURCES = [f"127.0.0.{n}" for n in range(2, 10)]
LIVE = ("requested", "assigned", "starting", "active")
# How often a client asks whether its session is active (a patient client; the SDK's
# own wait is issue material of its own).
POLL_SECONDS = 0.2


def rss_and_fds(pid: int) -> tuple[float, int]:
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _alive(pid: int) -> bool:
    """A running process (not gone, not a zombie awaiting its parent)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


class Client:
    """One soak client: cycles until told to stop, counting what goes wrong by kind."""

    def __init__(self, number: int, targets: list[str], token: str, stats: Stats) -> None:
        self.number = number
        self.targets = targets
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.stats = stats
        self.channels = {t: grpc.aio.insecure_channel(t) for t in targets}
        self.next = number

    def stub(self) -> tuple[str, session_pb2_grpc.SessionServiceStub]:
        target = self.targets[self.next % len(self.targets)]
        return target, session_pb2_grpc.SessionServiceStub(self.channels[target])

    async def call(self, method: str, request: Any, retries: int = 30) -> Any:
        """Call on one replica; on UNAVAILABLE (or a dead replica) try the next one."""
        for attempt in range(retries):
            _, stub = self.stub()
            try:
                return await getattr(stub, method)(request, metadata=self.metadata, timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                self.stats.retries[f"{method}:{exc.code().name}"] += 1
                self.next += 1
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        raise RuntimeError(f"{method} gave up after {retries} tries")

    async def cycle(self, resource_id: str, http: aiohttp.ClientSession) -> None:
        request_id = f"soak-{self.number}-{uuid.uuid4().hex[:12]}"
        started = await self.call(
            "StartSession", session_pb2.StartSessionRequest(resource_id=resource_id, request_id=request_id)
        )
        session_id = started.session.id
        self.stats.started.add(session_id)
        deadline = time.monotonic() + 60
        while True:
            got = (await self.call("GetSession", session_pb2.GetSessionRequest(id=session_id))).session
            if got.state == session_pb2.SESSION_STATE_ACTIVE:
                break
            if got.state in (session_pb2.SESSION_STATE_FAILED, session_pb2.SESSION_STATE_TERMINATED):
                self.stats.error(f"session_{got.end_reason or 'ended'}_before_active")
                return
            if time.monotonic() > deadline:
                self.stats.error("not_active_within_60s")
                break
            await asyncio.sleep(POLL_SECONDS)
        try:
            attached = (
                await self.call(
                    "AttachSession", session_pb2.AttachSessionRequest(session_id=session_id, takeover=True)
                )
            ).attachment
            await self.bind(attached, http)
        finally:
            await self.call("TerminateSession", session_pb2.TerminateSessionRequest(id=session_id))
            self.stats.terminated.add(session_id)

    async def bind(self, attached: session_pb2.Attachment, http: aiohttp.ClientSession) -> None:
        direct = attached.candidates[0]
        begun = time.monotonic()
        ws = await http.ws_connect(
            direct.url,
            headers={"Authorization": f"Bearer {attached.data_plane_token}"},
            protocols=(frames.SUBPROTOCOL,),
            ssl=ssl.create_default_context(cadata=direct.ca_bundle_pem),
        )
        try:
            marker = f"soak-{uuid.uuid4().hex[:6]}"
            await ws.send_bytes(frames.terminal(f"echo {marker}-$((1+1))\n".encode()))
            seen = b""
            while f"{marker}-2".encode() not in seen:
                message = await asyncio.wait_for(ws.receive(), 30)
                if message.type != aiohttp.WSMsgType.BINARY:
                    self.stats.error(f"bind_refused_{ws.close_code}_{message.extra}")
                    return
                if not seen:
                    self.stats.bind_latency.append(time.monotonic() - begun)
                frame = frames.decode(message.data)
                if frame.HasField("terminal_data"):
                    seen += frame.terminal_data.data
            self.stats.round_trips += 1
        finally:
            await ws.close()

    async def run(self, resource_id: str, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                try:
                    await self.cycle(resource_id, http)
                except (
                    grpc.aio.AioRpcError,
                    RuntimeError,
                    aiohttp.ClientError,
                    OSError,
                    TimeoutError,
                ) as exc:
                    kind = _kind(exc)
                    self.stats.error(kind)
        for channel in self.channels.values():
            await channel.close()


def _kind(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        reason = dict(exc.trailing_metadata() or ()).get("rap-reason", "")
        return f"{exc.code().name}:{reason}"
    return type(exc).__name__


class Stats:
    def __init__(self) -> None:
        self.errors: collections.Counter[str] = collections.Counter()
        # When each kind of error happened, as wall-clock times, to set beside the faults.
        self.when: dict[str, list[str]] = collections.defaultdict(list)
        self.retries: collections.Counter[str] = collections.Counter()
        self.bind_latency: list[float] = []
        self.started: set[str] = set()
        self.terminated: set[str] = set()
        self.round_trips = 0

    def error(self, kind: str) -> None:
        self.errors[kind] += 1
        self.when[kind].append(time.strftime("%X"))


async def flood(
    host: str, port: int, ca_pem: str, stop: asyncio.Event, counts: collections.Counter[str]
) -> None:
    """Idle TLS connections and garbage from other loopback addresses, until stopped."""
    context = ssl.create_default_context(cadata=ca_pem)
    held: list[asyncio.StreamWriter] = []
    i = 0
    while not stop.is_set():
        source = FLOOD_SOURCES[i % len(FLOOD_SOURCES)]
        i += 1
        try:
            if i % 3:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        host, port, ssl=context, local_addr=(source, 0), server_hostname="127.0.0.1"
                    ),
                    5,
                )
                held.append(writer)
                counts["idle"] += 1
            else:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, local_addr=(source, 0)), 5
                )
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(64))
                writer.close()
                counts["garbage"] += 1
        except (OSError, ssl.SSLError, TimeoutError):
            counts["refused"] += 1
        if len(held) > 400:
            for writer in held[:200]:
                writer.close()
            del held[:200]
        await asyncio.sleep(0.005)
    for writer in held:
        writer.close()


async def faults(c: Cluster, bus: PrivateRedis, seconds: float, log: list[str], outage: float) -> None:
    """The bad day, on a schedule relative to the run's length."""
    assert c.proxy is not None
    await asyncio.sleep(seconds * 0.2)
    log.append(f"{time.strftime('%X')} PostgreSQL unreachable")
    c.proxy.cut()
    # Longer than a lease.
    await asyncio.sleep(outage)
    c.proxy.restore()
    log.append(f"{time.strftime('%X')} PostgreSQL back")
    await asyncio.sleep(seconds * 0.2)
    redis.Redis.from_url(bus.url).flushall()
    log.append(f"{time.strftime('%X')} Redis flushed")
    await asyncio.sleep(seconds * 0.2)
    b = c.replicas[1]
    if b.process is not None:
        b.process.send_signal(signal.SIGKILL)
        log.append(f"{time.strftime('%X')} replica B killed")


def sessions_by_state(c: Cluster, ids: set[str]) -> dict[str, str]:
    with psycopg2.connect(_libpq(c.database_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT id::text, state FROM sessions WHERE id = ANY(%s::uuid[])", (list(ids),))
        return dict(cur.fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--no-flood", action="store_true", help="without the idle/garbage flood")
    parser.add_argument(
        "--lease-ttl",
        type=int,
        default=18,
        help="RAP_SESSION_LEASE_TTL_SECONDS (heartbeats every sixth of it)",
    )
    parser.add_argument("--no-faults", action="store_true", help="without the outage, flush and kill")
    args = parser.parse_args()
    postgres = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    with tempfile.TemporaryDirectory(prefix="rap-soak-") as tmp:
        work = Path(tmp)
        sshd = start_sshd(work, extra_config="MaxStartups 200\nMaxSessions 200\n")
        bus = PrivateRedis(work)
        bus.start()
        try:
            timing = {
                "RAP_SESSION_LEASE_TTL_SECONDS": str(args.lease_ttl),
                "RAP_WORKER_HEARTBEAT_SECONDS": str(max(1, args.lease_ttl // 6)),
            }
            with cluster(postgres, work, bus.url, replicas=2, database_proxy=True, **timing) as c:
                run(
                    c,
                    bus,
                    sshd,
                    args.clients,
                    args.seconds,
                    flood_on=not args.no_flood,
                    faults_on=not args.no_faults,
                    outage=args.lease_ttl + 4,
                )
        finally:
            bus.stop()
            sshd.stop()


def run(
    c: Cluster,
    bus: PrivateRedis,
    sshd: Any,
    clients: int,
    seconds: float,
    *,
    flood_on: bool,
    faults_on: bool,
    outage: float,
) -> None:
    worker = c.enroll_worker("soak")
    assert worker.process is not None
    resource_id = c.ssh_resource(sshd)
    processes = {
        "worker": worker.process.pid,
        **{f"replica {r.name}": r.process.pid for r in c.replicas if r.process},
    }
    before = {name: rss_and_fds(pid) for name, pid in processes.items()}
    direct_url = next(w.direct_url for w in c.admin.admin.ListWorkers(admin_pb2.ListWorkersRequest()).workers)
    host, port = direct_url.removeprefix("wss://").split("/")[0].rsplit(":", 1)
    stats, flood_counts, fault_log = Stats(), collections.Counter[str](), list[str]()
    samples: list[dict[str, float]] = []

    async def go() -> None:
        stop = asyncio.Event()
        targets = [r.target for r in c.replicas]
        soakers = [Client(i, targets, c.admin.token, stats) for i in range(clients)]
        tasks = [asyncio.create_task(s.run(resource_id, stop)) for s in soakers]
        if flood_on:
            ca = (worker.state_dir / CA).read_text()
            tasks.append(asyncio.create_task(flood(host, int(port), ca, stop, flood_counts)))
        bad_day = asyncio.create_task(faults(c, bus, seconds, fault_log, outage)) if faults_on else None
        for _ in range(4):
            await asyncio.sleep(seconds / 4)
            samples.append({n: rss_and_fds(p)[0] for n, p in processes.items() if _alive(p)})
        stop.set()
        if bad_day is not None:
            await bad_day
        await asyncio.wait(tasks, timeout=120)

    started = time.monotonic()
    asyncio.run(go())
    elapsed = time.monotonic() - started
    # Let the last terminations reach the worker, then look at what is left.
    deadline = time.monotonic() + 30
    while True:
        states = sessions_by_state(c, stats.started)
        live = [s for s, state in states.items() if state in LIVE]
        if not live or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    after = {name: rss_and_fds(pid) for name, pid in processes.items() if _alive(pid)}
    lost_terminates = [s for s in stats.terminated if states.get(s) not in ("terminated", "failed")]
    refused = {k: v for k, v in stats.errors.items() if k.startswith("bind_refused")}
    latency = sorted(stats.bind_latency)
    print(
        f"soak: {clients} clients, {elapsed:.0f} s, {stats.round_trips} terminal round trips, "
        f"{len(stats.started)} sessions started",
        flush=True,
    )
    for line in fault_log:
        print(f"  fault: {line}")
    print(f"  flood alongside: {dict(flood_counts)}")
    print(f"  errors by kind: {dict(stats.errors) or 'none'}")
    for kind, times in stats.when.items():
        spans = collections.Counter(times)
        print(f"    {kind}: " + ", ".join(f"{t} x{n}" for t, n in sorted(spans.items())))
    print(f"  retries by kind (after ambiguous failures, same request_id): {dict(stats.retries) or 'none'}")
    if latency:
        p50 = statistics.median(latency)
        p99 = latency[min(len(latency) - 1, int(len(latency) * 0.99))]
        print(
            f"  valid bind to first byte: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"max {latency[-1] * 1000:.0f} ms; ratio of max to the 1 s limit {latency[-1]:.2f} "
            f"({'meets' if latency[-1] < 1 else 'MISSES'} target < 1 s)"
        )
    print(
        f"  refused legitimate binds: {sum(refused.values())} {refused or ''} "
        f"({'meets' if not refused else 'MISSES'} target 0)"
    )
    print(
        f"  orphan sessions (still live at the end): {len(live)} ({'meets' if not live else 'MISSES'} target 0)"
    )
    print(
        f"  lost terminates: {len(lost_terminates)} ({'meets' if not lost_terminates else 'MISSES'} target 0)"
    )
    for name in processes:
        trail = " -> ".join(f"{q[name]:.0f}" for q in samples if name in q)
        print(f"  {name}: RSS at each quarter of the run: {trail} MiB")
    for name, (rss, fds) in before.items():
        if name in after:
            rss2, fds2 = after[name]
            print(
                f"  {name}: RSS {rss:.0f} -> {rss2:.0f} MiB (ratio {rss2 / rss:.2f}), open files {fds} -> {fds2}"
            )
        else:
            print(f"  {name}: RSS {rss:.0f} MiB, open files {fds} before; gone (killed) after")


if __name__ == "__main__":
    main()
