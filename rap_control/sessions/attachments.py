"""Attachments: a client's right to a session's data channels, and its data-plane token.

At most one attachment of a session is active. Attaching again needs
``takeover``, which supersedes the active one (the worker then closes its
connection with the takeover close code). The token (RS256, audience
``rap-data-plane``) names the user, session, attachment, organization,
worker, resource and channels; the worker checks every one of them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import insert, select, update

from rap_common.errors import FailedPrecondition, NotFound
from rap_common.tokens import DATA_PLANE_AUDIENCE
from rap_control.audit.service import AuditLog
from rap_control.audit.types import EventType
from rap_control.db import models as m
from rap_control.db.engine import UnitOfWork
from rap_control.principal import CallContext
from rap_control.sessions.repository import SessionRepository
from rap_control.sessions.types import Attachment, Channel, Session, SessionState
from rap_control.tokens.keyring import SigningKeyRing


@dataclass(frozen=True)
class Attached:
    attachment: Attachment
    session: Session
    # A bearer credential for the data plane: kept out of repr (and so of logs).
    token: str = field(repr=False)
    superseded: uuid.UUID | None
    worker_direct_url: str | None


def _attachment(row: m.Attachment) -> Attachment:
    return Attachment(
        id=row.id,
        organization_id=row.organization_id,
        session_id=row.session_id,
        user_id=row.user_id,
        state=row.state,
        channels=[Channel(c) for c in row.channels],
        expires_at=row.token_expires_at,
    )


class Attachments:
    def __init__(self, audit: AuditLog, ring: SigningKeyRing, ttl_seconds: int) -> None:
        self._audit = audit
        self._ring = ring
        self._ttl = ttl_seconds

    def attach(self, uow: UnitOfWork, ctx: CallContext, session_id: uuid.UUID, takeover: bool) -> Attached:
        """A new active attachment of an active session, with its token (the session's
        user, or an admin of its organization)."""
        repo = SessionRepository(uow.session)
        repo.get(
            ctx.organization_id, session_id, user_id=None if ctx.principal.is_admin else ctx.principal.user_id
        )
        session = repo.get_any(session_id, lock=True)  # serializes attaches of one session
        assert session is not None
        if session.state is not SessionState.ACTIVE or session.worker_id is None:
            raise FailedPrecondition(
                f"session {session_id} is {session.state.value}; only an active session can be attached",
                reason="session_not_active",
            )
        current = uow.session.scalars(
            select(m.Attachment).where(m.Attachment.session_id == session_id, m.Attachment.state == "active")
        ).one_or_none()
        if current is not None and not takeover:
            raise FailedPrecondition(
                "the session has an active attachment; attach with takeover=true to replace it",
                reason="attachment_active",
            )
        superseded = None
        if current is not None:
            uow.session.execute(
                update(m.Attachment)
                .where(m.Attachment.id == current.id)
                .values(state="superseded", ended_at=datetime.now(UTC))
            )
            superseded = current.id
            self._audit.record(
                uow,
                ctx.actor,
                EventType.SESSION_TAKEOVER,
                target_type="session",
                target_id=str(session_id),
                details={
                    "superseded_attachment_id": str(current.id),
                    "previous_user_id": str(current.user_id),
                },
            )
        attachment_id = uuid.uuid4()
        direct = uow.session.scalar(select(m.Worker.direct_url).where(m.Worker.id == session.worker_id))
        claims = {
            "sub": str(ctx.principal.user_id),
            "sid": str(session_id),
            "att": str(attachment_id),
            "org": str(session.organization_id),
            "wrk": str(session.worker_id),
            "res": str(session.resource_id),
            "ch": [c.value for c in session.channels],
        }
        if direct:
            # Signed, so that a gateway relays only to the worker the control plane named.
            claims["wurl"] = direct
        token, jti, exp = self._ring.sign(uow, claims, audience=DATA_PLANE_AUDIENCE, ttl_seconds=self._ttl)
        expires_at = datetime.fromtimestamp(exp, UTC)
        row = uow.session.scalars(
            insert(m.Attachment)
            .values(
                id=attachment_id,
                organization_id=session.organization_id,
                session_id=session_id,
                user_id=ctx.principal.user_id,
                state="active",
                channels=[c.value for c in session.channels],
                token_jti=jti,
                token_expires_at=expires_at,
            )
            .returning(m.Attachment)
        ).one()
        self._audit.record(
            uow,
            ctx.actor,
            EventType.SESSION_ATTACHED,
            target_type="session",
            target_id=str(session_id),
            details={"attachment_id": str(attachment_id), "jti": jti, "takeover": superseded is not None},
        )
        return Attached(_attachment(row), session, token, superseded, direct)

    def detach(
        self, uow: UnitOfWork, ctx: CallContext, session_id: uuid.UUID, attachment_id: uuid.UUID
    ) -> tuple[Attachment, uuid.UUID | None]:
        """End an attachment (its user or an admin); idempotent on an ended one.
        Returns it with the session's worker, to be told."""
        session = SessionRepository(uow.session).get(
            ctx.organization_id, session_id, user_id=None if ctx.principal.is_admin else ctx.principal.user_id
        )
        row = uow.session.scalars(
            select(m.Attachment)
            .where(m.Attachment.id == attachment_id, m.Attachment.session_id == session_id)
            .with_for_update()
        ).one_or_none()
        if row is None or (not ctx.principal.is_admin and row.user_id != ctx.principal.user_id):
            raise NotFound(f"attachment {attachment_id} not found", reason="attachment_not_found")
        if row.state != "active":
            return _attachment(row), session.worker_id
        ended = uow.session.scalars(
            update(m.Attachment)
            .where(m.Attachment.id == attachment_id)
            .values(state="detached", ended_at=datetime.now(UTC))
            .returning(m.Attachment),
            execution_options={"synchronize_session": False},
        ).one()
        self._audit.record(
            uow,
            ctx.actor,
            EventType.SESSION_DETACHED,
            target_type="session",
            target_id=str(session_id),
            details={"attachment_id": str(attachment_id)},
        )
        return _attachment(ended), session.worker_id

    @staticmethod
    def get(uow: UnitOfWork, attachment_id: uuid.UUID) -> Attachment | None:
        row = uow.session.get(m.Attachment, attachment_id)
        return _attachment(row) if row is not None else None


def for_worker(uow: UnitOfWork, worker_id: uuid.UUID, attachment_id: uuid.UUID) -> Attachment | None:
    """An attachment of a session assigned to ``worker_id``; None for any other."""
    row = uow.session.scalars(
        select(m.Attachment)
        .join(m.Session, m.Session.id == m.Attachment.session_id)
        .where(m.Attachment.id == attachment_id, m.Session.worker_id == worker_id)
    ).one_or_none()
    return _attachment(row) if row is not None else None


def of_live_sessions(uow: UnitOfWork, session_ids: list[uuid.UUID]) -> list[Attachment]:
    """Every attachment of these sessions, oldest first (for a reconnected worker)."""
    if not session_ids:
        return []
    rows = uow.session.scalars(
        select(m.Attachment).where(m.Attachment.session_id.in_(session_ids)).order_by(m.Attachment.created_at)
    )
    return [_attachment(r) for r in rows]


def ended_among(uow: UnitOfWork, attachment_ids: list[uuid.UUID]) -> list[Attachment]:
    """Those of ``attachment_ids`` that are no longer active (detached or superseded)."""
    if not attachment_ids:
        return []
    rows = uow.session.scalars(
        select(m.Attachment).where(m.Attachment.id.in_(attachment_ids), m.Attachment.state != "active")
    )
    return [_attachment(r) for r in rows]
