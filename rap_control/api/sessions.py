"""SessionService: start, read, list, attach, detach and terminate sessions."""

from __future__ import annotations

import uuid
from typing import Any

from rap.v1 import session_pb2, session_pb2_grpc
from rap_control.api import convert, session_convert
from rap_control.api.calls import Calls
from rap_control.config import Settings
from rap_control.coordination.types import Coordination, EventKind, WorkerEvent, notify_best_effort
from rap_control.db.engine import UnitOfWork
from rap_control.ids import parse_id, require_id
from rap_control.paging import page_request
from rap_control.pki.authority import CertificateAuthority
from rap_control.policy.candidates import Candidate, candidates
from rap_control.principal import CallContext
from rap_control.sessions.attachments import Attached, Attachments
from rap_control.sessions.service import SessionService
from rap_control.sessions.types import Session, SessionFilter


class SessionServicer(session_pb2_grpc.SessionServiceServicer):
    SERVICE_NAME = "rap.v1.SessionService"

    def __init__(
        self,
        calls: Calls,
        sessions: SessionService,
        attachments: Attachments,
        authority: CertificateAuthority,
        settings: Settings,
        coordination: Coordination,
    ) -> None:
        self._calls = calls
        self._sessions = sessions
        self._attachments = attachments
        self._authority = authority
        self._settings = settings
        self._coordination = coordination
        self._gateway_ca = settings.gateway_ca_file.read_text() if settings.gateway_ca_file else ""

    async def StartSession(self, request: Any, context: Any) -> session_pb2.StartSessionResponse:
        resource_id = require_id(request.resource_id, "resource_id")
        channels = session_convert.channels(request.channels)
        # Without the bus the worker could not be told: refuse before writing anything.
        await self._coordination.ensure_available()
        session = await self._calls.run(
            lambda uow, call: self._sessions.start(uow, call, resource_id, channels, request.request_id)
        )
        await self._tell_worker(session, EventKind.SESSION_ASSIGNED)
        return session_pb2.StartSessionResponse(session=session_convert.session_to_proto(session))

    async def GetSession(self, request: Any, context: Any) -> session_pb2.GetSessionResponse:
        session_id = require_id(request.id, "id")
        session = await self._calls.run(lambda uow, call: self._sessions.get(uow, call, session_id))
        return session_pb2.GetSessionResponse(session=session_convert.session_to_proto(session))

    async def ListSessions(self, request: Any, context: Any) -> session_pb2.ListSessionsResponse:
        page = page_request(request.page_size, request.page_token)
        flt = SessionFilter(
            state=session_convert.state(request.state, "state", required=False),
            resource_id=parse_id(request.resource_id, "resource_id", required=False),
        )
        sessions, key = await self._calls.run(lambda uow, call: self._sessions.list(uow, call, flt, page))
        return session_pb2.ListSessionsResponse(
            sessions=[session_convert.session_to_proto(s) for s in sessions],
            next_page_token=convert.next_page_token(key),
        )

    async def TerminateSession(self, request: Any, context: Any) -> session_pb2.TerminateSessionResponse:
        session_id = require_id(request.id, "id")
        session = await self._calls.run(
            lambda uow, call: self._sessions.terminate(uow, call, session_id, request.reason)
        )
        await self._tell_worker(session, EventKind.SESSION_TERMINATED)
        return session_pb2.TerminateSessionResponse(session=session_convert.session_to_proto(session))

    async def AttachSession(self, request: Any, context: Any) -> session_pb2.AttachSessionResponse:
        session_id = require_id(request.session_id, "session_id")

        def unit(uow: UnitOfWork, call: CallContext) -> tuple[Attached, list[Candidate]]:
            attached = self._attachments.attach(uow, call, session_id, request.takeover)
            offered = candidates(
                trust_mode=self._settings.direct_trust_mode.value,
                production=self._settings.production,
                direct_url=attached.worker_direct_url,
                platform_ca_pem=self._authority.get(uow).certificate_pem,
                gateway_url=self._settings.gateway_url,
                gateway_ca_pem=self._gateway_ca,
            )
            return attached, offered

        attached, offered = await self._calls.run(unit)
        worker_id = attached.session.worker_id
        if attached.superseded is not None:
            await self._tell_attachment(worker_id, session_id, attached.superseded)
        await self._tell_attachment(worker_id, session_id, attached.attachment.id)
        return session_pb2.AttachSessionResponse(
            attachment=session_convert.attachment_to_proto(attached.attachment, attached.token, offered)
        )

    async def DetachSession(self, request: Any, context: Any) -> session_pb2.DetachSessionResponse:
        session_id = require_id(request.session_id, "session_id")
        attachment_id = require_id(request.attachment_id, "attachment_id")
        ended, worker_id = await self._calls.run(
            lambda uow, call: self._attachments.detach(uow, call, session_id, attachment_id)
        )
        await self._tell_attachment(worker_id, session_id, ended.id)
        return session_pb2.DetachSessionResponse()

    async def _tell_attachment(
        self, worker_id: uuid.UUID | None, session_id: uuid.UUID, attachment_id: uuid.UUID
    ) -> None:
        if worker_id is not None:
            await notify_best_effort(
                self._coordination,
                WorkerEvent(EventKind.ATTACHMENT_UPDATED, worker_id, session_id, attachment_id),
            )

    async def _tell_worker(self, session: Session, kind: EventKind) -> None:
        """Best effort after the commit: PostgreSQL already holds the truth, and the
        worker's next heartbeat (or reconnect) picks up what a lost notice missed."""
        if session.worker_id is not None:
            await notify_best_effort(self._coordination, WorkerEvent(kind, session.worker_id, session.id))
