"""The worker side of sessions: what a Connect stream's messages do.

Each method is the database work of one stream message, run as its own
unit of work: a long-lived stream never holds a database session.
"""

from __future__ import annotations

import logging
import uuid

from rap_common.errors import NotFound
from rap_common.identity import ROLE_WORKER
from rap_control.audit.service import AuditLog
from rap_control.audit.types import EventType
from rap_control.db.engine import UnitOfWork
from rap_control.identity.repository import IdentityRepository
from rap_control.principal import Actor
from rap_control.resources.repository import ResourceRepository
from rap_control.sessions.attachments import ended_among, of_live_sessions
from rap_control.sessions.leases import LeaseClaims, LeaseTokens
from rap_control.sessions.lifecycle import Lifecycle, SessionTiming, reason_code
from rap_control.sessions.repository import SessionRepository
from rap_control.sessions.types import (
    Assignment,
    Attachment,
    Beat,
    BeatsResult,
    Session,
    SessionState,
    StreamSync,
    WorkerHello,
)
from rap_control.workers.repository import WorkerRepository
from rap_control.workers.service import WorkerEnrollment

log = logging.getLogger(__name__)

MAX_CAPACITY = 10_000
# A session still requested this long after its start lost its notice: deliver it.
UNDELIVERED_AFTER_SECONDS = 2
_STARTABLE = (SessionState.REQUESTED, SessionState.ASSIGNED)


class WorkerSessions:
    def __init__(
        self, audit: AuditLog, enrollment: WorkerEnrollment, leases: LeaseTokens, timing: SessionTiming
    ) -> None:
        self._audit = audit
        self._enrollment = enrollment
        self._leases = leases
        self._timing = timing
        self._lifecycle = Lifecycle(audit)

    def hello(
        self, uow: UnitOfWork, peer_certificate_pem: bytes, hello: WorkerHello, request_id: str = ""
    ) -> StreamSync:
        """A worker (re)connected: mark it online and re-sync it from PostgreSQL.

        Every live session of the worker is sent again (with a fresh lease
        token); sessions it reports that are no longer live are to be ended.
        """
        # Workers only: a gateway's (or any other role's) certificate is refused, audited.
        worker, _ = self._enrollment.identify_audited(
            uow, peer_certificate_pem, ROLE_WORKER, "Connect", request_id
        )
        # What the worker ended while its reports could not be recorded, first: a session
        # it ended must not be re-sent to it below.
        for session_id, state, reason in hello.ended:
            self.update_state(uow, worker.id, worker.organization_id, session_id, state, reason, request_id)
        capacity = max(0, min(hello.capacity, MAX_CAPACITY))
        WorkerRepository(uow.session).record_hello(
            worker.id, [p.value for p in hello.protocols], capacity, hello.direct_url or None
        )
        repo = SessionRepository(uow.session)
        live = repo.live_for_worker(worker.id)
        assignments = []
        for session in live:
            if session.state is SessionState.REQUESTED:
                session = (
                    repo.transition(session.id, [SessionState.REQUESTED], SessionState.ASSIGNED) or session
                )
            assignment = self._assignment(uow, session)
            if assignment is not None:
                assignments.append(assignment)
        live_ids = {s.id for s in live}
        over = [sid for sid in hello.session_ids if sid not in live_ids]
        ended = list(repo.end_states(over).items())
        attachments = of_live_sessions(uow, [s.id for s in live])
        return StreamSync(worker.id, worker.organization_id, assignments, ended, attachments)

    def heartbeats(self, uow: UnitOfWork, beats: list[Beat], *, after_outage: bool = False) -> BeatsResult:
        """A batch of heartbeats, in a few statements whatever its size: mark the
        workers seen, renew the leases of the sessions they run, and say which of
        those are over and which sessions still wait for delivery."""
        workers = list({b.worker_id for b in beats})
        alive = WorkerRepository(uow.session).touch_many(workers)
        repo = SessionRepository(uow.session)
        pairs = [(b.worker_id, s) for b in beats if b.worker_id in alive for s in b.session_ids]
        repo.renew_leases_of(pairs, self._timing.lease_ttl_seconds, revive_lapsed=after_outage)
        live = repo.live_pairs([s for _, s in pairs])
        over = [pair for pair in pairs if pair not in live]
        states = repo.end_states([session_id for _, session_id in over])
        ended: dict[uuid.UUID, list[tuple[uuid.UUID, str]]] = {}
        for worker_id, session_id in over:
            ended.setdefault(worker_id, []).append((session_id, states[session_id]))
        undelivered: dict[uuid.UUID, list[uuid.UUID]] = {}
        for worker_id, session_id in repo.undelivered_of(list(alive), UNDELIVERED_AFTER_SECONDS):
            undelivered.setdefault(worker_id, []).append(session_id)
        # Bound attachments that were detached or superseded: their notice was lost.
        owner = {a: b.worker_id for b in beats if b.worker_id in alive for a in b.bound_attachment_ids}
        stale: dict[uuid.UUID, list[Attachment]] = {}
        for attachment in ended_among(uow, list(owner)):
            stale.setdefault(owner[attachment.id], []).append(attachment)
        return BeatsResult(set(workers) - alive, ended, undelivered, stale)

    def deliver(self, uow: UnitOfWork, worker_id: uuid.UUID, session_id: uuid.UUID) -> Assignment | None:
        """Mark a requested session assigned and build its Assignment; None when it
        was delivered already (by a heartbeat or another notice) or has ended."""
        repo = SessionRepository(uow.session)
        session = repo.transition(
            session_id, [SessionState.REQUESTED], SessionState.ASSIGNED, worker_id=worker_id
        )
        if session is None:
            return None
        # The lease's clock starts when the worker is told, not when the session was
        # written: a delivery slowed by load must not eat the worker's first heartbeats.
        repo.restart_lease(session_id, self._timing.lease_ttl_seconds)
        return self._assignment(uow, session)

    def acknowledge(
        self,
        uow: UnitOfWork,
        worker_id: uuid.UUID,
        organization_id: uuid.UUID,
        session_id: uuid.UUID,
        accepted: bool,
        reason: str,
        request_id: str,
    ) -> None:
        """AssignmentAck: the worker starts the session, or refuses it (the session fails)."""
        repo = SessionRepository(uow.session)
        if accepted:
            if repo.transition(session_id, _STARTABLE, SessionState.STARTING, worker_id=worker_id) is None:
                log.info("ignored an ack of session %s: not startable on worker %s", session_id, worker_id)
            return
        self._lifecycle.end(
            uow,
            session_id,
            SessionState.FAILED,
            reason_code(reason, "refused_by_worker"),
            Actor.worker(worker_id, organization_id, request_id),
            worker_id=worker_id,
        )

    def update_state(
        self,
        uow: UnitOfWork,
        worker_id: uuid.UUID,
        organization_id: uuid.UUID,
        session_id: uuid.UUID,
        state: SessionState,
        reason: str,
        request_id: str,
    ) -> Session | None:
        """SessionStateUpdate: active, terminated or failed, on the worker's own sessions only."""
        actor = Actor.worker(worker_id, organization_id, request_id)
        if state is SessionState.ACTIVE:
            return SessionRepository(uow.session).transition(
                session_id,
                (SessionState.ASSIGNED, SessionState.STARTING),
                SessionState.ACTIVE,
                worker_id=worker_id,
            )
        if state in (SessionState.TERMINATED, SessionState.FAILED):
            default = "ended_by_worker" if state is SessionState.TERMINATED else "failed_on_worker"
            return self._lifecycle.end(
                uow, session_id, state, reason_code(reason, default), actor, worker_id=worker_id
            )
        log.info("ignored a state update to %s for session %s", state.value, session_id)
        return None

    def bind_rejected(
        self,
        uow: UnitOfWork,
        worker_id: uuid.UUID,
        organization_id: uuid.UUID,
        session_id: str,
        attachment_id: str,
        jti: str,
        user_id: str,
        reason: str,
        request_id: str,
        source_address: str = "",
        count: int = 1,
    ) -> None:
        """A data-plane bind the worker refused: audited as data_plane_bind_rejected (one row
        standing for ``count`` refusals of anonymous garbage from one source)."""
        details: dict[str, object] = {
            "reason": reason_code(reason, "unspecified"),
            "attachment_id": attachment_id[:64],
            "jti": jti[:64],
            "user_id": user_id[:64],
            "source_address": source_address[:64],
        }
        if count > 1:
            details["count"] = min(count, 2**31 - 1)
        self._audit.record(
            uow,
            Actor.worker(worker_id, organization_id, request_id),
            EventType.DATA_PLANE_BIND_REJECTED,
            target_type="session",
            target_id=session_id[:64] or "-",
            details=details,
        )

    def disconnected(self, uow: UnitOfWork, worker_id: uuid.UUID) -> None:
        WorkerRepository(uow.session).mark_offline(worker_id)

    def _assignment(self, uow: UnitOfWork, session: Session) -> Assignment | None:
        repo = SessionRepository(uow.session)
        lease = repo.lease_of(session.id)
        if lease is None or session.worker_id is None:
            return None
        try:
            resource = ResourceRepository(uow.session).get(session.organization_id, session.resource_id)
        except NotFound:
            self._lifecycle.end(
                uow,
                session.id,
                SessionState.FAILED,
                "resource_deleted",
                Actor.worker(session.worker_id, session.organization_id, ""),
            )
            return None
        secret_ref = resource.secret_ref or ""
        token, _exp = self._leases.issue(
            uow,
            LeaseClaims(
                worker_id=session.worker_id,
                session_id=session.id,
                organization_id=session.organization_id,
                resource_id=resource.id,
                lease_id=lease.id,
                secret_ref=secret_ref,
            ),
        )
        return Assignment(
            session=session,
            protocol=resource.protocol,
            address=resource.address,
            secret_ref=secret_ref,
            resource_metadata=resource.metadata,
            lease_id=lease.id,
            lease_token=token,
            lease_expires_at=lease.expires_at,
            organization_policy=IdentityRepository(uow.session)
            .get_organization(session.organization_id)
            .policy,
        )
