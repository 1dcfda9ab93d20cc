"""SessionService: start, read, list and terminate sessions (the user side)."""

from __future__ import annotations

import uuid
from typing import Any

from rap_common.errors import FailedPrecondition, Unavailable
from rap_control.audit.service import AuditLog
from rap_control.audit.types import EventType
from rap_control.db.engine import UnitOfWork
from rap_control.idempotency import IdempotencyKeys, request_digest
from rap_control.paging import PageRequest, after_id, split_page
from rap_control.policy.channels import session_channels
from rap_control.policy.credentials import credential_paths
from rap_control.policy.guard import CREDENTIALED_PROTOCOLS
from rap_control.principal import CallContext
from rap_control.resources.repository import ResourceRepository
from rap_control.resources.types import Resource
from rap_control.secrets.repository import SecretRepository
from rap_control.sessions.lifecycle import Lifecycle, SessionTiming, reason_code
from rap_control.sessions.repository import SessionRepository
from rap_control.sessions.types import Channel, Session, SessionFilter, SessionState

_MAX_PATHS_SHOWN = 10


class SessionService:
    def __init__(self, audit: AuditLog, timing: SessionTiming, *, production: bool) -> None:
        self._audit = audit
        self._timing = timing
        self._production = production
        self._lifecycle = Lifecycle(audit)

    def start(
        self,
        uow: UnitOfWork,
        ctx: CallContext,
        resource_id: uuid.UUID,
        channels: list[Channel],
        request_id: str = "",
    ) -> Session:
        """Authorize, apply the guard, pick a worker, and write the session, its
        lease and its audit row in this one transaction. The caller notifies the
        worker's replica after the commit.

        With a ``request_id``, a retry of the same request returns the session the
        first call started (see rap_control.idempotency)."""
        key = None
        if request_id:
            digest = request_digest(resource_id, sorted(c.value for c in channels))
            key = IdempotencyKeys(ctx.principal.user_id, "StartSession", request_id, digest)
            first = key.claim(uow)
            if first is not None:
                return SessionRepository(uow.session).get(
                    ctx.organization_id, uuid.UUID(first["session_id"]), user_id=None
                )
        session = self._start(uow, ctx, resource_id, channels)
        if key is not None:
            key.remember(uow, {"session_id": str(session.id)})
        return session

    def _start(
        self, uow: UnitOfWork, ctx: CallContext, resource_id: uuid.UUID, channels: list[Channel]
    ) -> Session:
        resource = ResourceRepository(uow.session).get(ctx.organization_id, resource_id)
        self._guard(uow, resource)
        allowed = session_channels(resource.protocol, resource.metadata, channels)
        worker_id = self._pick_worker(uow, resource)
        repo = SessionRepository(uow.session)
        session = repo.insert(
            uuid.uuid4(), ctx.organization_id, resource.id, ctx.principal.user_id, worker_id, allowed
        )
        lease_id = uuid.uuid4()
        repo.insert_lease(lease_id, session.id, worker_id, self._timing.lease_ttl_seconds)
        self._audit.record(
            uow,
            ctx.actor,
            EventType.SESSION_STARTED,
            target_type="session",
            target_id=str(session.id),
            details={
                "resource_id": str(resource.id),
                "worker_id": str(worker_id),
                "lease_id": str(lease_id),
                "channels": [c.value for c in allowed],
                "secret_ref": resource.secret_ref,
            },
        )
        return session

    def get(self, uow: UnitOfWork, ctx: CallContext, session_id: uuid.UUID) -> Session:
        """A session of the caller (any of the organization's for an admin)."""
        return SessionRepository(uow.session).get(
            ctx.organization_id, session_id, user_id=None if ctx.principal.is_admin else ctx.principal.user_id
        )

    def list(
        self, uow: UnitOfWork, ctx: CallContext, flt: SessionFilter, page: PageRequest
    ) -> tuple[list[Session], dict[str, Any] | None]:
        """The caller's sessions (the organization's for an admin), by id."""
        user = None if ctx.principal.is_admin else ctx.principal.user_id
        rows = SessionRepository(uow.session).page(
            ctx.organization_id, user, flt, after_id(page), page.size + 1
        )
        return split_page(rows, page, lambda s: {"id": str(s.id)})

    def terminate(self, uow: UnitOfWork, ctx: CallContext, session_id: uuid.UUID, reason: str) -> Session:
        """End a live session (its owner or an admin); idempotent on an ended one."""
        session = self.get(uow, ctx, session_id)
        if not session.live:
            return session
        ended = self._lifecycle.end(
            uow,
            session_id,
            SessionState.TERMINATED,
            reason_code(reason, "terminated_by_user"),
            ctx.actor,
        )
        return ended if ended is not None else self.get(uow, ctx, session_id)

    def _guard(self, uow: UnitOfWork, resource: Resource) -> None:
        """DESIGN.md: session start refuses a legacy resource that still holds
        plaintext credentials in production, and a secret_ref with no secret."""
        if self._production:
            paths = list(credential_paths(resource.metadata))
            if paths:
                shown = ", ".join(paths[:_MAX_PATHS_SHOWN])
                raise FailedPrecondition(
                    f"resource {resource.id} still holds credential-like metadata at {shown}; "
                    "move the credentials to PutResourceSecret and remove them from metadata",
                    reason="plaintext_credentials_in_metadata",
                )
            if resource.protocol in CREDENTIALED_PROTOCOLS and not resource.secret_ref:
                raise FailedPrecondition(
                    f"resource {resource.id} has no secret_ref; store its credentials with "
                    "PutResourceSecret first",
                    reason="missing_secret_ref",
                )
        if resource.secret_ref:
            live = SecretRepository(uow.session).live_for_resource(resource.organization_id, resource.id)
            if live is None or live.secret_ref != resource.secret_ref:
                raise FailedPrecondition(
                    f"resource {resource.id} names secret_ref {resource.secret_ref}, which holds no "
                    "secret (deleted or never stored); put one with PutResourceSecret",
                    reason="secret_missing",
                )

    def _pick_worker(self, uow: UnitOfWork, resource: Resource) -> uuid.UUID:
        """The least loaded online worker with capacity that speaks the protocol.

        Candidates are ranked without locks, then the chosen worker's row is
        locked and its load counted again, so two concurrent starts cannot
        both take a worker's last slot.
        """
        repo = SessionRepository(uow.session)
        seen_since = repo.seen_since(repo.now(), self._timing.stale_after_seconds)
        for worker_id, capacity, load in repo.candidate_workers(
            resource.organization_id, resource.protocol.value, seen_since
        ):
            if load >= capacity:
                continue
            locked = repo.lock_worker_load(worker_id)
            if locked is not None and locked[1] < locked[0]:
                chosen: uuid.UUID = worker_id
                return chosen
        if repo.has_quiet_workers(resource.organization_id, resource.protocol.value, seen_since):
            # Not a precondition the caller must fix: the workers are coming back.
            raise Unavailable(
                "this organization's workers are reconnecting; retry in a few seconds",
                reason="workers_reconnecting",
            )
        raise FailedPrecondition(
            f"no online worker of this organization has capacity for {resource.protocol.value} now; "
            "enroll or start a worker, or retry when a session ends",
            reason="no_worker_available",
        )
