"""All SQL of organizations, users and API tokens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rap_common.errors import AlreadyExists, NotFound
from rap_control.db import models as m
from rap_control.identity.types import ApiTokenInfo, Organization, User
from rap_control.principal import Role


def _org(row: m.Organization) -> Organization:
    return Organization(id=row.id, name=row.name, created_at=row.created_at, policy=dict(row.policy or {}))


def _user(row: m.User) -> User:
    return User(
        id=row.id,
        organization_id=row.organization_id,
        email=row.email,
        display_name=row.display_name,
        role=Role(row.role),
        disabled=row.disabled_at is not None,
        created_at=row.created_at,
    )


def _token(row: m.ApiToken) -> ApiTokenInfo:
    return ApiTokenInfo(
        id=row.id,
        organization_id=row.organization_id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


class IdentityRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    # Organizations

    def insert_organization(self, name: str) -> Organization:
        org_id = uuid.uuid4()
        try:
            self._s.execute(insert(m.Organization).values(id=org_id, name=name))
        except IntegrityError:
            raise AlreadyExists(f"an organization named {name!r} exists already") from None
        return self.get_organization(org_id)

    def get_organization(self, org_id: uuid.UUID) -> Organization:
        row = self._s.get(m.Organization, org_id)
        if row is None:
            raise NotFound(f"organization {org_id} not found", reason="organization_not_found")
        return _org(row)

    def set_policy(self, org_id: uuid.UUID, policy: dict[str, Any]) -> Organization:
        self._s.execute(update(m.Organization).where(m.Organization.id == org_id).values(policy=policy))
        return self.get_organization(org_id)

    # Users

    def insert_user(self, organization_id: uuid.UUID, email: str, display_name: str, role: Role) -> User:
        user_id = uuid.uuid4()
        try:
            self._s.execute(
                insert(m.User).values(
                    id=user_id,
                    organization_id=organization_id,
                    email=email,
                    display_name=display_name,
                    role=role.value,
                )
            )
        except IntegrityError:
            raise AlreadyExists(f"a user with email {email!r} exists already in this organization") from None
        return self.get_user(organization_id, user_id)

    def get_user(self, organization_id: uuid.UUID, user_id: uuid.UUID, *, lock: bool = False) -> User:
        query = select(m.User).where(m.User.id == user_id, m.User.organization_id == organization_id)
        if lock:
            query = query.with_for_update()
        row = self._s.scalars(query).one_or_none()
        if row is None:
            raise NotFound(f"user {user_id} not found", reason="user_not_found")
        return _user(row)

    def list_users(self, organization_id: uuid.UUID, after: uuid.UUID | None, limit: int) -> list[User]:
        query = select(m.User).where(m.User.organization_id == organization_id)
        if after is not None:
            query = query.where(m.User.id > after)
        return [_user(r) for r in self._s.scalars(query.order_by(m.User.id).limit(limit))]

    def update_user(self, user: User, *, role: Role, disabled: bool, display_name: str) -> User:
        self._s.execute(
            update(m.User)
            .where(m.User.id == user.id)
            .values(
                role=role.value,
                display_name=display_name,
                disabled_at=(func.coalesce(m.User.disabled_at, func.now()) if disabled else None),
                updated_at=func.now(),
            )
        )
        return self.get_user(user.organization_id, user.id)

    def lock_admins(self, organization_id: uuid.UUID) -> None:
        """Lock the organization's admin rows, so that concurrent role changes
        are checked one after the other (see IdentityService.update_user)."""
        self._s.execute(
            select(m.User.id)
            .where(m.User.organization_id == organization_id, m.User.role == Role.ADMIN.value)
            .order_by(m.User.id)
            .with_for_update()
        )

    def count_enabled_admins(self, organization_id: uuid.UUID) -> int:
        return int(
            self._s.scalar(
                select(func.count())
                .select_from(m.User)
                .where(
                    m.User.organization_id == organization_id,
                    m.User.role == Role.ADMIN.value,
                    m.User.disabled_at.is_(None),
                )
            )
            or 0
        )

    # API tokens

    def insert_token(
        self,
        user: User,
        name: str,
        token_hash: bytes,
        prefix: str,
        expires_at: datetime | None,
    ) -> ApiTokenInfo:
        token_id = uuid.uuid4()
        self._s.execute(
            insert(m.ApiToken).values(
                id=token_id,
                organization_id=user.organization_id,
                user_id=user.id,
                name=name,
                token_hash=token_hash,
                prefix=prefix,
                expires_at=expires_at,
            )
        )
        return self.get_token(user.organization_id, token_id)

    def get_token(self, organization_id: uuid.UUID, token_id: uuid.UUID) -> ApiTokenInfo:
        row = self._s.scalars(
            select(m.ApiToken).where(m.ApiToken.id == token_id, m.ApiToken.organization_id == organization_id)
        ).one_or_none()
        if row is None:
            raise NotFound(f"API token {token_id} not found", reason="api_token_not_found")
        return _token(row)

    def list_tokens(
        self, organization_id: uuid.UUID, user_id: uuid.UUID, after: uuid.UUID | None, limit: int
    ) -> list[ApiTokenInfo]:
        query = select(m.ApiToken).where(
            m.ApiToken.organization_id == organization_id, m.ApiToken.user_id == user_id
        )
        if after is not None:
            query = query.where(m.ApiToken.id > after)
        return [_token(r) for r in self._s.scalars(query.order_by(m.ApiToken.id).limit(limit))]

    def revoke_token(self, token: ApiTokenInfo) -> ApiTokenInfo:
        self._s.execute(
            update(m.ApiToken)
            .where(m.ApiToken.id == token.id, m.ApiToken.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        return self.get_token(token.organization_id, token.id)

    def find_token_owner(self, token_hash: bytes) -> tuple[ApiTokenInfo, User] | None:
        """The token with this hash and its user, whatever their state."""
        row = self._s.execute(
            select(m.ApiToken, m.User)
            .join(m.User, m.User.id == m.ApiToken.user_id)
            .where(m.ApiToken.token_hash == token_hash)
        ).one_or_none()
        if row is None:
            return None
        return _token(row[0]), _user(row[1])
