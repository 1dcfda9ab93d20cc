"""All SQL of resources. Every query is scoped to one organization; deleted rows are invisible."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rap_common.errors import AlreadyExists, NotFound
from rap_control.db import models as m
from rap_control.resources.types import Protocol, Resource, ResourceSpec

_NAME_INDEX = "uq_resources_organization_id_name_live"


def _to_resource(row: m.Resource) -> Resource:
    return Resource(
        id=row.id,
        organization_id=row.organization_id,
        name=row.name,
        protocol=Protocol(row.protocol),
        address=row.address,
        secret_ref=row.secret_ref,
        metadata=row.metadata_,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _unique_violation(exc: IntegrityError, name: str) -> AlreadyExists | None:
    text = str(exc.orig)
    if _NAME_INDEX in text:
        return AlreadyExists(f"a resource named {name!r} exists already in this organization")
    if "pk_resources" in text:
        return AlreadyExists("a resource with that id exists already")
    return None


class ResourceRepository:
    """Unique violations surface as AlreadyExists; no savepoint is taken, since the
    error ends the unit of work anyway (and a savepoint costs two round trips)."""

    def __init__(self, session: Session) -> None:
        self._s = session

    def insert(self, organization_id: uuid.UUID, resource_id: uuid.UUID, spec: ResourceSpec) -> Resource:
        now = datetime.now(UTC)
        try:
            self._s.execute(
                insert(m.Resource).values(
                    id=resource_id,
                    organization_id=organization_id,
                    name=spec.name,
                    protocol=spec.protocol.value,
                    address=spec.address,
                    secret_ref=spec.secret_ref,
                    metadata_=spec.metadata,
                    created_at=now,
                    updated_at=now,
                )
            )
        except IntegrityError as exc:
            mapped = _unique_violation(exc, spec.name)
            if mapped is None:
                raise
            raise mapped from None
        return self.get(organization_id, resource_id)

    def get(self, organization_id: uuid.UUID, resource_id: uuid.UUID, *, lock: bool = False) -> Resource:
        query = select(m.Resource).where(
            m.Resource.id == resource_id,
            m.Resource.organization_id == organization_id,
            m.Resource.deleted_at.is_(None),
        )
        if lock:
            query = query.with_for_update()
        row = self._s.scalars(query).one_or_none()
        if row is None:
            raise NotFound(f"resource {resource_id} not found", reason="resource_not_found")
        return _to_resource(row)

    def list(
        self,
        organization_id: uuid.UUID,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
        protocol: Protocol | None,
    ) -> list[Resource]:
        query = select(m.Resource).where(
            m.Resource.organization_id == organization_id, m.Resource.deleted_at.is_(None)
        )
        if protocol is not None:
            query = query.where(m.Resource.protocol == protocol.value)
        if after is not None:
            created, rid = after
            query = query.where(
                or_(
                    m.Resource.created_at > created,
                    and_(m.Resource.created_at == created, m.Resource.id > rid),
                )
            )
        rows = self._s.scalars(query.order_by(m.Resource.created_at, m.Resource.id).limit(limit)).all()
        return [_to_resource(r) for r in rows]

    def update(self, resource: Resource, values: dict[str, Any]) -> Resource:
        """Write ``values`` (model attribute names) onto a resource read under lock."""
        try:
            row = self._s.scalars(
                update(m.Resource)
                .where(m.Resource.id == resource.id, m.Resource.deleted_at.is_(None))
                .values(**values, updated_at=datetime.now(UTC))
                .returning(m.Resource),
                execution_options={"synchronize_session": False, "populate_existing": True},
            ).one()
        except IntegrityError as exc:
            mapped = _unique_violation(exc, str(values.get("name", resource.name)))
            if mapped is None:
                raise
            raise mapped from None
        return _to_resource(row)

    def soft_delete(self, resource: Resource) -> None:
        self._s.execute(
            update(m.Resource)
            .where(m.Resource.id == resource.id, m.Resource.deleted_at.is_(None))
            .values(deleted_at=datetime.now(UTC))
        )
