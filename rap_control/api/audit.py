"""AuditService: list and verify the caller's organization's audit chain."""

from __future__ import annotations

from typing import Any

from rap.v1 import audit_pb2, audit_pb2_grpc
from rap_control.api import convert
from rap_control.api.calls import Calls
from rap_control.audit.service import AuditLog
from rap_control.audit.types import AuditFilter
from rap_control.paging import page_request


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    SERVICE_NAME = "rap.v1.AuditService"

    def __init__(self, calls: Calls, audit: AuditLog) -> None:
        self._calls = calls
        self._audit = audit

    async def ListAuditEvents(self, request: Any, context: Any) -> audit_pb2.ListAuditEventsResponse:
        page = page_request(request.page_size, request.page_token)
        flt = AuditFilter(
            event_type=request.event_type or None,
            target_id=request.target_id or None,
            actor_id=request.actor_id or None,
            start_time=convert.from_timestamp(request, "start_time"),
            end_time=convert.from_timestamp(request, "end_time"),
        )
        events, next_key = await self._calls.run(
            lambda uow, call: self._audit.list_events(uow, call, flt, page)
        )
        return audit_pb2.ListAuditEventsResponse(
            events=[convert.audit_event_to_proto(e) for e in events],
            next_page_token=convert.next_page_token(next_key),
        )

    async def VerifyAuditChain(self, request: Any, context: Any) -> audit_pb2.VerifyAuditChainResponse:
        result = await self._calls.run(lambda uow, call: self._audit.verify_organization(uow, call))
        return audit_pb2.VerifyAuditChainResponse(
            ok=result.ok,
            checked_events=result.checked_events,
            first_broken_sequence=result.first_broken_sequence,
            first_broken_event_id=result.first_broken_event_id,
            problem=result.problem,
        )
