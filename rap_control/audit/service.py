"""Recording, listing and verifying audit events.

``record`` runs inside the caller's unit of work, so an audited change and
its audit row commit or roll back together: no audit row, no change.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from rap_common.errors import InvalidArgument
from rap_control.audit import chain
from rap_control.audit.repository import AuditRepository
from rap_control.audit.types import (
    AuditEvent,
    AuditFilter,
    ChainVerification,
    EventType,
    chain_id_for,
)
from rap_control.db.engine import UnitOfWork
from rap_control.paging import PageRequest, key_field, split_page
from rap_control.principal import Actor, CallContext


class AuditLog:
    """The audit service of the control plane."""

    def record(
        self,
        uow: UnitOfWork,
        actor: Actor,
        event_type: EventType,
        *,
        target_type: str,
        target_id: str,
        details: dict[str, Any] | None = None,
        organization_id: uuid.UUID | None = None,
    ) -> AuditEvent:
        """Append an event to its organization's chain in ``uow``'s transaction.

        ``details`` must hold ids, names and reason codes only, never a value
        of a secret.
        """
        details = details or {}
        chain.check_details(details)
        org = organization_id if organization_id is not None else actor.organization_id
        chain_id = chain_id_for(org)
        repo = AuditRepository(uow.session)
        last_sequence, last_hash = repo.lock_head(chain_id)
        unsealed = AuditEvent(
            id=uuid.uuid4(),
            chain_id=chain_id,
            sequence=last_sequence + 1,
            organization_id=org,
            event_type=event_type.value,
            actor_type=actor.type,
            actor_id=actor.id,
            target_type=target_type,
            target_id=target_id,
            request_id=actor.request_id,
            details=details,
            created_at=datetime.now(UTC),
            previous_hash=last_hash,
            hash=b"",
        )
        event = dataclasses.replace(unsealed, hash=chain.link(last_hash, chain.canonical_row(unsealed)))
        repo.append(event)
        return event

    def list_events(
        self, uow: UnitOfWork, ctx: CallContext, flt: AuditFilter, page: PageRequest
    ) -> tuple[list[AuditEvent], dict[str, Any] | None]:
        """A page of the caller's organization's events, oldest first (admins only)."""
        ctx.principal.require_admin("read the audit log")
        if flt.event_type and flt.event_type not in EventType.__members__.values():
            raise InvalidArgument(f"event_type {flt.event_type[:64]!r} is not a known event type")
        after = int(key_field(page.after, "seq")) if page.after else 0
        events = AuditRepository(uow.session).list(ctx.organization_id, flt, after, page.size + 1)
        return split_page(events, page, lambda e: {"seq": e.sequence})

    def verify_organization(self, uow: UnitOfWork, ctx: CallContext) -> ChainVerification:
        """Verify the caller's organization's chain (admins only)."""
        ctx.principal.require_admin("verify the audit log")
        return self.verify(uow, [chain_id_for(ctx.organization_id)])

    def verify(self, uow: UnitOfWork, chain_ids: list[str] | None = None) -> ChainVerification:
        """Recompute every link of the named chains (all when None); stop at the first break."""
        repo = AuditRepository(uow.session)
        chain_ids = repo.chain_ids() if chain_ids is None else chain_ids
        checked = 0
        for chain_id in chain_ids:
            result = self._verify_chain(repo, chain_id, checked)
            if not result.ok:
                return result
            checked = result.checked_events
        return ChainVerification(ok=True, checked_events=checked, chains=list(chain_ids))

    def _verify_chain(self, repo: AuditRepository, chain_id: str, checked: int) -> ChainVerification:
        def broken(sequence: int, event_id: str, problem: str) -> ChainVerification:
            return ChainVerification(
                ok=False,
                checked_events=checked,
                chain_id=chain_id,
                first_broken_sequence=sequence,
                first_broken_event_id=event_id,
                problem=problem,
            )

        expected_sequence, previous_hash = 1, chain.GENESIS_HASH
        for event in repo.iter_chain(chain_id):
            if event.sequence != expected_sequence:
                return broken(
                    expected_sequence,
                    "",
                    f"missing_row: sequence {expected_sequence} is absent "
                    f"(the next row present is sequence {event.sequence}, event {event.id})",
                )
            if event.previous_hash != previous_hash:
                return broken(
                    event.sequence,
                    str(event.id),
                    "previous_hash_mismatch: the link to the row before is broken",
                )
            if chain.link(previous_hash, chain.canonical_row(event)) != event.hash:
                return broken(
                    event.sequence, str(event.id), "hash_mismatch: the row was changed after it was written"
                )
            checked += 1
            expected_sequence, previous_hash = expected_sequence + 1, event.hash
        head = repo.head(chain_id)
        last_sequence = expected_sequence - 1
        if head is not None and (head[0] != last_sequence or head[1] != previous_hash):
            return broken(
                last_sequence + 1,
                "",
                f"missing_row: the chain head records {head[0]} rows but only {last_sequence} are present",
            )
        return ChainVerification(ok=True, checked_events=checked, chains=[chain_id])
