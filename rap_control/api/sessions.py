"""SessionService: start, read, list and terminate sessions (attach and detach come with the data plane)."""

from __future__ import annotations

import logging
from typing import Any

from rap.v1 import session_pb2, session_pb2_grpc
from rap_common.errors import Unavailable
from rap_control.api import convert, session_convert
from rap_control.api.calls import Calls
from rap_control.api.planned import DATA_PLANE, planned
from rap_control.coordination.types import Coordination, EventKind, WorkerEvent
from rap_control.ids import parse_id, require_id
from rap_control.paging import page_request
from rap_control.sessions.service import SessionService
from rap_control.sessions.types import Session, SessionFilter

log = logging.getLogger(__name__)


class SessionServicer(session_pb2_grpc.SessionServiceServicer):
    SERVICE_NAME = "rap.v1.SessionService"

    def __init__(self, calls: Calls, sessions: SessionService, coordination: Coordination) -> None:
        self._calls = calls
        self._sessions = sessions
        self._coordination = coordination

    async def StartSession(self, request: Any, context: Any) -> session_pb2.StartSessionResponse:
        resource_id = require_id(request.resource_id, "resource_id")
        channels = session_convert.channels(request.channels)
        # Without the bus the worker could not be told: refuse before writing anything.
        await self._coordination.ensure_available()
        session = await self._calls.run(
            lambda uow, call: self._sessions.start(uow, call, resource_id, channels)
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

    AttachSession = planned(DATA_PLANE)
    DetachSession = planned(DATA_PLANE)

    async def _tell_worker(self, session: Session, kind: EventKind) -> None:
        """Best effort after the commit: PostgreSQL already holds the truth, and the
        worker's next heartbeat (or reconnect) picks up what a lost notice missed."""
        if session.worker_id is None:
            return
        try:
            await self._coordination.notify(WorkerEvent(kind, session.worker_id, session.id))
        except Unavailable:
            log.warning(
                "could not notify worker %s of session %s; its heartbeat will", session.worker_id, session.id
            )
