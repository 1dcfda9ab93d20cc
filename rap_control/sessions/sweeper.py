"""The sweeper: fails the sessions whose lease lapsed, and ends those past their limits.

Besides leases, each pass terminates sessions that stayed active without an
attachment past their idle timeout, or lived past their maximum duration
(``session_terminated``, reason ``idle_timeout`` or ``max_duration``): a
session orphaned by a lost client never keeps a live login for good.

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
from rap_control import idempotency
from rap_control.audit.service import AuditLog
from rap_control.db.engine import Database, UnitOfWork
from rap_control.principal import Actor
from rap_control.sessions.lifecycle import Lifecycle, SessionTiming
from rap_control.sessions.repository import SessionRepository
from rap_control.sessions.types import EndedSession, SessionState

log = logging.getLogger(__name__)
# Jitter from a generator of our own: the global one is shared with the rest of the process.
_JITTER = random.Random()  # noqa: S311 - jitter, not secrecy

BATCH = 100


class LeaseSweeper:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        outage_grace_seconds: float = 0.0,
        timing: SessionTiming | None = None,
    ) -> None:
        self._db = db
        self._lifecycle = Lifecycle(audit)
        self._grace = outage_grace_seconds
        self._timing = timing or SessionTiming()

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

    def end_overdue_once(self, uow: UnitOfWork) -> list[EndedSession]:
        """Terminate one batch of sessions past their idle timeout or maximum duration."""
        ended = []
        overdue = SessionRepository(uow.session).lock_overdue(
            self._timing.idle_timeout_seconds, self._timing.max_session_seconds, BATCH
        )
        for session, why in overdue:
            done = self._lifecycle.end(
                uow, session.id, SessionState.TERMINATED, why, Actor("system", "session-limits", None, "")
            )
            if done is not None:
                ended.append(EndedSession(done.id, done.worker_id, "terminated"))
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
                    ended = await self._db.run_system(self.sweep_once)
                    for item in ended:
                        log.warning("session %s failed: its lease lapsed", item.session_id)
                        await on_ended(item)
                    if len(ended) < BATCH:
                        break
                await self._db.run_system(idempotency.prune)
                while True:
                    ended = await self._db.run_system(self.end_overdue_once)
                    for item in ended:
                        log.info(
                            "session %s ended: past its idle timeout or maximum duration", item.session_id
                        )
                        await on_ended(item)
                    if len(ended) < BATCH:
                        break
            except RapError as exc:
                log.warning("lease sweep skipped: %s", exc.reason)
            except Exception:
                log.exception("lease sweep failed")
