"""Rules and state changes of resources.

Every write is admin-only, validated, passed through the production guard,
and audited in the same transaction. A guard refusal writes its own audit
row (``resource_rejected_plaintext_credentials``) and no resource row.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

from rap_common.errors import InvalidArgument
from rap_control.audit.service import AuditLog
from rap_control.audit.types import EventType
from rap_control.db.engine import UnitOfWork
from rap_control.paging import PageRequest, key_field, split_page
from rap_control.policy.guard import ProductionGuard
from rap_control.principal import CallContext
from rap_control.resources.repository import ResourceRepository
from rap_control.resources.types import Protocol, Resource, ResourcePatch, ResourceSpec
from rap_control.resources.validation import check_metadata_limits, normalize_address, validate_name
from rap_control.secrets.ref import SecretRef


class ResourceService:
    def __init__(self, audit: AuditLog, guard: ProductionGuard) -> None:
        self._audit = audit
        self._guard = guard

    def create(
        self, uow: UnitOfWork, ctx: CallContext, spec: ResourceSpec, resource_id: uuid.UUID | None = None
    ) -> Resource:
        """Create a resource in the caller's organization (admins only)."""
        ctx.principal.require_admin("create resources")
        resource_id = resource_id or uuid.uuid4()
        spec = self._checked(uow, ctx, spec, target_id=str(resource_id), action="create")
        if spec.secret_ref:
            SecretRef.parse(spec.secret_ref).check_belongs_to(ctx.organization_id, resource_id)
        resource = ResourceRepository(uow.session).insert(ctx.organization_id, resource_id, spec)
        self._audit.record(
            uow,
            ctx.actor,
            EventType.RESOURCE_CREATED,
            target_type="resource",
            target_id=str(resource.id),
            details={
                "name": resource.name,
                "protocol": resource.protocol.value,
                "has_secret_ref": bool(spec.secret_ref),
            },
        )
        return resource

    def get(self, uow: UnitOfWork, ctx: CallContext, resource_id: uuid.UUID) -> Resource:
        return ResourceRepository(uow.session).get(ctx.organization_id, resource_id)

    def list(
        self, uow: UnitOfWork, ctx: CallContext, page: PageRequest, protocol: Protocol | None
    ) -> tuple[list[Resource], dict[str, Any] | None]:
        after = None
        if page.after:
            try:
                after = (
                    datetime.fromisoformat(str(key_field(page.after, "t"))),
                    uuid.UUID(str(key_field(page.after, "id"))),
                )
            except ValueError:
                raise InvalidArgument("page_token is not valid", reason="bad_page_token") from None
        rows = ResourceRepository(uow.session).list(
            ctx.organization_id, limit=page.size + 1, after=after, protocol=protocol
        )
        return split_page(rows, page, lambda r: {"t": r.created_at.isoformat(), "id": str(r.id)})

    def update(
        self, uow: UnitOfWork, ctx: CallContext, resource_id: uuid.UUID, patch: ResourcePatch
    ) -> Resource:
        """Replace the fields named by ``patch`` (admins only); the result must pass the guard."""
        ctx.principal.require_admin("update resources")
        repo = ResourceRepository(uow.session)
        current = repo.get(ctx.organization_id, resource_id, lock=True)
        merged = self._checked(
            uow,
            ctx,
            ResourceSpec(
                name=patch.name if patch.name is not None else current.name,
                protocol=current.protocol,
                address=patch.address if patch.address is not None else current.address,
                secret_ref=None
                if patch.clear_secret_ref
                else (patch.secret_ref if patch.secret_ref is not None else current.secret_ref),
                metadata=patch.metadata if patch.metadata is not None else current.metadata,
            ),
            target_id=str(resource_id),
            action="update",
        )
        if merged.secret_ref and merged.secret_ref != current.secret_ref:
            SecretRef.parse(merged.secret_ref).check_belongs_to(ctx.organization_id, resource_id)
        values = {
            "name": merged.name,
            "address": merged.address,
            "secret_ref": merged.secret_ref,
            "metadata_": merged.metadata,
        }
        updated = repo.update(current, values)
        self._audit.record(
            uow,
            ctx.actor,
            EventType.RESOURCE_UPDATED,
            target_type="resource",
            target_id=str(resource_id),
            details={"fields": patch.changed_fields()},
        )
        return updated

    def delete(self, uow: UnitOfWork, ctx: CallContext, resource_id: uuid.UUID) -> None:
        """Delete a resource (admins only). Its name is free again afterwards."""
        ctx.principal.require_admin("delete resources")
        repo = ResourceRepository(uow.session)
        resource = repo.get(ctx.organization_id, resource_id, lock=True)
        repo.soft_delete(resource)
        self._audit.record(
            uow,
            ctx.actor,
            EventType.RESOURCE_DELETED,
            target_type="resource",
            target_id=str(resource_id),
            details={"name": resource.name},
        )

    def _checked(
        self, uow: UnitOfWork, ctx: CallContext, spec: ResourceSpec, *, target_id: str, action: str
    ) -> ResourceSpec:
        """Limits first, then the guard (so that every attempt to store a credential
        is audited, whatever else is wrong), then the remaining field rules."""
        check_metadata_limits(spec.metadata)
        self._enforce_guard(uow, ctx, spec, target_id=target_id, action=action)
        return dataclasses.replace(
            spec,
            name=validate_name(spec.name),
            address=normalize_address(spec.protocol, spec.address),
            secret_ref=spec.secret_ref or None,
        )

    def _enforce_guard(
        self, uow: UnitOfWork, ctx: CallContext, spec: ResourceSpec, *, target_id: str, action: str
    ) -> None:
        verdict = self._guard.check_resource(spec.protocol, spec.secret_ref, spec.metadata)
        if verdict.ok:
            return
        # A refusal is audited (key paths only, never values) although the request fails.
        event = (
            EventType.RESOURCE_REJECTED_PLAINTEXT_CREDENTIALS
            if verdict.credential_paths
            else EventType.RESOURCE_REJECTED_MISSING_SECRET_REF
        )
        self._audit.record(
            uow,
            ctx.actor,
            event,
            target_type="resource",
            target_id=target_id,
            details={
                "action": action,
                "name": spec.name[:128],
                "protocol": spec.protocol.value,
                "key_paths": list(verdict.credential_paths[:50]),
                "missing_secret_ref": verdict.missing_secret_ref,
            },
        )
        reason = "plaintext_credentials" if verdict.credential_paths else "secret_ref_required"
        uow.commit_and_raise(InvalidArgument(verdict.message(), reason=reason))
