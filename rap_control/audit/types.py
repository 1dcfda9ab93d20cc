"""Audit event types and the values the audit service exchanges."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """Every event the platform records. Rows reference ids, never values."""

    ORGANIZATION_CREATED = "organization_created"
    ORGANIZATION_POLICY_UPDATED = "organization_policy_updated"
    USER_CREATED = "user_created"
    USER_UPDATED = "user_updated"
    API_TOKEN_CREATED = "api_token_created"
    API_TOKEN_REVOKED = "api_token_revoked"
    RESOURCE_CREATED = "resource_created"
    RESOURCE_UPDATED = "resource_updated"
    RESOURCE_DELETED = "resource_deleted"
    RESOURCE_REJECTED_PLAINTEXT_CREDENTIALS = "resource_rejected_plaintext_credentials"
    RESOURCE_REJECTED_MISSING_SECRET_REF = "resource_rejected_missing_secret_ref"
    RESOURCE_SECRET_ROTATED = "resource_secret_rotated"
    RESOURCE_SECRET_ACCESSED = "resource_secret_accessed"
    RESOURCE_SECRET_ACCESS_DENIED = "resource_secret_access_denied"
    RESOURCE_SECRET_DELETED = "resource_secret_deleted"
    SESSION_STARTED = "session_started"
    SESSION_ATTACHED = "session_attached"
    SESSION_DETACHED = "session_detached"
    SESSION_TAKEOVER = "session_takeover"
    SESSION_TERMINATED = "session_terminated"
    SESSION_FAILED = "session_failed"
    DATA_PLANE_BIND_REJECTED = "data_plane_bind_rejected"
    WORKER_ENROLLMENT_TOKEN_CREATED = "worker_enrollment_token_created"
    WORKER_ENROLLED = "worker_enrolled"
    WORKER_CERTIFICATE_RENEWED = "worker_certificate_renewed"
    WORKER_REVOKED = "worker_revoked"
    # A platform certificate refused by a worker-facing RPC (a gateway's at Connect, say).
    PLATFORM_IDENTITY_REFUSED = "platform_identity_refused"
    ENCRYPTION_KEY_ROTATED = "encryption_key_rotated"
    ENCRYPTION_KEY_RETIRED = "encryption_key_retired"
    SECRETS_REWRAPPED = "secrets_rewrapped"
    SIGNING_KEY_ROTATED = "signing_key_rotated"


# Events with no organization (key rotation by an operator, say) chain here.
SYSTEM_CHAIN = "system"


def chain_id_for(organization_id: uuid.UUID | None) -> str:
    """The chain an event of ``organization_id`` belongs to."""
    return str(organization_id) if organization_id is not None else SYSTEM_CHAIN


@dataclass(frozen=True)
class AuditEvent:
    id: uuid.UUID
    chain_id: str
    sequence: int
    organization_id: uuid.UUID | None
    event_type: str
    actor_type: str
    actor_id: str
    target_type: str
    target_id: str
    request_id: str
    details: dict[str, Any]
    created_at: datetime
    previous_hash: bytes
    hash: bytes


@dataclass(frozen=True)
class AuditFilter:
    event_type: str | None = None
    target_id: str | None = None
    actor_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True)
class ChainVerification:
    """The outcome of verifying one or more chains; ``ok`` or the first break."""

    ok: bool
    checked_events: int
    chain_id: str = ""
    first_broken_sequence: int = 0
    first_broken_event_id: str = ""
    problem: str = ""
    chains: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.ok:
            return f"audit chain ok: {self.checked_events} events in {len(self.chains)} chain(s) verified"
        where = f"chain {self.chain_id}, sequence {self.first_broken_sequence}"
        if self.first_broken_event_id:
            where += f", event {self.first_broken_event_id}"
        return (
            f"audit chain BROKEN at {where}: {self.problem} ({self.checked_events} events verified before it)"
        )
