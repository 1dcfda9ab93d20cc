"""Values the session services exchange."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from rap_control.resources.types import Protocol


class SessionState(StrEnum):
    """requested -> assigned -> starting -> active -> terminated; failed from any live state.

    requested: committed, not yet delivered to its worker; assigned: the
    Assignment went out on the worker's stream; starting: the worker
    accepted it; active: the worker reached the target.
    """

    REQUESTED = "requested"
    ASSIGNED = "assigned"
    STARTING = "starting"
    ACTIVE = "active"
    TERMINATED = "terminated"
    FAILED = "failed"


LIVE_STATES = (SessionState.REQUESTED, SessionState.ASSIGNED, SessionState.STARTING, SessionState.ACTIVE)


class Channel(StrEnum):
    TERMINAL = "terminal"
    CLIPBOARD = "clipboard"
    FILE_UPLOAD = "file_upload"


@dataclass(frozen=True)
class Session:
    id: uuid.UUID
    organization_id: uuid.UUID
    resource_id: uuid.UUID
    user_id: uuid.UUID
    worker_id: uuid.UUID | None
    state: SessionState
    channels: list[Channel]
    end_reason: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


@dataclass(frozen=True)
class SessionFilter:
    state: SessionState | None = None
    resource_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Assignment:
    """What a worker is told to run: ids, the target, a lease token; never a credential."""

    session: Session
    protocol: Protocol
    address: str
    secret_ref: str
    resource_metadata: dict[str, Any]
    lease_id: uuid.UUID
    # Half of the proof the resolver asks for: kept out of repr (and so of logs).
    lease_token: str = field(repr=False)
    lease_expires_at: datetime
    organization_policy: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerHello:
    version: str
    protocols: list[Protocol]
    capacity: int
    direct_url: str
    session_ids: list[uuid.UUID]
    # Sessions the worker ended and may not have reported: (id, terminated|failed, reason).
    ended: list[tuple[uuid.UUID, SessionState, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Attachment:
    id: uuid.UUID
    organization_id: uuid.UUID
    session_id: uuid.UUID
    user_id: uuid.UUID
    state: str
    channels: list[Channel]
    expires_at: datetime


@dataclass(frozen=True)
class StreamSync:
    """What a (re)connected worker must be told: its live sessions, and which of
    the sessions it reports are over."""

    worker_id: uuid.UUID
    organization_id: uuid.UUID
    assignments: list[Assignment]
    # (session id, how it ended: "terminated", "failed" or "unknown")
    ended: list[tuple[uuid.UUID, str]]
    # Every attachment of its live sessions: a notice lost while it was away is
    # recovered from PostgreSQL.
    attachments: list[Attachment] = field(default_factory=list)


@dataclass(frozen=True)
class Beat:
    """One heartbeat: the worker, and the sessions it says it runs."""

    worker_id: uuid.UUID
    session_ids: list[uuid.UUID]
    # Attachments with a bound client connection on the worker now.
    bound_attachment_ids: list[uuid.UUID] = field(default_factory=list)


@dataclass(frozen=True)
class BeatsResult:
    """What a batch of heartbeats found: revoked workers, sessions they run that are
    over, and sessions still waiting for delivery (their notice was lost)."""

    revoked: set[uuid.UUID]
    # worker id -> (session id, how it ended: "terminated", "failed" or "unknown")
    ended: dict[uuid.UUID, list[tuple[uuid.UUID, str]]]
    undelivered: dict[uuid.UUID, list[uuid.UUID]]
    # worker id -> its bound attachments that are no longer active (a lost notice).
    ended_attachments: dict[uuid.UUID, list[Attachment]] = field(default_factory=dict)


@dataclass(frozen=True)
class EndedSession:
    """A session that ended, for the notice to its worker."""

    session_id: uuid.UUID
    worker_id: uuid.UUID | None
    # How the worker is told it ended: "terminated", or anything else for a failure.
    how: str = "lease_expired"
