"""A control plane of one or two replica processes on a fresh database, for e2e tests."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg2
from google.protobuf import struct_pb2

from rap.v1 import admin_pb2, audit_pb2, credentials_pb2, resource_pb2, secret_pb2, session_pb2
from rap_control.audit.service import AuditLog
from rap_control.db.engine import Database
from rap_control.identity.service import IdentityService
from tests.conftest import _libpq, fresh_database
from tests.support.client import Client
from tests.support.processes import ControlPlane, WorkerProcess, control_env, new_key_b64
from tests.support.sshd import Sshd
from tests.support.tcp_proxy import TcpProxy, postgres_upstream, proxied_postgres_url


@dataclass
class Cluster:
    directory: Path
    database_url: str
    replicas: list[ControlPlane]
    admin: Client
    org_id: str
    workers: list[WorkerProcess] = field(default_factory=list)
    # In front of PostgreSQL for the replicas, when asked for: cut it for an outage.
    proxy: TcpProxy | None = None

    @property
    def a(self) -> ControlPlane:
        return self.replicas[0]

    def client(self, replica: ControlPlane) -> Client:
        return Client(replica.channel(), self.admin.token)

    def enroll_worker(
        self, name: str, targets: list[str] | None = None, nofile: int | None = None, **env: str
    ) -> WorkerProcess:
        token = self.admin.admin.CreateWorkerEnrollmentToken(
            admin_pb2.CreateWorkerEnrollmentTokenRequest(worker_name=name)
        ).enrollment_token
        worker = WorkerProcess.enroll(self.directory, self.a.target, token, name)
        worker.run(targets or [r.worker_target for r in self.replicas], nofile=nofile, **env)
        self.workers.append(worker)
        return worker

    def ssh_resource(
        self, sshd: Sshd, *, host_key: str | None = None, extra: dict[str, object] | None = None
    ) -> str:
        return self.secret_resource(
            sshd.address, sshd.username, sshd.password, host_key or sshd.host_key, extra=extra
        )

    def secret_resource(
        self,
        address: str,
        username: str,
        password: str,
        host_key: str = "",
        extra: dict[str, object] | None = None,
    ) -> str:
        """An SSH resource whose credential lives in the secret store only."""
        metadata = struct_pb2.Struct()
        metadata.update(extra or {})
        if host_key:
            metadata.update({"ssh_host_key": host_key})
        resource = self.admin.resources.CreateResource(
            resource_pb2.CreateResourceRequest(
                resource=resource_pb2.Resource(
                    name=f"ssh-{uuid.uuid4().hex[:8]}",
                    protocol=resource_pb2.PROTOCOL_SSH,
                    address=address,
                    metadata=metadata,
                )
            )
        ).resource
        self.admin.secrets.PutResourceSecret(
            secret_pb2.PutResourceSecretRequest(
                resource_id=resource.id,
                ssh=credentials_pb2.SshCredential(username=username, password=password),
            )
        )
        return str(resource.id)

    def start(
        self, resource_id: str, client: Client | None = None, timeout: float = 30
    ) -> session_pb2.Session:
        """StartSession as a careful client makes it: retried on UNAVAILABLE (the workers
        are reconnecting, or their heartbeats are late on a loaded machine) with the same
        request_id, until the state it needs is there."""
        request = session_pb2.StartSessionRequest(resource_id=resource_id, request_id=uuid.uuid4().hex)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return (client or self.admin).sessions.StartSession(request).session
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:  # type: ignore[attr-defined]
                    raise
                time.sleep(0.1)

    def wait_state(
        self, session_id: str, states: set[int], timeout: float = 30, client: Client | None = None
    ) -> session_pb2.Session:
        deadline = time.monotonic() + timeout
        while True:
            session = (
                (client or self.admin)
                .sessions.GetSession(session_pb2.GetSessionRequest(id=session_id))
                .session
            )
            if session.state in states:
                return session
            assert time.monotonic() < deadline, (
                f"session {session_id} stayed {session_pb2.SessionState.Name(session.state)} "
                f"({session.end_reason}); wanted {[session_pb2.SessionState.Name(s) for s in states]}"
            )
            time.sleep(0.1)

    def audit(self, event_type: str = "", client: Client | None = None) -> list[audit_pb2.AuditEvent]:
        events: list[audit_pb2.AuditEvent] = []
        token = ""
        while True:
            page = (client or self.admin).audit.ListAuditEvents(
                audit_pb2.ListAuditEventsRequest(page_size=200, page_token=token, event_type=event_type)
            )
            events.extend(page.events)
            token = page.next_page_token
            if not token:
                return events

    def table_dump(self) -> dict[str, str]:
        conn = psycopg2.connect(_libpq(self.database_url))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
                tables = [row[0] for row in cur.fetchall()]
                out = {}
                for table in tables:
                    cur.execute(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM \"{table}\" t")
                    out[table] = cur.fetchone()[0]
                return out
        finally:
            conn.close()

    def logs(self) -> str:
        texts = [r.log.read_text(errors="replace") for r in self.replicas]
        texts += [w.log.read_text(errors="replace") for w in self.workers if w.log.exists()]
        return "\n".join(texts)


@contextlib.contextmanager
def cluster(
    postgres_url: str,
    directory: Path,
    redis_url: str | None,
    replicas: int = 1,
    database_proxy: bool = False,
    **extra: str,
) -> Iterator[Cluster]:
    with fresh_database(postgres_url) as url:
        proxy = TcpProxy(postgres_upstream(url)).start() if database_proxy else None
        replica_url = proxied_postgres_url(url, proxy.port) if proxy else url
        env = control_env(replica_url, new_key_b64(), redis_url, directory, **extra)
        planes = [ControlPlane(name, env, directory / f"control-{name}.log") for name in "ab"[:replicas]]
        started: list[ControlPlane] = []
        workers: list[WorkerProcess] = []
        try:
            for plane in planes:
                started.append(plane.start())
            db = Database(url, pool_size=2)
            try:
                org, _admin, issued = db.run_sync(
                    lambda uow: IdentityService(AuditLog()).bootstrap(uow, "e2e", "admin@e2e.test")
                )
            finally:
                db.close()
            c = Cluster(
                directory,
                url,
                planes,
                Client(planes[0].channel(), issued.token.reveal()),
                str(org.id),
                workers,
                proxy,
            )
            yield c
        finally:
            for worker in workers:
                worker.stop()
            for plane in started:
                plane.stop()
            if proxy is not None:
                proxy.stop()


def states(*names: str) -> set[int]:
    return {session_pb2.SessionState.Value(f"SESSION_STATE_{n.upper()}") for n in names}
