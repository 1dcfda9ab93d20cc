"""The sweeper: fails the sessions whose lease lapsed.

Every replica runs one. Each pass locks a batch of lapsed sessions with
SKIP LOCKED, so replicas share the work without doing any twice; each
failure is audited (``session_failed``, reason ``lease_expired``) in the
pass's transaction, and the workers are told afterwards to drop them.

A lease lapses when its worker goes silent, or when the control plane
could not record the heartbeats (the database was down). The sweeper
cannot tell those apart from the lease row, so after this replica saw the
database unavailable it pauses for a grace period (a lease TTL and two
heartbeats): time for every worker still alive to heartbeat and have its
lease renewed. Only leases still lapsed after that are failed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from rap_common.errors import RapError
from rap_control.audit.service import AuditLog
from rap_control.db.engine import Database, UnitOfWork
from rap_control.principal import Actor
from rap_control.sessions.lifecycle import Lifecycle
from rap_control.sessions.repository import SessionRepository
from rap_control.sessions.types import EndedSession, SessionState

log = logging.getLogger(__name__)
# Jitter from a generator of our own: the global one is shared with the rest of the process.
_JITTER = random.Random()  # noqa: S311 - jitter, not secrecy

BATCH = 100


class LeaseSweeper:
    def __init__(self, db: Database, audit: AuditLog, outage_grace_seconds: float = 0.0) -> None:
        self._db = db
        self._lifecycle = Lifecycle(audit)
        self._grace = outage_grace_seconds

    def sweep_once(self, uow: UnitOfWork) -> list[EndedSession]:
        """Fail one batch of lapsed sessions; returns them."""
        ended = []
        for session in SessionRepository(uow.session).lock_lapsed(BATCH):
            done = self._lifecycle.end(
                uow,
                session.id,
                SessionState.FAILED,
                "lease_expired",
                Actor("system", "lease-sweeper", None, ""),
            )
            if done is not None:
                ended.append(EndedSession(done.id, done.worker_id))
        return ended

    async def run(self, interval: float, on_ended: Callable[[EndedSession], Awaitable[None]]) -> None:
        """Sweep every ``interval`` seconds (jittered) until cancelled."""
        while True:
            await asyncio.sleep(interval * _JITTER.uniform(0.8, 1.2))
            if self._db.unavailable_within(self._grace):
                log.info("lease sweep paused: the database was unavailable within %.0f s", self._grace)
                continue
            try:
                while True:
                    ended = await self._db.run(self.sweep_once)
                    for item in ended:
                        log.warning("session %s failed: its lease lapsed", item.session_id)
                        await on_ended(item)
                    if len(ended) < BATCH:
                        break
            except RapError as exc:
                log.warning("lease sweep skipped: %s", exc.reason)
            except Exception:
                log.exception("lease sweep failed")
