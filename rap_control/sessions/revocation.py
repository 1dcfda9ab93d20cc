"""Revocation reaches live sessions: a disabled user's and a revoked worker's end at once.

Disabling a user terminates every live session the user started and
detaches the user's active attachments on other sessions; revoking a
worker fails every live session it runs. Each is audited with its reason,
in the transaction of the change that caused it, and the caller tells the
workers after the commit (they close the bound connections: 4412 for an
ended session, 4411 for a detached attachment). The resolver refuses from
the same commit on: the sessions are no longer live.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select, update

from rap_control.audit.service import AuditLog
from rap_control.audit.types import EventType
from rap_control.db import models as m
from rap_control.db.engine import UnitOfWork
from rap_control.principal import Actor
from rap_control.sessions.lifecycle import Lifecycle
from rap_control.sessions.repository import SessionRepository
from rap_control.sessions.types import Session, SessionState


@dataclass(frozen=True)
class Detached:
    attachment_id: uuid.UUID
    session_id: uuid.UUID
    worker_id: uuid.UUID | None


@dataclass(frozen=True)
class Revoked:
    """What a revocation ended, for the workers to be told."""

    sessions: list[Session] = field(default_factory=list)
    attachments: list[Detached] = field(default_factory=list)


class Revocations:
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit
        self._lifecycle = Lifecycle(audit)

    def end_for_user(
        self, uow: UnitOfWork, organization_id: uuid.UUID, user_id: uuid.UUID, actor: Actor
    ) -> Revoked:
        """Terminate the user's live sessions (reason ``user_disabled``) and detach the
        user's active attachments on other sessions."""
        ended = []
        for session in SessionRepository(uow.session).live_for_user(organization_id, user_id):
            done = self._lifecycle.end(uow, session.id, SessionState.TERMINATED, "user_disabled", actor)
            if done is not None:
                ended.append(done)
        rows = uow.session.execute(
            update(m.Attachment)
            .where(
                m.Attachment.organization_id == organization_id,
                m.Attachment.user_id == user_id,
                m.Attachment.state == "active",
            )
            .values(state="detached", ended_at=datetime.now(UTC))
            .returning(m.Attachment.id, m.Attachment.session_id),
            execution_options={"synchronize_session": False},
        ).all()
        workers = dict(
            uow.session.execute(
                select(m.Session.id, m.Session.worker_id).where(m.Session.id.in_([r[1] for r in rows]))
            ).all()
        )
        detached = []
        for attachment_id, session_id in rows:
            detached.append(Detached(attachment_id, session_id, workers.get(session_id)))
            self._audit.record(
                uow,
                actor,
                EventType.SESSION_DETACHED,
                target_type="session",
                target_id=str(session_id),
                details={"attachment_id": str(attachment_id), "reason": "user_disabled"},
                organization_id=organization_id,
            )
        return Revoked(ended, detached)

    def end_for_worker(self, uow: UnitOfWork, worker_id: uuid.UUID, actor: Actor) -> Revoked:
        """Fail every live session of a revoked worker (reason ``worker_revoked``)."""
        ended = []
        for session in SessionRepository(uow.session).live_for_worker(worker_id):
            done = self._lifecycle.end(uow, session.id, SessionState.FAILED, "worker_revoked", actor)
            if done is not None:
                ended.append(done)
        return Revoked(ended)
