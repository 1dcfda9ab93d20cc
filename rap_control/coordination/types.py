"""The coordination interface and its messages.

A message says that something happened to a worker's sessions, by id;
the replica that holds the worker's stream reads the rest from PostgreSQL.
No message can carry anything else: the type has no free-form field, and
parsing refuses anything but its known keys.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from rap_common.errors import InternalError, Unavailable

log = logging.getLogger(__name__)


class EventKind(StrEnum):
    SESSION_ASSIGNED = "session_assigned"
    SESSION_TERMINATED = "session_terminated"
    ATTACHMENT_UPDATED = "attachment_updated"
    SIGNING_KEYS_UPDATED = "signing_keys_updated"
    WORKER_REVOKED = "worker_revoked"


@dataclass(frozen=True)
class WorkerEvent:
    kind: EventKind
    worker_id: uuid.UUID
    session_id: uuid.UUID | None = None
    attachment_id: uuid.UUID | None = None

    def encode(self) -> str:
        return json.dumps(
            {
                "k": self.kind.value,
                "w": str(self.worker_id),
                "s": str(self.session_id) if self.session_id else None,
                "a": str(self.attachment_id) if self.attachment_id else None,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str | bytes) -> WorkerEvent:
        try:
            fields = json.loads(text)
            if set(fields) != {"k", "w", "s", "a"}:
                raise ValueError("unexpected keys")
            return cls(
                EventKind(fields["k"]),
                uuid.UUID(fields["w"]),
                uuid.UUID(fields["s"]) if fields["s"] else None,
                uuid.UUID(fields["a"]) if fields["a"] else None,
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise InternalError(
                "a coordination message is malformed", reason="bad_coordination_message"
            ) from exc


Handler = Callable[[WorkerEvent], Awaitable[None]]


class Coordination(Protocol):
    """Routes events to the replica that holds a worker's stream."""

    replica_id: str

    async def start(self, handler: Handler) -> None:
        """Begin delivering this replica's events to ``handler``."""
        ...

    async def close(self) -> None: ...

    async def ensure_available(self) -> None:
        """Raise Unavailable when the bus cannot be reached (new session starts need it)."""
        ...

    async def healthy(self) -> bool:
        """Whether the bus answers now (for the health service)."""
        ...

    async def claim_worker(self, worker_id: uuid.UUID) -> None:
        """Route the worker's events here (refresh it with every heartbeat)."""
        ...

    async def claim_workers(self, worker_ids: list[uuid.UUID]) -> None:
        """:meth:`claim_worker` for many workers at once (a batch of heartbeats)."""
        ...

    async def release_worker(self, worker_id: uuid.UUID) -> None:
        """Stop routing the worker here, if it still is."""
        ...

    async def notify(self, event: WorkerEvent) -> bool:
        """Deliver to the worker's replica; False when no replica holds the worker.

        Raises Unavailable when the bus cannot be reached.
        """
        ...


async def notify_best_effort(coordination: Coordination, event: WorkerEvent) -> None:
    """Tell a worker's replica, after the commit that made the change. PostgreSQL holds the
    truth already: a notice the bus cannot take now reaches the worker through its next
    heartbeat or reconnect, so an unavailable bus is logged, not raised."""
    try:
        await coordination.notify(event)
    except Unavailable:
        log.warning(
            "could not tell worker %s of %s now; its heartbeat will", event.worker_id, event.kind.value
        )
