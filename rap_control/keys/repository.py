"""All SQL of the encryption-key registry (which KEK ids exist, which is active)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from rap_control.db import models as m


class KeyRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def register(self, key_id: str, provider: str) -> bool:
        """Record a key id; True if it was not known before."""
        result = self._s.execute(
            pg_insert(m.EncryptionKey)
            .values(key_id=key_id, provider=provider, active=False)
            .on_conflict_do_nothing(index_elements=["key_id"])
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def lock_all(self) -> list[m.EncryptionKey]:
        return list(
            self._s.scalars(select(m.EncryptionKey).order_by(m.EncryptionKey.created_at).with_for_update())
        )

    def all(self) -> list[m.EncryptionKey]:
        return list(self._s.scalars(select(m.EncryptionKey).order_by(m.EncryptionKey.created_at)))

    def active_key_id(self) -> str | None:
        return self._s.scalar(select(m.EncryptionKey.key_id).where(m.EncryptionKey.active))

    def activate(self, key_id: str) -> None:
        # Two statements: the partial unique index allows one active row at a time.
        self._s.execute(update(m.EncryptionKey).where(m.EncryptionKey.active).values(active=False))
        self._s.execute(update(m.EncryptionKey).where(m.EncryptionKey.key_id == key_id).values(active=True))

    def retire(self, key_id: str) -> None:
        self._s.execute(
            update(m.EncryptionKey)
            .where(m.EncryptionKey.key_id == key_id)
            .values(retired_at=datetime.now(UTC))
        )
