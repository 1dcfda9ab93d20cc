"""SecretResolver: the one way a credential leaves the control plane.

A credential goes to a worker only when its mTLS identity, the request,
the session, the lease row and the lease token all agree, the session is
live and the secret_ref is the resource's. The success and every refusal
are audited in the same transaction as the read: no audit row, no secret.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import select

from rap_common.errors import FailedPrecondition, NotFound, PermissionDenied, RapError, Unauthenticated
from rap_control.audit.service import AuditLog
from rap_control.audit.types import EventType
from rap_control.db import models as m
from rap_control.db.engine import UnitOfWork
from rap_control.principal import Actor
from rap_control.resources.repository import ResourceRepository
from rap_control.secrets.service import SecretStore
from rap_control.secrets.types import Credential
from rap_control.sessions.leases import LeaseTokens
from rap_control.sessions.repository import SessionRepository
from rap_control.sessions.types import Session, SessionState
from rap_control.workers.service import WorkerEnrollment

_MAX_ECHO = 120


@dataclass(frozen=True)
class ResolveRequest:
    organization_id: str
    resource_id: str
    worker_id: str
    session_id: str
    secret_ref: str
    lease_token: str = field(repr=False)


@dataclass(frozen=True)
class Resolved:
    credential: Credential
    rotation_version: int


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _deny(reason: str, message: str, kind: type[RapError] = PermissionDenied) -> RapError:
    return kind(message, reason=reason)


class SecretResolution:
    def __init__(
        self, audit: AuditLog, enrollment: WorkerEnrollment, leases: LeaseTokens, store: SecretStore
    ) -> None:
        self._audit = audit
        self._enrollment = enrollment
        self._leases = leases
        self._store = store

    def resolve(
        self, uow: UnitOfWork, peer_certificate_pem: bytes | None, request: ResolveRequest, request_id: str
    ) -> Resolved:
        """The session's credential, or a refusal that is audited and committed."""
        worker_id: uuid.UUID | None = None
        session: Session | None = None
        try:
            if peer_certificate_pem is None:
                raise _deny(
                    "client_certificate_required",
                    "ResolveSecret needs the worker's platform-CA client certificate (the worker port, mTLS)",
                    Unauthenticated,
                )
            worker, _ = self._enrollment.identify(uow, peer_certificate_pem, lock=False)
            worker_id = worker.id
            session = self._session(uow, worker_id, request)
            self._check(uow, worker_id, session, request)
            resolved = self._reveal(uow, session, request)
        except RapError as refusal:
            self._record_denial(uow, request, refusal.reason, worker_id, session, request_id)
            uow.commit_and_raise(refusal)
        assert worker_id is not None and session is not None
        self._audit.record(
            uow,
            Actor.worker(worker_id, session.organization_id, request_id),
            EventType.RESOURCE_SECRET_ACCESSED,
            target_type="resource_secret",
            target_id=request.secret_ref,
            details={
                "session_id": str(session.id),
                "resource_id": str(session.resource_id),
                "worker_id": str(worker_id),
                "rotation_version": resolved.rotation_version,
            },
        )
        return resolved

    @staticmethod
    def _session(uow: UnitOfWork, worker_id: uuid.UUID, request: ResolveRequest) -> Session:
        if _uuid(request.worker_id) != worker_id:
            raise _deny("worker_mismatch", "worker_id is not the worker of the client certificate")
        session_id = _uuid(request.session_id)
        session = SessionRepository(uow.session).get_any(session_id, lock=True) if session_id else None
        if session is None:
            raise _deny("session_not_found", "no such session", NotFound)
        return session

    def _check(
        self, uow: UnitOfWork, worker_id: uuid.UUID, session: Session, request: ResolveRequest
    ) -> None:
        if session.worker_id != worker_id:
            raise _deny("wrong_worker", "the session is not assigned to this worker")
        if _uuid(request.organization_id) != session.organization_id:
            raise _deny("organization_mismatch", "organization_id is not the session's organization")
        if _uuid(request.resource_id) != session.resource_id:
            raise _deny("resource_mismatch", "resource_id is not the session's resource")
        if session.state is SessionState.TERMINATED:
            raise _deny("session_terminated", "the session has been terminated", FailedPrecondition)
        if session.state is SessionState.FAILED:
            raise _deny("session_failed", "the session has failed", FailedPrecondition)
        claims = self._leases.verify(uow, request.lease_token)
        if (claims.session_id, claims.worker_id) != (session.id, worker_id):
            raise _deny("lease_session_mismatch", "the lease token is for another session or worker")
        if (claims.organization_id, claims.resource_id) != (session.organization_id, session.resource_id):
            raise _deny("lease_session_mismatch", "the lease token names another organization or resource")
        lease = SessionRepository(uow.session).lease_of(session.id)
        if lease is None or lease.id != claims.lease_id:
            raise _deny("lease_released", "the session's lease is over", FailedPrecondition)
        if lease.expires_at <= SessionRepository(uow.session).now():
            raise _deny("lease_expired", "the session's lease has lapsed", FailedPrecondition)
        resource = ResourceRepository(uow.session).get(session.organization_id, session.resource_id)
        if not resource.secret_ref or request.secret_ref != resource.secret_ref:
            raise _deny("secret_ref_mismatch", "secret_ref is not the resource's secret_ref")
        if claims.secret_ref != resource.secret_ref:
            raise _deny("secret_ref_mismatch", "the lease token names another secret_ref")

    def _reveal(self, uow: UnitOfWork, session: Session, request: ResolveRequest) -> Resolved:
        try:
            credential, version = self._store.reveal_versioned(
                uow, session.organization_id, session.resource_id, request.secret_ref
            )
        except NotFound:
            raise _deny("secret_missing", "the resource's secret was deleted", FailedPrecondition) from None
        return Resolved(credential, version)

    def _record_denial(
        self,
        uow: UnitOfWork,
        request: ResolveRequest,
        reason: str,
        worker_id: uuid.UUID | None,
        session: Session | None,
        request_id: str,
    ) -> None:
        org = (
            session.organization_id if session is not None else self._known_org(uow, request.organization_id)
        )
        self._audit.record(
            uow,
            Actor("worker", str(worker_id) if worker_id else "unidentified", org, request_id),
            EventType.RESOURCE_SECRET_ACCESS_DENIED,
            target_type="resource_secret",
            target_id=request.secret_ref[:_MAX_ECHO] or "-",
            details={
                "reason": reason,
                "session_id": request.session_id[:_MAX_ECHO],
                "resource_id": request.resource_id[:_MAX_ECHO],
                "claimed_worker_id": request.worker_id[:_MAX_ECHO],
                "claimed_organization_id": request.organization_id[:_MAX_ECHO],
            },
            organization_id=org,
        )

    @staticmethod
    def _known_org(uow: UnitOfWork, claimed: str) -> uuid.UUID | None:
        """The claimed organization if it exists (its chain gets the row), else None
        (the system chain does)."""
        org = _uuid(claimed)
        if org is None:
            return None
        found = uow.session.scalar(select(m.Organization.id).where(m.Organization.id == org))
        return found
