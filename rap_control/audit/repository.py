"""All SQL of the audit log. Appends lock one chain head row; rows are never updated."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from rap_control.audit.chain import GENESIS_HASH
from rap_control.audit.types import AuditEvent, AuditFilter
from rap_control.db import models as m


def _to_event(row: m.AuditEvent) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        chain_id=row.chain_id,
        sequence=row.sequence,
        organization_id=row.organization_id,
        event_type=row.event_type,
        actor_type=row.actor_type,
        actor_id=row.actor_id,
        target_type=row.target_type,
        target_id=row.target_id,
        request_id=row.request_id,
        details=row.details,
        created_at=row.created_at,
        previous_hash=row.previous_hash,
        hash=row.hash,
    )


class AuditRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def lock_head(self, chain_id: str) -> tuple[int, bytes]:
        """Lock the chain's head row (creating it) and return (last sequence, last hash).

        One statement: an upsert whose no-op update takes the row lock and
        returns the head. The lock is held until the transaction ends, so the
        next append of the same chain waits, and appends of other chains do not.
        """
        heads = m.core(m.AuditChainHead)
        statement = (
            pg_insert(heads)
            .values(chain_id=chain_id, last_sequence=0, last_hash=GENESIS_HASH)
            .on_conflict_do_update(index_elements=["chain_id"], set_={"chain_id": chain_id})
            .returning(heads.c.last_sequence, heads.c.last_hash)
        )
        head = self._s.connection().execute(statement).one()
        return head.last_sequence, head.last_hash

    def append(self, event: AuditEvent) -> None:
        """Insert the event and advance the chain head, in one statement."""
        events, heads = m.core(m.AuditEvent), m.core(m.AuditChainHead)
        inserted = (
            insert(events)
            .values(
                id=event.id,
                chain_id=event.chain_id,
                sequence=event.sequence,
                organization_id=event.organization_id,
                event_type=event.event_type,
                actor_type=event.actor_type,
                actor_id=event.actor_id,
                target_type=event.target_type,
                target_id=event.target_id,
                request_id=event.request_id,
                details=event.details,
                created_at=event.created_at,
                previous_hash=event.previous_hash,
                hash=event.hash,
            )
            .cte("inserted")
        )
        advance = (
            update(heads)
            .where(heads.c.chain_id == event.chain_id)
            .values(last_sequence=event.sequence, last_hash=event.hash)
            .add_cte(inserted)
        )
        self._s.connection().execute(advance)

    def head(self, chain_id: str) -> tuple[int, bytes] | None:
        row = self._s.execute(
            select(m.AuditChainHead.last_sequence, m.AuditChainHead.last_hash).where(
                m.AuditChainHead.chain_id == chain_id
            )
        ).one_or_none()
        return None if row is None else (row.last_sequence, row.last_hash)

    def chain_ids(self) -> list[str]:
        return list(self._s.scalars(select(m.AuditChainHead.chain_id).order_by(m.AuditChainHead.chain_id)))

    def iter_chain(self, chain_id: str, batch: int = 1000) -> Iterator[AuditEvent]:
        """Every row of a chain in sequence order, ``batch`` rows in memory at a time."""
        after = 0
        while True:
            rows = self._s.scalars(
                select(m.AuditEvent)
                .where(m.AuditEvent.chain_id == chain_id, m.AuditEvent.sequence > after)
                .order_by(m.AuditEvent.sequence)
                .limit(batch)
            ).all()
            if not rows:
                return
            for row in rows:
                yield _to_event(row)
            after = rows[-1].sequence
            self._s.expunge_all()

    def list(
        self, organization_id: uuid.UUID, flt: AuditFilter, after_sequence: int, limit: int
    ) -> list[AuditEvent]:
        query = select(m.AuditEvent).where(
            m.AuditEvent.organization_id == organization_id,
            m.AuditEvent.chain_id == str(organization_id),
            m.AuditEvent.sequence > after_sequence,
        )
        if flt.event_type:
            query = query.where(m.AuditEvent.event_type == flt.event_type)
        if flt.target_id:
            query = query.where(m.AuditEvent.target_id == flt.target_id)
        if flt.actor_id:
            query = query.where(m.AuditEvent.actor_id == flt.actor_id)
        if flt.start_time:
            query = query.where(m.AuditEvent.created_at >= flt.start_time)
        if flt.end_time:
            query = query.where(m.AuditEvent.created_at < flt.end_time)
        rows = self._s.scalars(query.order_by(m.AuditEvent.sequence).limit(limit)).all()
        return [_to_event(r) for r in rows]
