"""The key registry's rules: which KEK writes, switching it, retiring old ones.

PostgreSQL holds which key id is active, so every replica writes under the
same key; configuration only supplies key material. At start-up the
configured primary key is registered, and becomes active when it is new
(that is how an operator rotates: configure a new primary key, keep the old
one in the keyring, restart, then rewrap).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rap_common.errors import FailedPrecondition, NotFound
from rap_control.audit.service import AuditLog
from rap_control.audit.types import EventType
from rap_control.db.engine import UnitOfWork
from rap_control.keys.provider import KeyProvider
from rap_control.keys.repository import KeyRepository
from rap_control.principal import Actor
from rap_control.secrets.repository import SecretRepository


@dataclass(frozen=True)
class KeyStatus:
    key_id: str
    provider: str
    active: bool
    available: bool
    secret_count: int
    created_at: datetime
    retired_at: datetime | None


class KeyService:
    def __init__(self, audit: AuditLog, provider: KeyProvider) -> None:
        self._audit = audit
        self._provider = provider

    def register_at_startup(self, uow: UnitOfWork, actor: Actor) -> str:
        """Register the provider's keys; activate the primary one if it is new or none is active.

        Returns the active key id.
        """
        repo = KeyRepository(uow.session)
        repo.lock_all()  # replicas starting together register one after the other
        primary = self._provider.primary_key_id
        primary_is_new = repo.register(primary, self._provider.name)
        for key_id in self._provider.key_ids():
            repo.register(key_id, self._provider.name)
        active = repo.active_key_id()
        if active is None or (primary_is_new and active != primary):
            self._switch(uow, actor, repo, active, primary, "start-up with a new primary key")
            return primary
        if active not in self._provider.key_ids():
            raise FailedPrecondition(
                f"the active encryption key {active!r} is not configured here: add it to the keyring "
                "(or the token) so this replica can write secrets",
                reason="active_key_unavailable",
            )
        return active

    def active_key_id(self, uow: UnitOfWork) -> str:
        active = KeyRepository(uow.session).active_key_id()
        if active is None:
            raise FailedPrecondition(
                "no encryption key is active; restart the control plane", reason="no_active_key"
            )
        return active

    def set_active(self, uow: UnitOfWork, actor: Actor, key_id: str) -> KeyStatus:
        repo = KeyRepository(uow.session)
        keys = {k.key_id: k for k in repo.lock_all()}
        if key_id not in keys:
            raise NotFound(f"encryption key {key_id!r} is not registered", reason="key_not_found")
        if keys[key_id].retired_at is not None:
            raise FailedPrecondition(f"encryption key {key_id!r} is retired", reason="key_retired")
        if key_id not in self._provider.key_ids():
            raise FailedPrecondition(
                f"encryption key {key_id!r} has no material here; configure it first",
                reason="key_unavailable",
            )
        active = repo.active_key_id()
        if active != key_id:
            self._switch(uow, actor, repo, active, key_id, "set by an operator")
        return next(s for s in self.status(uow) if s.key_id == key_id)

    def status(self, uow: UnitOfWork) -> list[KeyStatus]:
        counts = SecretRepository(uow.session).count_by_key()
        available = set(self._provider.key_ids())
        return [
            KeyStatus(
                key_id=k.key_id,
                provider=k.provider,
                active=k.active,
                available=k.key_id in available,
                secret_count=counts.get(k.key_id, 0),
                created_at=k.created_at,
                retired_at=k.retired_at,
            )
            for k in KeyRepository(uow.session).all()
        ]

    def retire(self, uow: UnitOfWork, actor: Actor, key_id: str) -> None:
        """Mark a key retired; refused while it is active or any secret still needs it."""
        repo = KeyRepository(uow.session)
        keys = {k.key_id: k for k in repo.lock_all()}
        if key_id not in keys:
            raise NotFound(f"encryption key {key_id!r} is not registered", reason="key_not_found")
        if keys[key_id].active:
            raise FailedPrecondition(f"encryption key {key_id!r} is the active key", reason="key_active")
        still = SecretRepository(uow.session).count_by_key().get(key_id, 0)
        if still:
            raise FailedPrecondition(
                f"{still} secret(s) still need encryption key {key_id!r}: run `rapctl keys rewrap` first",
                reason="key_in_use",
            )
        repo.retire(key_id)
        self._audit.record(
            uow, actor, EventType.ENCRYPTION_KEY_RETIRED, target_type="encryption_key", target_id=key_id
        )

    def _switch(
        self, uow: UnitOfWork, actor: Actor, repo: KeyRepository, old: str | None, new: str, why: str
    ) -> None:
        repo.activate(new)
        self._audit.record(
            uow,
            actor,
            EventType.ENCRYPTION_KEY_ROTATED,
            target_type="encryption_key",
            target_id=new,
            details={"previous_key_id": old, "provider": self._provider.name, "why": why},
        )
