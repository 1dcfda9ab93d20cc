"""All SQL of workers and their enrollment tokens."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from rap_common.errors import NotFound
from rap_control.db import models as m
from rap_control.workers.types import Worker


def _worker(row: m.Worker) -> Worker:
    return Worker(
        id=row.id,
        organization_id=row.organization_id,
        name=row.name,
        status=row.status,
        protocols=list(row.protocols),
        capacity=row.capacity,
        direct_url=row.direct_url,
        certificate_not_after=row.certificate_not_after,
        last_seen_at=row.last_seen_at,
        revoked_at=row.revoked_at,
        created_at=row.created_at,
        role=row.role,
    )


class WorkerRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def insert_enrollment_token(
        self,
        organization_id: uuid.UUID,
        token_hash: bytes,
        worker_name: str,
        created_by: uuid.UUID | None,
        expires_at: datetime,
        role: str,
    ) -> None:
        self._s.execute(
            insert(m.WorkerEnrollmentToken).values(
                id=uuid.uuid4(),
                organization_id=organization_id,
                token_hash=token_hash,
                worker_name=worker_name,
                created_by=created_by,
                expires_at=expires_at,
                role=role,
            )
        )

    def consume_enrollment_token(self, token_hash: bytes) -> m.WorkerEnrollmentToken | None:
        """Mark an unused, unexpired token used, in one conditional statement; None if it was not."""
        return self._s.scalars(
            update(m.WorkerEnrollmentToken)
            .where(
                m.WorkerEnrollmentToken.token_hash == token_hash,
                m.WorkerEnrollmentToken.used_at.is_(None),
                m.WorkerEnrollmentToken.expires_at > func.now(),
            )
            .values(used_at=func.now())
            .returning(m.WorkerEnrollmentToken),
            execution_options={"synchronize_session": False},
        ).one_or_none()

    def enrollment_token(self, token_hash: bytes) -> m.WorkerEnrollmentToken | None:
        return self._s.scalars(
            select(m.WorkerEnrollmentToken).where(m.WorkerEnrollmentToken.token_hash == token_hash)
        ).one_or_none()

    def insert_worker(
        self,
        worker_id: uuid.UUID,
        organization_id: uuid.UUID,
        name: str,
        host_names: list[str],
        serial: str,
        not_after: datetime,
        role: str,
    ) -> None:
        self._s.execute(
            insert(m.Worker).values(
                id=worker_id,
                role=role,
                organization_id=organization_id,
                name=name,
                status="offline",
                direct_host_names=host_names,
                certificate_serial=serial,
                certificate_not_after=not_after,
            )
        )

    def link_token(self, token_id: uuid.UUID, worker_id: uuid.UUID) -> None:
        self._s.execute(
            update(m.WorkerEnrollmentToken)
            .where(m.WorkerEnrollmentToken.id == token_id)
            .values(worker_id=worker_id)
        )

    def get(self, organization_id: uuid.UUID, worker_id: uuid.UUID, *, lock: bool = False) -> Worker:
        query = select(m.Worker).where(m.Worker.id == worker_id, m.Worker.organization_id == organization_id)
        row = self._s.scalars(query.with_for_update() if lock else query).one_or_none()
        if row is None:
            raise NotFound(f"worker {worker_id} not found", reason="worker_not_found")
        return _worker(row)

    def list(self, organization_id: uuid.UUID, after: uuid.UUID | None, limit: int) -> list[Worker]:
        query = select(m.Worker).where(m.Worker.organization_id == organization_id)
        if after is not None:
            query = query.where(m.Worker.id > after)
        return [_worker(r) for r in self._s.scalars(query.order_by(m.Worker.id).limit(limit))]

    def revoke(self, worker: Worker) -> Worker:
        row = self._s.scalars(
            update(m.Worker)
            .where(m.Worker.id == worker.id, m.Worker.revoked_at.is_(None))
            .values(status="revoked", revoked_at=func.now())
            .returning(m.Worker),
            execution_options={"synchronize_session": False},
        ).one_or_none()
        return _worker(row) if row is not None else worker

    def get_any(self, worker_id: uuid.UUID, *, lock: bool = False) -> m.Worker | None:
        """A worker by id, whatever its organization: for checks of its own certificate."""
        query = select(m.Worker).where(m.Worker.id == worker_id)
        return self._s.scalars(query.with_for_update() if lock else query).one_or_none()

    def record_certificate(self, worker_id: uuid.UUID, serial: str, not_after: datetime) -> None:
        self._s.execute(
            update(m.Worker)
            .where(m.Worker.id == worker_id)
            .values(certificate_serial=serial, certificate_not_after=not_after)
        )

    def record_hello(
        self, worker_id: uuid.UUID, protocols: Sequence[str], capacity: int, direct_url: str | None
    ) -> None:
        """The worker connected: online, with what it said it can do."""
        self._s.execute(
            update(m.Worker)
            .where(m.Worker.id == worker_id, m.Worker.revoked_at.is_(None), m.Worker.role == "worker")
            .values(
                status="online",
                protocols=list(protocols),
                capacity=capacity,
                direct_url=direct_url,
                last_seen_at=func.now(),
            )
        )

    def mark_offline(self, worker_id: uuid.UUID) -> None:
        self._s.execute(
            update(m.Worker)
            .where(m.Worker.id == worker_id, m.Worker.status == "online")
            .values(status="offline")
        )

    def touch_many(self, worker_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Heartbeats of many workers in one statement: seen now and online; returns
        those that are not revoked."""
        if not worker_ids:
            return set()
        return set(
            self._s.scalars(
                update(m.Worker)
                .where(m.Worker.id.in_(worker_ids), m.Worker.revoked_at.is_(None), m.Worker.role == "worker")
                .values(status="online", last_seen_at=func.now())
                .returning(m.Worker.id),
                execution_options={"synchronize_session": False},
            )
        )

    def online_ids(self) -> Sequence[uuid.UUID]:
        """Every online worker, of every organization (for platform-wide notices)."""
        return tuple(self._s.scalars(select(m.Worker.id).where(m.Worker.status == "online")))
