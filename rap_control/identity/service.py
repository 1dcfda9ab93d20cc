"""Rules of organizations, users and API tokens, and token authentication."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from rap_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from rap_control.audit.service import AuditLog
from rap_control.audit.types import EventType
from rap_control.db.engine import UnitOfWork
from rap_control.identity import tokens
from rap_control.identity.repository import IdentityRepository
from rap_control.identity.types import ApiTokenInfo, IssuedToken, Organization, User, UserPatch
from rap_control.paging import PageRequest, after_id, split_page
from rap_control.policy.dataplane import check_policy
from rap_control.principal import Actor, CallContext, Principal, Role

_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")
MAX_NAME = 128


def _check_text(value: str, field: str, *, required: bool) -> str:
    if required and not value:
        raise InvalidArgument(f"{field} is required", reason="missing_field")
    if len(value) > MAX_NAME:
        raise InvalidArgument(f"{field} is longer than {MAX_NAME} characters", reason="too_long")
    if any(ord(c) < 32 for c in value):
        raise InvalidArgument(f"{field} may not hold control characters", reason="bad_text")
    return value


def _check_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.fullmatch(email):
        raise InvalidArgument(
            "email must look like name@example.org (at most 254 characters)", reason="bad_email"
        )
    return email


class IdentityService:
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    # Bootstrap (rapctl, straight in the database)

    def bootstrap(
        self, uow: UnitOfWork, organization_name: str, admin_email: str
    ) -> tuple[Organization, User, IssuedToken]:
        """Create an organization, its first admin and that admin's first token."""
        repo = IdentityRepository(uow.session)
        org = repo.insert_organization(_check_text(organization_name, "organization name", required=True))
        admin = repo.insert_user(org.id, _check_email(admin_email), "", Role.ADMIN)
        system = Actor.system()
        self._audit.record(
            uow,
            system,
            EventType.ORGANIZATION_CREATED,
            target_type="organization",
            target_id=str(org.id),
            details={"name": org.name},
            organization_id=org.id,
        )
        self._audit.record(
            uow,
            system,
            EventType.USER_CREATED,
            target_type="user",
            target_id=str(admin.id),
            details={"role": admin.role.value},
            organization_id=org.id,
        )
        issued = self._issue(uow, system, admin, "bootstrap", None)
        return org, admin, issued

    # Authentication

    def authenticate(self, uow: UnitOfWork, raw_token: str) -> Principal:
        """The principal a bearer token stands for; UNAUTHENTICATED with a reason otherwise."""
        if not tokens.is_well_formed(raw_token):
            raise Unauthenticated(
                "the bearer token is malformed: expected 'authorization: Bearer rap_api_...'",
                reason="malformed_token",
            )
        found = IdentityRepository(uow.session).find_token_owner(tokens.hash_token(raw_token))
        if found is None:
            raise Unauthenticated("the bearer token is not known", reason="unknown_token")
        info, user = found
        if info.revoked_at is not None:
            raise Unauthenticated("the bearer token was revoked", reason="revoked_token")
        if info.expires_at is not None and info.expires_at <= datetime.now(UTC):
            raise Unauthenticated("the bearer token has expired", reason="expired_token")
        if user.disabled:
            raise Unauthenticated("the token's user is disabled", reason="user_disabled")
        return Principal(
            user_id=user.id, organization_id=user.organization_id, role=user.role, token_id=info.id
        )

    # Organizations

    def get_organization(self, uow: UnitOfWork, ctx: CallContext, org_id: uuid.UUID | None) -> Organization:
        """The caller's organization; any other id answers NOT_FOUND."""
        if org_id is not None and org_id != ctx.organization_id:
            raise NotFound(f"organization {org_id} not found", reason="organization_not_found")
        return IdentityRepository(uow.session).get_organization(ctx.organization_id)

    def update_policy(self, uow: UnitOfWork, ctx: CallContext, policy: dict[str, Any]) -> Organization:
        """Replace the organization's data-plane defaults (admins only)."""
        ctx.principal.require_admin("change the organization's policy")
        checked = check_policy(policy)
        org = IdentityRepository(uow.session).set_policy(ctx.organization_id, checked)
        self._audit.record(
            uow,
            ctx.actor,
            EventType.ORGANIZATION_POLICY_UPDATED,
            target_type="organization",
            target_id=str(ctx.organization_id),
            details={"policy": checked},
        )
        return org

    # Users

    def create_user(
        self, uow: UnitOfWork, ctx: CallContext, email: str, display_name: str, role: Role
    ) -> User:
        ctx.principal.require_admin("create users")
        user = IdentityRepository(uow.session).insert_user(
            ctx.organization_id,
            _check_email(email),
            _check_text(display_name, "display_name", required=False),
            role,
        )
        self._audit.record(
            uow,
            ctx.actor,
            EventType.USER_CREATED,
            target_type="user",
            target_id=str(user.id),
            details={"role": role.value},
        )
        return user

    def get_user(self, uow: UnitOfWork, ctx: CallContext, user_id: uuid.UUID) -> User:
        if user_id != ctx.principal.user_id:
            ctx.principal.require_admin("read other users")
        return IdentityRepository(uow.session).get_user(ctx.organization_id, user_id)

    def list_users(
        self, uow: UnitOfWork, ctx: CallContext, page: PageRequest
    ) -> tuple[list[User], dict[str, Any] | None]:
        ctx.principal.require_admin("list users")
        rows = IdentityRepository(uow.session).list_users(ctx.organization_id, after_id(page), page.size + 1)
        return split_page(rows, page, lambda u: {"id": str(u.id)})

    def update_user(self, uow: UnitOfWork, ctx: CallContext, user_id: uuid.UUID, patch: UserPatch) -> User:
        """Change a user's role, name or disabled flag (admins only).

        Refuses a change that would leave the organization with no enabled admin.
        """
        ctx.principal.require_admin("update users")
        repo = IdentityRepository(uow.session)
        # Two admins demoting each other at once must not both pass the check below.
        repo.lock_admins(ctx.organization_id)
        user = repo.get_user(ctx.organization_id, user_id, lock=True)
        role = patch.role or user.role
        disabled = user.disabled if patch.disabled is None else patch.disabled
        name = (
            user.display_name
            if patch.display_name is None
            else _check_text(patch.display_name, "display_name", required=False)
        )
        updated = repo.update_user(user, role=role, disabled=disabled, display_name=name)
        if repo.count_enabled_admins(ctx.organization_id) == 0:
            raise FailedPrecondition(
                "this change would leave the organization without an enabled admin", reason="last_admin"
            )
        self._audit.record(
            uow,
            ctx.actor,
            EventType.USER_UPDATED,
            target_type="user",
            target_id=str(user.id),
            details={"role": role.value, "disabled": disabled},
        )
        return updated

    # API tokens

    def create_token(
        self,
        uow: UnitOfWork,
        ctx: CallContext,
        user_id: uuid.UUID | None,
        name: str,
        expires_at: datetime | None,
    ) -> IssuedToken:
        """A new token for the caller, or (admins only) for another user of the organization."""
        target_id = user_id or ctx.principal.user_id
        if target_id != ctx.principal.user_id:
            ctx.principal.require_admin("create tokens for other users")
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise InvalidArgument("expire_time must be in the future", reason="bad_expire_time")
        user = IdentityRepository(uow.session).get_user(ctx.organization_id, target_id)
        if user.disabled:
            raise FailedPrecondition("the user is disabled", reason="user_disabled")
        return self._issue(uow, ctx.actor, user, _check_text(name, "name", required=False), expires_at)

    def list_tokens(
        self, uow: UnitOfWork, ctx: CallContext, user_id: uuid.UUID | None, page: PageRequest
    ) -> tuple[list[ApiTokenInfo], dict[str, Any] | None]:
        target_id = user_id or ctx.principal.user_id
        if target_id != ctx.principal.user_id:
            ctx.principal.require_admin("list other users' tokens")
        repo = IdentityRepository(uow.session)
        repo.get_user(ctx.organization_id, target_id)  # NOT_FOUND for another organization's user
        rows = repo.list_tokens(ctx.organization_id, target_id, after_id(page), page.size + 1)
        return split_page(rows, page, lambda t: {"id": str(t.id)})

    def revoke_token(self, uow: UnitOfWork, ctx: CallContext, token_id: uuid.UUID) -> ApiTokenInfo:
        """Revoke a token of one's own, or (admins only) any token of the organization."""
        repo = IdentityRepository(uow.session)
        token = repo.get_token(ctx.organization_id, token_id)
        if token.user_id != ctx.principal.user_id and not ctx.principal.is_admin:
            raise PermissionDenied(
                "only an organization admin may revoke other users' tokens", reason="admin_required"
            )
        revoked = repo.revoke_token(token)
        self._audit.record(
            uow,
            ctx.actor,
            EventType.API_TOKEN_REVOKED,
            target_type="api_token",
            target_id=str(token.id),
            details={"user_id": str(token.user_id)},
        )
        return revoked

    def _issue(
        self, uow: UnitOfWork, actor: Actor, user: User, name: str, expires_at: datetime | None
    ) -> IssuedToken:
        secret, token_hash, prefix = tokens.new_api_token()
        info = IdentityRepository(uow.session).insert_token(user, name, token_hash, prefix, expires_at)
        self._audit.record(
            uow,
            actor,
            EventType.API_TOKEN_CREATED,
            target_type="api_token",
            target_id=str(info.id),
            details={"user_id": str(user.id), "prefix": prefix, "expires": expires_at is not None},
            organization_id=user.organization_id,
        )
        return IssuedToken(info=info, token=secret)
