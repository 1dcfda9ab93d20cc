"""All SQL of sessions and their leases."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, any_, func, insert, select, text, update
from sqlalchemy.orm import Session as OrmSession

from rap_common.errors import NotFound
from rap_control.db import models as m
from rap_control.sessions.types import LIVE_STATES, Channel, Session, SessionFilter, SessionState

_LIVE = [s.value for s in LIVE_STATES]


def _session(row: m.Session) -> Session:
    return Session(
        id=row.id,
        organization_id=row.organization_id,
        resource_id=row.resource_id,
        user_id=row.user_id,
        worker_id=row.worker_id,
        state=SessionState(row.state),
        channels=[Channel(c) for c in row.channels],
        end_reason=row.end_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _interval(seconds: int) -> object:
    return func.make_interval(0, 0, 0, 0, 0, 0, seconds)


class SessionRepository:
    def __init__(self, session: OrmSession) -> None:
        self._s = session

    # -- sessions ---------------------------------------------------------

    def insert(
        self,
        session_id: uuid.UUID,
        organization_id: uuid.UUID,
        resource_id: uuid.UUID,
        user_id: uuid.UUID,
        worker_id: uuid.UUID,
        channels: list[Channel],
    ) -> Session:
        row = self._s.scalars(
            insert(m.Session)
            .values(
                id=session_id,
                organization_id=organization_id,
                resource_id=resource_id,
                user_id=user_id,
                worker_id=worker_id,
                state=SessionState.REQUESTED.value,
                channels=[c.value for c in channels],
            )
            .returning(m.Session)
        ).one()
        return _session(row)

    def get(
        self, organization_id: uuid.UUID, session_id: uuid.UUID, *, user_id: uuid.UUID | None = None
    ) -> Session:
        """A session of the organization (and of ``user_id`` when given); NOT_FOUND otherwise."""
        query = select(m.Session).where(
            m.Session.id == session_id, m.Session.organization_id == organization_id
        )
        if user_id is not None:
            query = query.where(m.Session.user_id == user_id)
        row = self._s.scalars(query).one_or_none()
        if row is None:
            raise NotFound(f"session {session_id} not found", reason="session_not_found")
        return _session(row)

    def get_any(self, session_id: uuid.UUID, *, lock: bool = False) -> Session | None:
        """A session by id whatever its organization: for the worker-side checks."""
        query = select(m.Session).where(m.Session.id == session_id)
        row = self._s.scalars(query.with_for_update() if lock else query).one_or_none()
        return _session(row) if row is not None else None

    def page(
        self,
        organization_id: uuid.UUID,
        user_id: uuid.UUID | None,
        flt: SessionFilter,
        after: uuid.UUID | None,
        limit: int,
    ) -> list[Session]:
        query = select(m.Session).where(m.Session.organization_id == organization_id)
        if user_id is not None:
            query = query.where(m.Session.user_id == user_id)
        if flt.state is not None:
            query = query.where(m.Session.state == flt.state.value)
        if flt.resource_id is not None:
            query = query.where(m.Session.resource_id == flt.resource_id)
        if after is not None:
            query = query.where(m.Session.id > after)
        return [_session(r) for r in self._s.scalars(query.order_by(m.Session.id).limit(limit))]

    def transition(
        self,
        session_id: uuid.UUID,
        from_states: Iterable[SessionState],
        to_state: SessionState,
        *,
        end_reason: str | None = None,
        worker_id: uuid.UUID | None = None,
    ) -> Session | None:
        """Move a session to ``to_state`` if it is in one of ``from_states`` (and on
        ``worker_id`` when given), in one conditional statement; None if it was not."""
        conditions = [m.Session.id == session_id, m.Session.state.in_([s.value for s in from_states])]
        if worker_id is not None:
            conditions.append(m.Session.worker_id == worker_id)
        values: dict[str, object] = {"state": to_state.value, "updated_at": func.now()}
        if to_state in (SessionState.TERMINATED, SessionState.FAILED):
            values |= {"end_reason": end_reason, "ended_at": func.now()}
        row = self._s.scalars(
            update(m.Session).where(*conditions).values(**values).returning(m.Session),
            execution_options={"synchronize_session": False},
        ).one_or_none()
        return _session(row) if row is not None else None

    def live_for_user(self, organization_id: uuid.UUID, user_id: uuid.UUID) -> list[Session]:
        rows = self._s.scalars(
            select(m.Session)
            .where(
                m.Session.organization_id == organization_id,
                m.Session.user_id == user_id,
                m.Session.state.in_(_LIVE),
            )
            .order_by(m.Session.created_at)
        )
        return [_session(r) for r in rows]

    def live_for_worker(self, worker_id: uuid.UUID) -> list[Session]:
        rows = self._s.scalars(
            select(m.Session)
            .where(m.Session.worker_id == worker_id, m.Session.state.in_(_LIVE))
            .order_by(m.Session.created_at)
        )
        return [_session(r) for r in rows]

    def candidate_workers(
        self, organization_id: uuid.UUID, protocol: str, seen_since: datetime
    ) -> list[tuple[uuid.UUID, int, int]]:
        """Online workers of the organization that speak ``protocol``, least loaded first:
        (worker id, capacity, live sessions)."""
        load = (
            select(func.count())
            .where(m.Session.worker_id == m.Worker.id, m.Session.state.in_(_LIVE))
            .correlate(m.Worker)
            .scalar_subquery()
        )
        query = (
            select(m.Worker.id, m.Worker.capacity, load.label("load"))
            .where(
                m.Worker.organization_id == organization_id,
                m.Worker.status == "online",
                # Defence in depth: only a worker identity is ever scheduled.
                m.Worker.role == "worker",
                m.Worker.revoked_at.is_(None),
                m.Worker.last_seen_at >= seen_since,
                any_(m.Worker.protocols) == protocol,
            )
            .order_by(load, m.Worker.last_seen_at.desc())
        )
        return [(row[0], int(row[1]), int(row[2])) for row in self._s.execute(query)]

    def has_quiet_workers(self, organization_id: uuid.UUID, protocol: str, seen_since: datetime) -> bool:
        """Whether the organization has workers for ``protocol`` that are marked online but
        were not heard from lately: they are reconnecting (after an outage or a replica
        restart), or their heartbeats could not be recorded."""
        found = self._s.scalar(
            select(m.Worker.id)
            .where(
                m.Worker.organization_id == organization_id,
                m.Worker.status == "online",
                m.Worker.role == "worker",
                m.Worker.revoked_at.is_(None),
                m.Worker.last_seen_at < seen_since,
                any_(m.Worker.protocols) == protocol,
            )
            .limit(1)
        )
        return found is not None

    def lock_worker_load(self, worker_id: uuid.UUID) -> tuple[int, int] | None:
        """Lock the worker row and count its live sessions again: (capacity, load),
        or None if it went offline or was revoked meanwhile."""
        row = self._s.execute(
            select(m.Worker.capacity)
            .where(
                m.Worker.id == worker_id,
                m.Worker.status == "online",
                m.Worker.revoked_at.is_(None),
                m.Worker.role == "worker",
            )
            .with_for_update()
        ).one_or_none()
        if row is None:
            return None
        load = self._s.scalar(
            select(func.count()).where(m.Session.worker_id == worker_id, m.Session.state.in_(_LIVE))
        )
        return row[0], int(load or 0)

    # -- leases -----------------------------------------------------------

    def insert_lease(
        self, lease_id: uuid.UUID, session_id: uuid.UUID, worker_id: uuid.UUID, ttl_seconds: int
    ) -> m.SessionLease:
        return self._s.scalars(
            insert(m.SessionLease)
            .values(
                id=lease_id,
                session_id=session_id,
                worker_id=worker_id,
                expires_at=func.now() + _interval(ttl_seconds),
            )
            .returning(m.SessionLease)
        ).one()

    def restart_lease(self, session_id: uuid.UUID, ttl_seconds: int) -> None:
        """Start an unreleased lease's clock again: the Assignment just went out. A lease
        that lapsed before its session was ever delivered (a database outage, a lost
        notice) had no worker to renew it; its session is still live (the sweeper would
        have released the lease), so it gets its full time from now."""
        self._s.execute(
            update(m.SessionLease)
            .where(m.SessionLease.session_id == session_id, m.SessionLease.released_at.is_(None))
            .values(expires_at=func.now() + _interval(ttl_seconds))
        )

    def lease_of(self, session_id: uuid.UUID) -> m.SessionLease | None:
        """The session's current (unreleased) lease."""
        return self._s.scalars(
            select(m.SessionLease).where(
                m.SessionLease.session_id == session_id, m.SessionLease.released_at.is_(None)
            )
        ).one_or_none()

    def renew_leases_of(
        self, pairs: Sequence[tuple[uuid.UUID, uuid.UUID]], ttl_seconds: int, *, revive_lapsed: bool = False
    ) -> None:
        """Extend the live leases of (worker id, session id) pairs, in one statement.

        A lease that already lapsed stays lapsed (the sweeper fails its session),
        unless ``revive_lapsed``: after the control plane itself could not write
        (a database outage), a lease that lapsed meanwhile but was not released is
        renewed by the heartbeat that proves its worker is alive.
        """
        if not pairs:
            return
        self._s.execute(
            text(
                "UPDATE session_leases l SET expires_at = now() + make_interval(secs => :ttl), "
                "renewed_at = now() FROM unnest(CAST(:workers AS uuid[]), CAST(:sessions AS uuid[])) "
                "AS v(worker_id, session_id) WHERE l.worker_id = v.worker_id "
                "AND l.session_id = v.session_id AND l.released_at IS NULL "
                "AND (:revive OR l.expires_at > now())"
            ),
            {
                "ttl": ttl_seconds,
                "workers": [w for w, _ in pairs],
                "sessions": [s for _, s in pairs],
                "revive": revive_lapsed,
            },
        )

    def end_states(self, session_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """How each of these sessions stands: its state, or "unknown" when there is no such session."""
        if not session_ids:
            return {}
        rows = self._s.execute(select(m.Session.id, m.Session.state).where(m.Session.id.in_(session_ids)))
        found = {row[0]: row[1] for row in rows}
        return {sid: str(found.get(sid, "unknown")) for sid in session_ids}

    def live_pairs(self, session_ids: Sequence[uuid.UUID]) -> set[tuple[uuid.UUID, uuid.UUID]]:
        """(worker id, session id) of those of ``session_ids`` that are live."""
        if not session_ids:
            return set()
        rows = self._s.execute(
            select(m.Session.worker_id, m.Session.id).where(
                m.Session.id.in_(session_ids), m.Session.state.in_(_LIVE)
            )
        )
        return {(w, s) for w, s in rows if w is not None}

    def undelivered_of(
        self, worker_ids: Sequence[uuid.UUID], older_than_seconds: int
    ) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """(worker id, session id) of requested sessions of these workers whose notice
        should have arrived by now."""
        if not worker_ids:
            return []
        rows = self._s.execute(
            select(m.Session.worker_id, m.Session.id).where(
                m.Session.worker_id.in_(worker_ids),
                m.Session.state == SessionState.REQUESTED.value,
                m.Session.created_at < func.now() - _interval(older_than_seconds),
            )
        )
        return [(w, s) for w, s in rows if w is not None]

    def release_lease(self, session_id: uuid.UUID) -> None:
        self._s.execute(
            update(m.SessionLease)
            .where(m.SessionLease.session_id == session_id, m.SessionLease.released_at.is_(None))
            .values(released_at=func.now()),
            execution_options={"synchronize_session": False},
        )

    def lock_lapsed(self, limit: int) -> list[Session]:
        """Live sessions whose lease has lapsed, locked; rows another replica is
        sweeping are skipped."""
        rows = self._s.scalars(
            select(m.Session)
            .join(
                m.SessionLease,
                and_(m.SessionLease.session_id == m.Session.id, m.SessionLease.released_at.is_(None)),
            )
            .where(m.Session.state.in_(_LIVE), m.SessionLease.expires_at < func.now())
            .order_by(m.SessionLease.expires_at)
            .limit(limit)
            .with_for_update(of=m.Session, skip_locked=True)
        )
        return [_session(r) for r in rows]

    def lock_overdue(self, idle_seconds: int, max_seconds: int, limit: int) -> list[tuple[Session, str]]:
        """Live sessions past their organization's limits, locked (SKIP LOCKED), with why:
        ``max_duration`` (alive longer than allowed) or ``idle_timeout`` (active with no
        active attachment for longer than allowed: since it became active or its last
        attachment came or went). The organization's policy overrides the defaults."""
        rows = self._s.execute(
            text(
                "SELECT s.id, CASE WHEN s.created_at < now() - make_interval(secs => "
                "COALESCE((o.policy->>'rap_session_max_seconds')::int, :max)) "
                "THEN 'max_duration' ELSE 'idle_timeout' END AS why "
                "FROM sessions s JOIN organizations o ON o.id = s.organization_id "
                "WHERE s.state IN ('requested', 'assigned', 'starting', 'active') AND ("
                " s.created_at < now() - make_interval(secs => "
                "  COALESCE((o.policy->>'rap_session_max_seconds')::int, :max))"
                " OR (s.state = 'active'"
                "  AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.session_id = s.id AND a.state = 'active')"
                "  AND GREATEST(s.updated_at, (SELECT max(GREATEST(a.created_at, COALESCE(a.ended_at, a.created_at))) "
                "   FROM attachments a WHERE a.session_id = s.id))"
                "   < now() - make_interval(secs => COALESCE((o.policy->>'rap_session_idle_timeout_seconds')::int, :idle))"
                ")) ORDER BY s.created_at LIMIT :limit FOR UPDATE OF s SKIP LOCKED"
            ),
            {"idle": idle_seconds, "max": max_seconds, "limit": limit},
        ).all()
        if not rows:
            return []
        why = {row[0]: str(row[1]) for row in rows}
        sessions = self._s.scalars(select(m.Session).where(m.Session.id.in_(list(why))))
        return [(_session(r), why[r.id]) for r in sessions]

    def now(self) -> datetime:
        value = self._s.scalar(select(func.now()))
        assert isinstance(value, datetime)
        return value

    @staticmethod
    def seen_since(now: datetime, stale_seconds: int) -> datetime:
        return now - timedelta(seconds=stale_seconds)
