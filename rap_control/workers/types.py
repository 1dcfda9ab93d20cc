"""Values the worker service exchanges."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Worker:
    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    status: str
    protocols: list[str]
    capacity: int
    direct_url: str | None
    certificate_not_after: datetime | None
    last_seen_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    # "worker" or "gateway" (rap_common.identity.ROLES).
    role: str = "worker"
