"""Values the identity service exchanges."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rap_common.secrets import SecretStr
from rap_control.principal import Role


@dataclass(frozen=True)
class Organization:
    id: uuid.UUID
    name: str
    created_at: datetime
    policy: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    organization_id: uuid.UUID
    email: str
    display_name: str
    role: Role
    disabled: bool
    created_at: datetime


@dataclass(frozen=True)
class ApiTokenInfo:
    """An API token's metadata; the token itself is never stored."""

    id: uuid.UUID
    organization_id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class IssuedToken:
    """A freshly created token: ``token`` is shown to its owner once, then forgotten."""

    info: ApiTokenInfo
    token: SecretStr


@dataclass(frozen=True)
class UserPatch:
    role: Role | None = None
    disabled: bool | None = None
    display_name: str | None = None
