"""Enrollment of platform identities (workers and gateways): one-time tokens, and
certificates from the platform CA; and the identification of a caller by its
client certificate, role included."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from rap_common.errors import InvalidArgument, PermissionDenied, RapError, Unauthenticated
from rap_common.identity import ROLE_WORKER, ROLES, identity_of_certificate
from rap_common.secrets import SecretStr
from rap_control.audit.service import AuditLog
from rap_control.audit.types import EventType
from rap_control.db import models as m
from rap_control.db.engine import UnitOfWork
from rap_control.identity import tokens
from rap_control.paging import PageRequest, after_id, split_page
from rap_control.pki import certificates
from rap_control.pki.authority import CertificateAuthority
from rap_control.principal import Actor, CallContext
from rap_control.workers.repository import WorkerRepository
from rap_control.workers.types import Worker

DEFAULT_TOKEN_TTL = timedelta(hours=1)
MAX_TOKEN_TTL = timedelta(hours=24)
MAX_NAME = 128


@dataclass(frozen=True)
class IssuedEnrollmentToken:
    token: SecretStr
    expires_at: datetime


@dataclass(frozen=True)
class Enrollment:
    worker_id: uuid.UUID
    certificate_pem: str
    ca_bundle_pem: str
    expires_at: datetime
    role: str = ROLE_WORKER


def _role(value: str) -> str:
    if value not in ROLES:
        raise InvalidArgument(f"role must be one of {', '.join(ROLES)}", reason="bad_role")
    return value


def _name(value: str, field: str) -> str:
    if not value or len(value) > MAX_NAME or any(ord(c) < 32 for c in value):
        raise InvalidArgument(f"{field} must be 1-{MAX_NAME} printable characters", reason="bad_name")
    return value


class WorkerEnrollment:
    def __init__(self, audit: AuditLog, ca: CertificateAuthority) -> None:
        self._audit = audit
        self._ca = ca

    def create_token(
        self, uow: UnitOfWork, ctx: CallContext, worker_name: str, ttl_seconds: int, role: str = ROLE_WORKER
    ) -> IssuedEnrollmentToken:
        """A one-time token that enrolls one identity of ``role`` into the caller's
        organization (admins only)."""
        ctx.principal.require_admin("create worker enrollment tokens")
        return self.issue_token(
            uow, ctx.organization_id, worker_name, ttl_seconds, ctx.actor, ctx.principal.user_id, role
        )

    def issue_token(
        self,
        uow: UnitOfWork,
        organization_id: uuid.UUID,
        worker_name: str,
        ttl_seconds: int,
        actor: Actor,
        created_by: uuid.UUID | None,
        role: str = ROLE_WORKER,
    ) -> IssuedEnrollmentToken:
        """A one-time enrollment token of an identity of ``role``, for an admin's call or an
        operator's `rapctl`."""
        role = _role(role)
        ttl = timedelta(seconds=ttl_seconds) if ttl_seconds else DEFAULT_TOKEN_TTL
        if ttl_seconds < 0 or ttl > MAX_TOKEN_TTL:
            raise InvalidArgument(
                "ttl_seconds must be between 1 and 86400 (0 means one hour)", reason="bad_ttl"
            )
        secret, token_hash, prefix = tokens.new_enrollment_token()
        expires_at = datetime.now(UTC) + ttl
        WorkerRepository(uow.session).insert_enrollment_token(
            organization_id, token_hash, _name(worker_name, "worker_name"), created_by, expires_at, role
        )
        self._audit.record(
            uow,
            actor,
            EventType.WORKER_ENROLLMENT_TOKEN_CREATED,
            target_type="worker_enrollment_token",
            target_id=prefix,
            details={"worker_name": worker_name, "ttl_seconds": int(ttl.total_seconds()), "role": role},
            organization_id=organization_id,
        )
        return IssuedEnrollmentToken(secret, expires_at)

    def enroll(
        self, uow: UnitOfWork, raw_token: str, csr_pem: str, name: str, host_names: list[str], request_id: str
    ) -> Enrollment:
        """Consume a one-time token and sign the worker's CSR.

        The CSR and host names are checked before the token is spent, so a
        malformed request does not burn it; a used, expired or unknown token
        is UNAUTHENTICATED, with the reason.
        """
        if not tokens.is_enrollment_token(raw_token):
            raise Unauthenticated(
                "enrollment_token is malformed: expected rap_enr_...", reason="malformed_token"
            )
        csr = certificates.parse_csr(csr_pem)
        certificates.host_names(host_names)
        repo = WorkerRepository(uow.session)
        token_hash = tokens.hash_token(raw_token)
        token = repo.consume_enrollment_token(token_hash)
        if token is None:
            known = repo.enrollment_token(token_hash)
            if known is None:
                raise Unauthenticated("the enrollment token is not known", reason="unknown_token")
            if known.used_at is not None:
                raise Unauthenticated(
                    "the enrollment token was used already; ask for a new one", reason="token_used"
                )
            raise Unauthenticated(
                "the enrollment token has expired; ask for a new one", reason="token_expired"
            )
        ca = self._ca.get(uow)
        worker_id = uuid.uuid4()
        role = token.role
        # A gateway serves no direct endpoint: its certificate names no hosts.
        host_names = host_names if role == ROLE_WORKER else []
        certificate = certificates.issue_worker_certificate(
            ca.key, ca.certificate, csr, worker_id, host_names, datetime.now(UTC), role=role
        )
        worker_name = _name(name, "name") if name else token.worker_name
        repo.insert_worker(
            worker_id,
            token.organization_id,
            worker_name,
            host_names,
            format(certificate.serial_number, "x"),
            certificate.not_valid_after_utc,
            role,
        )
        repo.link_token(token.id, worker_id)
        self._audit.record(
            uow,
            Actor(role, str(worker_id), token.organization_id, request_id),
            EventType.WORKER_ENROLLED,
            target_type=role,
            target_id=str(worker_id),
            details={
                "name": worker_name,
                "role": role,
                "serial": format(certificate.serial_number, "x"),
                "host_names": host_names,
            },
        )
        return Enrollment(
            worker_id=worker_id,
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
            ca_bundle_pem=ca.certificate_pem,
            expires_at=certificate.not_valid_after_utc,
            role=role,
        )

    def list_workers(
        self, uow: UnitOfWork, ctx: CallContext, page: PageRequest
    ) -> tuple[list[Worker], dict[str, Any] | None]:
        """The organization's workers (admins only), by id."""
        ctx.principal.require_admin("list workers")
        rows = WorkerRepository(uow.session).list(ctx.organization_id, after_id(page), page.size + 1)
        return split_page(rows, page, lambda w: {"id": str(w.id)})

    def revoke(self, uow: UnitOfWork, ctx: CallContext, worker_id: uuid.UUID) -> Worker:
        """Revoke a worker (admins only; idempotent). Its certificate is refused from
        now on by every worker-facing check."""
        ctx.principal.require_admin("revoke workers")
        repo = WorkerRepository(uow.session)
        worker = repo.get(ctx.organization_id, worker_id, lock=True)
        if worker.revoked_at is not None:
            return worker
        revoked = repo.revoke(worker)
        self._audit.record(
            uow,
            ctx.actor,
            EventType.WORKER_REVOKED,
            target_type="worker",
            target_id=str(worker_id),
            details={"name": worker.name},
        )
        return revoked

    def renew(
        self, uow: UnitOfWork, peer_certificate_pem: bytes, csr_pem: str, request_id: str
    ) -> Enrollment:
        """A fresh certificate for the identity the (transport-verified) client certificate
        names, of the same role: a gateway renews into a gateway, never a worker.

        Refused for a revoked identity, or a certificate the current CA did not issue.
        """
        csr = certificates.parse_csr(csr_pem)
        worker, presented = self.identify_audited(
            uow, peer_certificate_pem, None, "RenewCertificate", request_id, lock=True
        )
        worker_id = worker.id
        ca = self._ca.get(uow)
        certificate = certificates.issue_worker_certificate(
            ca.key,
            ca.certificate,
            csr,
            worker_id,
            list(worker.direct_host_names),
            datetime.now(UTC),
            role=worker.role,
        )
        serial = format(certificate.serial_number, "x")
        WorkerRepository(uow.session).record_certificate(worker_id, serial, certificate.not_valid_after_utc)
        self._audit.record(
            uow,
            Actor(worker.role, str(worker_id), worker.organization_id, request_id),
            EventType.WORKER_CERTIFICATE_RENEWED,
            target_type=worker.role,
            target_id=str(worker_id),
            details={"serial": serial, "previous_serial": format(presented.serial_number, "x")},
        )
        return Enrollment(
            worker_id=worker_id,
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
            ca_bundle_pem=ca.certificate_pem,
            expires_at=certificate.not_valid_after_utc,
            role=worker.role,
        )

    def identify(
        self,
        uow: UnitOfWork,
        peer_certificate_pem: bytes,
        *,
        role: str | None = ROLE_WORKER,
        lock: bool = False,
    ) -> tuple[m.Worker, x509.Certificate]:
        """The enrolled, unrevoked identity that a (transport-verified) client certificate
        names, which must be of ``role`` (None: any role).

        Refused when the certificate was not issued by the current platform CA
        (UNAUTHENTICATED), names no or an unknown identity, or a role its row
        does not have (UNAUTHENTICATED), is of another role than asked
        (PERMISSION_DENIED, reason ``not_a_worker`` or ``not_a_gateway``), or
        names a revoked identity (PERMISSION_DENIED, reason ``worker_revoked``).
        """
        ca = self._ca.get(uow)
        try:
            presented = x509.load_pem_x509_certificate(peer_certificate_pem)
            presented.verify_directly_issued_by(ca.certificate)
        except (ValueError, TypeError, InvalidSignature):
            raise Unauthenticated(
                "the client certificate was not issued by the platform CA", reason="bad_client_certificate"
            ) from None
        named = identity_of_certificate(presented)
        if named is None:
            raise Unauthenticated(
                "the client certificate names no platform identity", reason="bad_client_certificate"
            )
        certificate_role, identity_id = named
        worker = WorkerRepository(uow.session).get_any(identity_id, lock=lock)
        if worker is None:
            raise Unauthenticated("the client certificate names an unknown identity", reason="unknown_worker")
        if worker.role != certificate_role:
            raise Unauthenticated(
                "the client certificate's role is not its identity's", reason="bad_client_certificate"
            )
        if role is not None and certificate_role != role:
            raise PermissionDenied(
                f"this certificate belongs to a {certificate_role}; only a {role} may do this",
                reason=f"not_a_{role}",
            )
        if worker.revoked_at is not None:
            raise PermissionDenied(f"this {worker.role} was revoked", reason="worker_revoked")
        return worker, presented

    def identify_audited(
        self,
        uow: UnitOfWork,
        peer_certificate_pem: bytes,
        role: str | None,
        method: str,
        request_id: str,
        *,
        lock: bool = False,
    ) -> tuple[m.Worker, x509.Certificate]:
        """:meth:`identify`, with a refusal audited (``platform_identity_refused``) and
        committed before it is raised."""
        try:
            return self.identify(uow, peer_certificate_pem, role=role, lock=lock)
        except RapError as refusal:
            self.record_refusal(uow, peer_certificate_pem, method, refusal.reason, request_id)
            uow.commit_and_raise(refusal)

    def record_refusal(
        self, uow: UnitOfWork, peer_certificate_pem: bytes, method: str, reason: str, request_id: str
    ) -> None:
        """Audit a worker-facing call refused for its certificate: who it claimed to be."""
        named = None
        with contextlib.suppress(ValueError):
            named = identity_of_certificate(x509.load_pem_x509_certificate(peer_certificate_pem))
        row = WorkerRepository(uow.session).get_any(named[1]) if named is not None else None
        self._audit.record(
            uow,
            Actor(named[0] if named else "unidentified", str(named[1]) if named else "-", None, request_id),
            EventType.PLATFORM_IDENTITY_REFUSED,
            target_type="method",
            target_id=method,
            details={
                "reason": reason,
                "role": named[0] if named else "",
                "identity_id": str(named[1]) if named else "",
            },
            organization_id=row.organization_id if row is not None else None,
        )
