"""Who is calling, and the rules every service applies to them.

Every call is scoped to the caller's organization; admins manage,
members start and attach sessions. An object of another organization is
reported as NOT_FOUND by the repositories, never as PERMISSION_DENIED.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from rap_common.errors import PermissionDenied


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


@dataclass(frozen=True)
class Principal:
    """An authenticated user, as established from an API token."""

    user_id: uuid.UUID
    organization_id: uuid.UUID
    role: Role
    token_id: uuid.UUID

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def require_admin(self, action: str) -> None:
        """Raise PERMISSION_DENIED unless the caller is an admin."""
        if not self.is_admin:
            raise PermissionDenied(f"only an organization admin may {action}", reason="admin_required")


def require_operator(principal: Principal, operator_organization_id: uuid.UUID | None) -> None:
    """Platform-wide operations (encryption keys) need an admin of the operator organization."""
    if operator_organization_id is None or principal.organization_id != operator_organization_id:
        raise PermissionDenied(
            "managing the platform's encryption keys needs an admin of the operator organization "
            "(RAP_OPERATOR_ORGANIZATION_ID); operators can use `rapctl keys` instead",
            reason="operator_required",
        )
    principal.require_admin("manage encryption keys")


@dataclass(frozen=True)
class Actor:
    """Who did something, for the audit log: a user, a worker or the system."""

    type: str
    id: str
    organization_id: uuid.UUID | None
    request_id: str

    @classmethod
    def user(cls, principal: Principal, request_id: str) -> Actor:
        return cls("user", str(principal.user_id), principal.organization_id, request_id)

    @classmethod
    def worker(cls, worker_id: uuid.UUID, organization_id: uuid.UUID, request_id: str) -> Actor:
        return cls("worker", str(worker_id), organization_id, request_id)

    @classmethod
    def system(cls, request_id: str = "") -> Actor:
        return cls("system", "rapctl", None, request_id)


@dataclass(frozen=True)
class CallContext:
    """What a service needs to know about the call it serves."""

    principal: Principal
    request_id: str

    @property
    def actor(self) -> Actor:
        return Actor.user(self.principal, self.request_id)

    @property
    def organization_id(self) -> uuid.UUID:
        return self.principal.organization_id
