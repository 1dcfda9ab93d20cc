"""SQLAlchemy 2 typed models of every table the design names.

Relationships are not mapped: repositories join explicitly, so that no
attribute access ever issues a hidden query (the habit ``lazy="raise"``
enforces elsewhere). Constraint names follow one convention so that
migrations are stable.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = dict[str, Any]


class Base(DeclarativeBase):
    """Declarative base with the naming convention and common column types."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        uuid.UUID: UUID(as_uuid=True),
        datetime: DateTime(timezone=True),
        Json: JSONB,
        bytes: LargeBinary,
    }


def core(model: type[Base]) -> Table:
    """The Core table of a model, for hot paths that skip the ORM."""
    return cast(Table, model.__table__)


def _now() -> Any:
    return text("now()")


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=_now())
    # Data-plane defaults of its resources (see policy/dataplane.py).
    policy: Mapped[Json] = mapped_column(default=dict, server_default=text("'{}'::jsonb"))


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("organization_id", "email"),
        CheckConstraint("role IN ('admin', 'member')", name="role"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    display_name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(16))
    disabled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(server_default=_now())


class ApiToken(Base):
    """A user's bearer token, stored only as a SHA-256 of its 32 random bytes."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[bytes] = mapped_column(unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(server_default=_now())
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Resource(Base):
    __tablename__ = "resources"
    __table_args__ = (
        # Names are unique among live resources only: a deleted one frees its name.
        Index(
            "uq_resources_organization_id_name_live",
            "organization_id",
            "name",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_resources_organization_id_created_at_id", "organization_id", "created_at", "id"),
        CheckConstraint("protocol IN ('rdp', 'vnc', 'ssh', 'tcp')", name="protocol"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(128))
    protocol: Mapped[str] = mapped_column(String(8))
    address: Mapped[str] = mapped_column(String(300))
    secret_ref: Mapped[str | None] = mapped_column(String(300))
    metadata_: Mapped[Json] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(server_default=_now())
    deleted_at: Mapped[datetime | None]


class ResourceSecret(Base):
    """An envelope-encrypted credential: AES-256-GCM under a per-write data
    key, the data key wrapped by the key-encryption key ``key_id``."""

    __tablename__ = "resource_secrets"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    resource_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("resources.id"), index=True)
    secret_ref: Mapped[str] = mapped_column(String(300), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    rotation_version: Mapped[int] = mapped_column(BigInteger)
    payload_version: Mapped[int] = mapped_column(Integer)
    algorithm: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str] = mapped_column(String(128), index=True)
    wrapped_dek: Mapped[bytes]
    nonce: Mapped[bytes]
    ciphertext: Mapped[bytes]
    safe_metadata: Mapped[Json] = mapped_column(default=dict)
    payload_sha256: Mapped[bytes]
    created_at: Mapped[datetime] = mapped_column(server_default=_now())
    rotated_at: Mapped[datetime] = mapped_column(server_default=_now())
    deleted_at: Mapped[datetime | None]


class EncryptionKey(Base):
    """A key-encryption key known by id; its material lives in the provider."""

    __tablename__ = "encryption_keys"
    __table_args__ = (
        Index("uq_encryption_keys_active", "active", unique=True, postgresql_where=text("active")),
    )

    key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(server_default=_now())
    retired_at: Mapped[datetime | None]


class SigningKey(Base):
    """A data-plane RS256 key; the private half sealed under the KEK."""

    __tablename__ = "signing_keys"
    __table_args__ = (CheckConstraint("state IN ('next', 'active', 'retired')", name="state"),)

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(8))
    key_id: Mapped[str] = mapped_column(String(128))
    sealed_private_key: Mapped[bytes]
    public_jwk: Mapped[Json]
    created_at: Mapped[datetime] = mapped_column(server_default=_now())
    activated_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]
    # A retired key stays in the JWKS until every token it signed has expired.
    publish_until: Mapped[datetime | None]


class PlatformCa(Base):
    """The platform CA that signs worker certificates; its key sealed under the KEK."""

    __tablename__ = "platform_ca"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    key_id: Mapped[str] = mapped_column(String(128))
    sealed_private_key: Mapped[bytes]
    certificate_pem: Mapped[str] = mapped_column(Text)
    not_after: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(server_default=_now())
    retired_at: Mapped[datetime | None]


class Worker(Base):
    __tablename__ = "workers"
    __table_args__ = (
        CheckConstraint("status IN ('online', 'offline', 'revoked')", name="status"),
        CheckConstraint("role IN ('worker', 'gateway')", name="role"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # A platform identity's role: "worker" runs sessions, "gateway" only relays.
    role: Mapped[str] = mapped_column(String(8), default="worker", server_default="worker")
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(8), default="offline")
    protocols: Mapped[list[str]] = mapped_column(ARRAY(String(8)), default=list)
    capacity: Mapped[int] = mapped_column(Integer, default=0)
    direct_url: Mapped[str | None] = mapped_column(String(300))
    direct_host_names: Mapped[list[str]] = mapped_column(ARRAY(String(253)), default=list)
    certificate_serial: Mapped[str | None] = mapped_column(String(64))
    certificate_not_after: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=_now())


class WorkerEnrollmentToken(Base):
    """A one-time worker enrollment token, stored only as a hash."""

    __tablename__ = "worker_enrollment_tokens"
    __table_args__ = (CheckConstraint("role IN ('worker', 'gateway')", name="role"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # The role of the identity this token enrolls.
    role: Mapped[str] = mapped_column(String(8), default="worker", server_default="worker")
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    token_hash: Mapped[bytes] = mapped_column(unique=True)
    worker_name: Mapped[str] = mapped_column(String(128))
    # None when an operator issued it with `rapctl workers token`.
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    worker_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("workers.id"))
    created_at: Mapped[datetime] = mapped_column(server_default=_now())


class Session(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        CheckConstraint(
            "state IN ('requested', 'assigned', 'starting', 'active', 'terminated', 'failed')", name="state"
        ),
        Index("ix_sessions_worker_id_state", "worker_id", "state"),
        Index("ix_sessions_organization_id_created_at_id", "organization_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    resource_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("resources.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    worker_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("workers.id"))
    state: Mapped[str] = mapped_column(String(12))
    channels: Mapped[list[str]] = mapped_column(ARRAY(String(16)), default=list)
    end_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(server_default=_now())
    ended_at: Mapped[datetime | None]


class SessionLease(Base):
    """The worker's right to a session's secret; lapses unless renewed."""

    __tablename__ = "session_leases"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id"), index=True)
    worker_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workers.id"))
    expires_at: Mapped[datetime] = mapped_column(index=True)
    renewed_at: Mapped[datetime] = mapped_column(server_default=_now())
    released_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=_now())


class Attachment(Base):
    __tablename__ = "attachments"
    __table_args__ = (
        CheckConstraint("state IN ('active', 'detached', 'superseded')", name="state"),
        # At most one active attachment per session.
        Index(
            "uq_attachments_session_id_active",
            "session_id",
            unique=True,
            postgresql_where=text("state = 'active'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(12))
    channels: Mapped[list[str]] = mapped_column(ARRAY(String(16)), default=list)
    token_jti: Mapped[str] = mapped_column(String(64), unique=True)
    token_expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(server_default=_now())
    ended_at: Mapped[datetime | None]


class AuditChainHead(Base):
    """The last link of one audit chain (one per organization, plus 'system').

    Appending locks this row only, so writers of different organizations
    never wait on each other.
    """

    __tablename__ = "audit_chain_heads"

    chain_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_sequence: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[bytes]


class AuditEvent(Base):
    """An append-only, hash-chained audit row. References ids, never values."""

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("chain_id", "sequence"),
        Index("ix_audit_events_organization_id_event_type", "organization_id", "event_type"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(BigInteger)
    organization_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("organizations.id"))
    event_type: Mapped[str] = mapped_column(String(64))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(300))
    request_id: Mapped[str] = mapped_column(String(64))
    details: Mapped[Json] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    previous_hash: Mapped[bytes]
    hash: Mapped[bytes]


class IdempotencyKey(Base):
    """A client's request_id for a creating call, and what the first call returned (ids only)."""

    __tablename__ = "idempotency_keys"

    scope_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[bytes]
    # None until the first call's unit of work has a result (a refused call leaves none).
    result: Mapped[Json | None]
    created_at: Mapped[datetime] = mapped_column(server_default=_now(), index=True)
