"""Rules of resource secrets: put (create or rotate), get (metadata), delete, reveal.

No method here returns plaintext to a caller of the API: ``reveal`` is for
the secret resolver, which checks the worker's lease and audits the access
in the same unit of work.
"""

from __future__ import annotations

import uuid

from rap_common.errors import InvalidArgument, NotFound
from rap_control.audit.service import AuditLog
from rap_control.audit.types import EventType
from rap_control.db.engine import UnitOfWork
from rap_control.keys.provider import KeyProvider
from rap_control.keys.service import KeyService
from rap_control.principal import CallContext
from rap_control.resources.repository import ResourceRepository
from rap_control.secrets import envelope, payload
from rap_control.secrets.ref import NAME_PATTERN, SecretRef
from rap_control.secrets.repository import SecretRepository, binding_of, sealed_of, to_info
from rap_control.secrets.types import Credential, SecretInfo

DEFAULT_NAME = "default"


class SecretStore:
    def __init__(self, audit: AuditLog, provider: KeyProvider, keys: KeyService) -> None:
        self._audit = audit
        self._provider = provider
        self._keys = keys

    def put(
        self, uow: UnitOfWork, ctx: CallContext, resource_id: uuid.UUID, name: str, credential: Credential
    ) -> SecretInfo:
        """Create the resource's secret, or rotate it (rotation_version + 1), and point
        the resource's secret_ref at it (admins only)."""
        ctx.principal.require_admin("store secrets")
        payload.validate(credential)
        resources = ResourceRepository(uow.session)
        resource = resources.get(ctx.organization_id, resource_id, lock=True)
        ref = SecretRef(ctx.organization_id, resource_id, self._name(name, resource.secret_ref, resource_id))
        repo = SecretRepository(uow.session)
        live, row = repo.lock_for_put(ctx.organization_id, resource_id, str(ref))
        if live is not None and live.secret_ref != str(ref):
            raise InvalidArgument(
                f"the resource already has the secret {live.secret_ref}; put under the name {live.name!r} "
                "to rotate it, or delete it first",
                reason="secret_name_mismatch",
            )
        binding = envelope.Binding(
            str(ref), ctx.organization_id, resource_id, row.rotation_version + 1 if row else 1
        )
        encoded = payload.encode(credential)
        try:
            sealed = envelope.seal(self._provider, self._keys.active_key_id(uow), binding, encoded)
        finally:
            encoded.wipe()
        row = repo.insert(binding, ref.name, sealed) if row is None else repo.rotate(row, binding, sealed)
        if resource.secret_ref != str(ref):
            resources.update(resource, {"secret_ref": str(ref)})
        self._audit.record(
            uow,
            ctx.actor,
            EventType.RESOURCE_SECRET_ROTATED,
            target_type="resource_secret",
            target_id=str(row.id),
            details={
                "secret_ref": str(ref),
                "resource_id": str(resource_id),
                "rotation_version": binding.rotation_version,
                "key_id": sealed.key_id,
                "credential_type": payload.credential_type(credential).value,
            },
        )
        return to_info(row)

    def get(self, uow: UnitOfWork, ctx: CallContext, resource_id: uuid.UUID) -> SecretInfo:
        """The metadata of the resource's secret (admins only); never its value."""
        ctx.principal.require_admin("read secret metadata")
        ResourceRepository(uow.session).get(ctx.organization_id, resource_id)
        row = SecretRepository(uow.session).live_for_resource(ctx.organization_id, resource_id)
        if row is None:
            raise NotFound(f"resource {resource_id} has no secret", reason="secret_not_found")
        return to_info(row)

    def delete(self, uow: UnitOfWork, ctx: CallContext, resource_id: uuid.UUID) -> None:
        """Shred the resource's secret (admins only). The resource keeps its secret_ref,
        which now dangles: a session on it is refused until a secret is put again."""
        ctx.principal.require_admin("delete secrets")
        ResourceRepository(uow.session).get(ctx.organization_id, resource_id, lock=True)
        repo = SecretRepository(uow.session)
        row = repo.live_for_resource(ctx.organization_id, resource_id, lock=True)
        if row is None:
            raise NotFound(f"resource {resource_id} has no secret", reason="secret_not_found")
        repo.shred(row)
        self._audit.record(
            uow,
            ctx.actor,
            EventType.RESOURCE_SECRET_DELETED,
            target_type="resource_secret",
            target_id=str(row.id),
            details={
                "secret_ref": row.secret_ref,
                "resource_id": str(resource_id),
                "rotation_version": row.rotation_version,
            },
        )

    def reveal(
        self, uow: UnitOfWork, organization_id: uuid.UUID, resource_id: uuid.UUID, secret_ref: str
    ) -> Credential:
        """Decrypt the live secret ``secret_ref`` of a resource, verifying every binding.

        Raises NotFound when there is none, DataLoss when it fails its
        integrity checks, UnknownKey when its key is not configured here.
        """
        return self.reveal_versioned(uow, organization_id, resource_id, secret_ref)[0]

    def reveal_versioned(
        self, uow: UnitOfWork, organization_id: uuid.UUID, resource_id: uuid.UUID, secret_ref: str
    ) -> tuple[Credential, int]:
        """:meth:`reveal`, with the secret's rotation version."""
        row = SecretRepository(uow.session).live_for_resource(organization_id, resource_id)
        if row is None or row.secret_ref != secret_ref:
            raise NotFound("no live secret matches that secret_ref", reason="secret_not_found")
        plaintext = envelope.open_sealed(self._provider, binding_of(row), sealed_of(row))
        try:
            return payload.decode(plaintext), row.rotation_version
        finally:
            plaintext.wipe()

    @staticmethod
    def _name(requested: str, current_ref: str | None, resource_id: uuid.UUID) -> str:
        if requested:
            if not NAME_PATTERN.fullmatch(requested):
                raise InvalidArgument(
                    "name must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit",
                    reason="bad_secret_name",
                )
            return requested
        if current_ref:
            ref = SecretRef.parse(current_ref)
            if ref.resource_id == resource_id:
                return ref.name
        return DEFAULT_NAME
