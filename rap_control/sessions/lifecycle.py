"""Session state changes shared by the user side, the worker side and the sweeper.

Every change that ends a session releases its lease and is audited in the
same transaction.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from rap_control.audit.service import AuditLog
from rap_control.audit.types import EventType
from rap_control.db.engine import UnitOfWork
from rap_control.principal import Actor
from rap_control.sessions.repository import SessionRepository
from rap_control.sessions.types import LIVE_STATES, Session, SessionState

# Reason codes travel in audit rows and to clients: short identifiers only.
_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")


def reason_code(raw: str, default: str) -> str:
    """``raw`` if it is a well-formed reason code, else ``default`` (never free text)."""
    raw = raw.strip().lower()
    return raw if _REASON.fullmatch(raw) else default


@dataclass(frozen=True)
class SessionTiming:
    """How long a lease lives without a heartbeat, how often workers beat, and the
    defaults of how long a session may stay unattached and live at all (an
    organization's policy may set its own)."""

    lease_ttl_seconds: int = 30
    heartbeat_seconds: int = 10
    idle_timeout_seconds: int = 1800
    max_session_seconds: int = 28800

    @property
    def stale_after_seconds(self) -> int:
        """A worker not seen for this long is not offered new sessions."""
        return 3 * self.heartbeat_seconds


class Lifecycle:
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    def end(
        self,
        uow: UnitOfWork,
        session_id: uuid.UUID,
        state: SessionState,
        reason: str,
        actor: Actor,
        *,
        from_states: Iterable[SessionState] = LIVE_STATES,
        worker_id: uuid.UUID | None = None,
    ) -> Session | None:
        """End a live session as terminated or failed; None if it was not live
        (or not on ``worker_id``)."""
        repo = SessionRepository(uow.session)
        ended = repo.transition(session_id, from_states, state, end_reason=reason, worker_id=worker_id)
        if ended is None:
            return None
        repo.release_lease(session_id)
        event = EventType.SESSION_FAILED if state is SessionState.FAILED else EventType.SESSION_TERMINATED
        self._audit.record(
            uow,
            actor,
            event,
            target_type="session",
            target_id=str(session_id),
            details={
                "reason": reason,
                "resource_id": str(ended.resource_id),
                "worker_id": str(ended.worker_id) if ended.worker_id else None,
            },
            organization_id=ended.organization_id,
        )
        return ended
