"""WorkerService: enrollment, certificate renewal and the Connect stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from rap.v1 import worker_pb2, worker_pb2_grpc
from rap_common.errors import NotFound
from rap_common.identity import ROLE_TO_PROTO, ROLE_WORKER
from rap_control.api import convert, session_convert
from rap_control.api.connect import WorkerStreams
from rap_control.api.context import current_peer_certificate, current_request_id
from rap_control.db.engine import Database, UnitOfWork
from rap_control.ids import require_id
from rap_control.sessions import attachments
from rap_control.sessions.types import Attachment
from rap_control.tokens.keyring import SigningKeyRing
from rap_control.workers.service import WorkerEnrollment


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    SERVICE_NAME = "rap.v1.WorkerService"

    def __init__(
        self, db: Database, enrollment: WorkerEnrollment, streams: WorkerStreams, ring: SigningKeyRing
    ) -> None:
        self._db = db
        self._enrollment = enrollment
        self._streams = streams
        self._ring = ring

    async def Enroll(self, request: Any, context: Any) -> worker_pb2.EnrollResponse:
        """Authenticated by the one-time enrollment token in the request, not a bearer token."""
        request_id = current_request_id()
        enrolled = await self._db.run(
            lambda uow: self._enrollment.enroll(
                uow,
                request.enrollment_token,
                request.csr_pem,
                request.name,
                list(request.direct_host_names),
                request_id,
            )
        )
        return worker_pb2.EnrollResponse(
            worker_id=str(enrolled.worker_id),
            certificate_pem=enrolled.certificate_pem,
            ca_bundle_pem=enrolled.ca_bundle_pem,
            expire_time=convert.timestamp(enrolled.expires_at),
            role=ROLE_TO_PROTO[enrolled.role],
        )

    async def RenewCertificate(self, request: Any, context: Any) -> worker_pb2.RenewCertificateResponse:
        """On the worker port: the client certificate (verified by the transport) says who."""
        peer, request_id = current_peer_certificate(), current_request_id()
        renewed = await self._db.run(
            lambda uow: self._enrollment.renew(uow, peer, request.csr_pem, request_id)
        )
        return worker_pb2.RenewCertificateResponse(
            certificate_pem=renewed.certificate_pem,
            ca_bundle_pem=renewed.ca_bundle_pem,
            expire_time=convert.timestamp(renewed.expires_at),
        )

    def Connect(self, request_iterator: Any, context: Any) -> AsyncIterator[worker_pb2.ConnectResponse]:
        """On the worker port: the client certificate says which worker is connecting."""
        return self._streams.connect(request_iterator)

    async def GetDataPlaneKeys(self, request: Any, context: Any) -> worker_pb2.GetDataPlaneKeysResponse:
        """On the worker port, for any platform identity (a worker or a gateway)."""
        peer, request_id = current_peer_certificate(), current_request_id()

        def keys(uow: UnitOfWork) -> dict[str, dict[str, str]]:
            self._enrollment.identify_audited(uow, peer, None, "GetDataPlaneKeys", request_id)
            return self._ring.jwks(uow)

        jwks = await self._db.run(keys)
        return worker_pb2.GetDataPlaneKeysResponse(jwks=session_convert.jwks_to_proto(jwks))

    async def GetAttachment(self, request: Any, context: Any) -> worker_pb2.GetAttachmentResponse:
        """On the worker port, for workers only: an attachment of one of its own sessions."""
        peer, request_id = current_peer_certificate(), current_request_id()
        attachment_id = require_id(request.attachment_id, "attachment_id")

        def read(uow: UnitOfWork) -> Attachment:
            worker, _ = self._enrollment.identify_audited(uow, peer, ROLE_WORKER, "GetAttachment", request_id)
            found = attachments.for_worker(uow, worker.id, attachment_id)
            if found is None:
                raise NotFound(
                    f"attachment {attachment_id} is not one of this worker's", reason="attachment_not_found"
                )
            return found

        found = await self._db.run(read)
        return worker_pb2.GetAttachmentResponse(attachment=session_convert.attachment_message(found))
