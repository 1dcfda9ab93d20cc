"""Idempotency keys: a client's ``request_id`` makes a creating call safe to retry.

The first call with a (caller, method, request_id) claims the key in its own
transaction (an INSERT that a concurrent duplicate waits on, through the
primary key) and stores its result, ids only, before it commits. A retry
with the same key and the same request reads that result back: a retry
after an ambiguous failure never starts a second session. The same key
with a different request is INVALID_ARGUMENT. A first call that was refused
stores no result, so its retry runs again. Keys are kept for a day.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from rap_common.errors import InvalidArgument
from rap_control.db import models as m
from rap_control.db.engine import UnitOfWork

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
KEEP_HOURS = 24


def request_digest(*parts: object) -> bytes:
    """A digest of what a request asks for, to tell a retry from another request."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


class IdempotencyKeys:
    """One call's key: ``claim`` it at the start of the unit, ``remember`` the result at its end."""

    def __init__(self, scope_id: uuid.UUID, method: str, request_id: str, digest: bytes) -> None:
        if not _REQUEST_ID.fullmatch(request_id):
            raise InvalidArgument(
                "request_id must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
                reason="bad_request_id",
            )
        self._key = {"scope_id": scope_id, "method": method, "request_id": request_id}
        self._digest = digest

    def claim(self, uow: UnitOfWork) -> dict[str, Any] | None:
        """None when this call is the first (the key is held until the unit ends); else the
        first call's result."""
        claimed = uow.session.execute(
            insert(m.IdempotencyKey)
            .values(**self._key, fingerprint=self._digest)
            .on_conflict_do_nothing()
            .returning(m.IdempotencyKey.scope_id)
        ).first()
        if claimed is not None:
            return None
        row = uow.session.execute(
            select(m.IdempotencyKey.fingerprint, m.IdempotencyKey.result)
            .where(*(getattr(m.IdempotencyKey, k) == v for k, v in self._key.items()))
            .with_for_update()
        ).one()
        if bytes(row.fingerprint) != self._digest:
            raise InvalidArgument(
                "request_id was already used for another request; use a new one", reason="request_id_reused"
            )
        return dict(row.result) if row.result is not None else None

    def remember(self, uow: UnitOfWork, result: dict[str, Any]) -> None:
        uow.session.execute(
            update(m.IdempotencyKey)
            .where(*(getattr(m.IdempotencyKey, k) == v for k, v in self._key.items()))
            .values(result=result)
        )


def prune(uow: UnitOfWork) -> int:
    """Forget keys older than a day; how many."""
    gone = uow.session.scalars(
        delete(m.IdempotencyKey)
        .where(m.IdempotencyKey.created_at < func.now() - text(f"interval '{KEEP_HOURS} hours'"))
        .returning(m.IdempotencyKey.request_id)
    ).all()
    return len(gone)
