"""Re-wrap every data key under the active KEK, in batches, resumably.

Each batch is one transaction: lock up to N live rows whose key is not the
target (skipping rows another rewrapper holds), unwrap each data key with
its old KEK, check the payload against its digest, wrap the data key with
the target KEK, recompute the digest under the target's digest key, and
write it only where the row is still under its old key; the batch's
``secrets_rewrapped`` audit row commits with it. A run killed at any point
loses at most its open batch, which rolls back, and the next run picks up
what is left: nothing is lost and nothing is wrapped twice. Memory holds
one batch of rows; plaintext data keys are wiped as soon as they are used.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from rap_common.errors import InternalError, InvalidArgument
from rap_control.audit.service import AuditLog
from rap_control.audit.types import EventType
from rap_control.db.engine import Database, UnitOfWork
from rap_control.keys.provider import KeyProvider, integrity_error
from rap_control.keys.service import KeyService
from rap_control.principal import Actor
from rap_control.secrets import envelope
from rap_control.secrets.repository import Rewrapped, SecretRepository, binding_of, sealed_of

DEFAULT_BATCH = 500
MAX_BATCH = 5000


@dataclass(frozen=True)
class RewrapProgress:
    rewrapped: int
    remaining: int
    total: int
    target_key_id: str


class Rewrapper:
    def __init__(self, db: Database, provider: KeyProvider, keys: KeyService, audit: AuditLog) -> None:
        self._db = db
        self._provider = provider
        self._keys = keys
        self._audit = audit

    def batches(self, actor: Actor, batch_size: int = DEFAULT_BATCH) -> RewrapRun:
        if not 1 <= batch_size <= MAX_BATCH:
            raise InvalidArgument(f"batch_size must be between 1 and {MAX_BATCH}", reason="bad_batch_size")
        return RewrapRun(self, actor, batch_size)

    def run(
        self,
        actor: Actor,
        batch_size: int = DEFAULT_BATCH,
        on_progress: Callable[[RewrapProgress], None] | None = None,
    ) -> RewrapProgress:
        """Rewrap everything, calling ``on_progress`` after each batch."""
        run = self.batches(actor, batch_size)
        progress = self._db.run_sync(run.start)
        while True:  # until a batch finds nothing: rows put during the run are covered too
            step = self._db.run_sync(run.next_batch)
            if step is None:
                break
            progress = step
            if on_progress:
                on_progress(progress)
        return progress

    def plan(self, uow: UnitOfWork) -> tuple[str, int]:
        """The target (active) key id and how many secrets are not under it yet."""
        target = self._keys.active_key_id(uow)
        return target, SecretRepository(uow.session).count_needing(target)

    def rewrap_batch(
        self, uow: UnitOfWork, actor: Actor, target: str, size: int, after: uuid.UUID | None = None
    ) -> tuple[int, uuid.UUID | None]:
        """Rewrap up to ``size`` secrets with ids after ``after`` to ``target`` in ``uow``.

        Returns how many were done and the last id seen (None when none was found).
        """
        repo = SecretRepository(uow.session)
        rows = repo.lock_batch_needing(target, size, after)
        from_keys: dict[str, int] = {}
        done: list[Rewrapped] = []
        for row in rows:
            binding, sealed = binding_of(row), sealed_of(row)
            dek = envelope.unwrap_dek(self._provider, binding, sealed.key_id, sealed.wrapped_dek)
            try:
                plaintext = envelope.decrypt_with(dek, binding, sealed.nonce, sealed.ciphertext)
                try:
                    if envelope.digest(self._provider, sealed.key_id, plaintext) != sealed.payload_sha256:
                        raise integrity_error(f"the digest of the secret {binding.secret_ref}")
                    new_digest = envelope.digest(self._provider, target, plaintext)
                finally:
                    plaintext.wipe()
                wrapped = self._provider.wrap(target, dek, binding.dek_aad(target))
            finally:
                dek.wipe()
            done.append(Rewrapped(row.id, sealed.key_id, wrapped, new_digest))
            from_keys[sealed.key_id] = from_keys.get(sealed.key_id, 0) + 1
        count = repo.rewrap(target, done)
        if count != len(done):
            # The rows are locked by this transaction: a mismatch means something is badly wrong; undo the batch.
            raise InternalError(f"rewrap changed {count} rows of a locked batch of {len(done)}")
        if count:
            self._audit.record(
                uow,
                actor,
                EventType.SECRETS_REWRAPPED,
                target_type="encryption_key",
                target_id=target,
                details={"count": count, "from_key_ids": from_keys},
            )
        return count, (rows[-1].id if rows else None)


class RewrapRun:
    """One rewrap pass, advanced a batch (one unit of work) at a time, so that
    a server stream can report each batch."""

    def __init__(self, rewrapper: Rewrapper, actor: Actor, batch_size: int) -> None:
        self._r = rewrapper
        self._actor = actor
        self._size = batch_size
        self._target = ""
        self._done = 0
        self._total = 0
        self._after: uuid.UUID | None = None

    def start(self, uow: UnitOfWork) -> RewrapProgress:
        self._target, self._total = self._r.plan(uow)
        return RewrapProgress(0, self._total, self._total, self._target)

    def next_batch(self, uow: UnitOfWork) -> RewrapProgress | None:
        """Rewrap one batch; None when nothing is left.

        Walks the ids in order; at the end it starts over once from the
        beginning, for rows skipped while another rewrapper held them.
        """
        count, last = self._r.rewrap_batch(uow, self._actor, self._target, self._size, self._after)
        if last is None:
            if self._after is None:
                return None
            self._after = None
            return self.next_batch(uow)
        self._after = last
        self._done += count
        return RewrapProgress(self._done, max(self._total - self._done, 0), self._total, self._target)
