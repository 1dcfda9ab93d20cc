"""A worker driven message by message, for tests of the worker-facing services.

It enrolls like `rap-worker enroll`, then speaks the Connect stream and
ResolveSecret with plain gRPC, so a test can send exactly the request it
means (another worker's lease token, a wrong secret_ref...).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization

from rap.v1 import (
    admin_pb2,
    identity_pb2,
    resolver_pb2,
    resolver_pb2_grpc,
    resource_pb2,
    session_pb2,
    worker_pb2,
    worker_pb2_grpc,
)
from tests.support.client import Client
from tests.support.pki import make_csr


class RawWorker:
    def __init__(
        self,
        admin: Client,
        user_target: str,
        worker_target: str,
        name: str = "raw",
        enroll_channel: grpc.Channel | None = None,
        role: int = identity_pb2.IDENTITY_ROLE_WORKER,
    ) -> None:
        token = admin.admin.CreateWorkerEnrollmentToken(
            admin_pb2.CreateWorkerEnrollmentTokenRequest(worker_name=name, role=role)
        ).enrollment_token
        csr, key = make_csr()
        with enroll_channel or grpc.insecure_channel(user_target) as channel:
            enrolled = worker_pb2_grpc.WorkerServiceStub(channel).Enroll(
                worker_pb2.EnrollRequest(enrollment_token=token, csr_pem=csr), timeout=15
            )
        self.worker_id = enrolled.worker_id
        self.role = enrolled.role
        self.ca_pem = enrolled.ca_bundle_pem.encode()
        self.cert_pem = enrolled.certificate_pem.encode()
        self.key_pem = key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.worker_target = worker_target
        self.responses: queue.Queue[worker_pb2.ConnectResponse] = queue.Queue()
        self.session_ids: list[str] = []
        self._requests: queue.Queue[worker_pb2.ConnectRequest | None] = queue.Queue()
        self._channel: grpc.Channel | None = None
        self._stop = threading.Event()
        self.error: grpc.RpcError | None = None

    def channel(self) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )
        return grpc.secure_channel(self.worker_target, credentials)

    def connect(
        self,
        capacity: int = 8,
        protocols: tuple[int, ...] = (resource_pb2.PROTOCOL_SSH,),
        session_ids: list[str] | None = None,
        direct_url: str = "",
    ) -> worker_pb2.Welcome:
        """Open a stream, say Hello, and heartbeat every second until close()."""
        self.responses, self._requests, self._stop = queue.Queue(), queue.Queue(), threading.Event()
        self._channel = self.channel()
        self._requests.put(
            worker_pb2.ConnectRequest(
                hello=worker_pb2.Hello(
                    version="raw",
                    protocols=protocols,
                    capacity=capacity,
                    session_ids=session_ids or [],
                    direct_url=direct_url,
                )
            )
        )
        stream = worker_pb2_grpc.WorkerServiceStub(self._channel).Connect(iter(self._requests.get, None))
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()
        threading.Thread(target=self._beat, daemon=True).start()
        first = self.responses.get(timeout=15)
        assert first.WhichOneof("message") == "welcome", first
        return first.welcome

    def _read(self, stream: Any) -> None:
        try:
            for response in stream:
                self.responses.put(response)
        except grpc.RpcError as exc:
            self.error = exc

    def _beat(self) -> None:
        while not self._stop.wait(1.0):
            self.send(heartbeat=worker_pb2.Heartbeat(session_ids=list(self.session_ids)))

    def send(self, **message: Any) -> None:
        self._requests.put(worker_pb2.ConnectRequest(**message))

    def assignment(self, session_id: str, timeout: float = 15) -> worker_pb2.Assignment:
        """Wait for the Assignment of ``session_id`` (other messages are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.responses.get(timeout=max(0.01, deadline - time.monotonic()))
            if message.WhichOneof("message") == "assignment" and message.assignment.session_id == session_id:
                self.session_ids.append(session_id)
                return message.assignment

    def accept(self, assignment: worker_pb2.Assignment) -> None:
        self.send(assignment_ack=worker_pb2.AssignmentAck(session_id=assignment.session_id, accepted=True))

    def activate(self, assignment: worker_pb2.Assignment) -> None:
        """Accept the assignment and report the session active."""
        self.accept(assignment)
        self.send(
            session_state_update=worker_pb2.SessionStateUpdate(
                session_id=assignment.session_id, state=session_pb2.SESSION_STATE_ACTIVE
            )
        )

    def resolve(
        self, assignment: worker_pb2.Assignment, **overrides: str
    ) -> resolver_pb2.ResolveSecretResponse:
        fields = {
            "organization_id": assignment.organization_id,
            "resource_id": assignment.resource_id,
            "worker_id": self.worker_id,
            "session_id": assignment.session_id,
            "secret_ref": assignment.secret_ref,
            "lease_token": assignment.lease_token,
        }
        fields.update(overrides)
        with self.channel() as channel:
            return resolver_pb2_grpc.SecretResolverStub(channel).ResolveSecret(
                resolver_pb2.ResolveSecretRequest(**fields), timeout=15
            )

    def close(self) -> None:
        self._stop.set()
        self._requests.put(None)
        if self._channel is not None:
            self._channel.close()
