"""All SQL of resource secrets."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from psycopg2.extras import execute_values
from sqlalchemy import and_, func, insert, or_, select, true, update
from sqlalchemy.orm import Session

from rap_control.db import models as m
from rap_control.secrets.envelope import ALGORITHM, Binding, Sealed
from rap_control.secrets.payload import PAYLOAD_VERSION
from rap_control.secrets.types import SecretInfo


def to_info(row: m.ResourceSecret) -> SecretInfo:
    return SecretInfo(
        id=row.id,
        organization_id=row.organization_id,
        resource_id=row.resource_id,
        secret_ref=row.secret_ref,
        name=row.name,
        rotation_version=row.rotation_version,
        key_id=row.key_id,
        algorithm=row.algorithm,
        payload_digest=row.payload_sha256,
        created_at=row.created_at,
        rotated_at=row.rotated_at,
    )


# Core table: rewrap batches bypass the ORM (one read, one UPDATE ... FROM VALUES).
SECRETS = m.core(m.ResourceSecret)


class SealedRow(Protocol):
    """The columns of a secret row that decryption needs (an ORM object or a Core row)."""

    id: uuid.UUID
    secret_ref: str
    organization_id: uuid.UUID
    resource_id: uuid.UUID
    rotation_version: int
    key_id: str
    wrapped_dek: bytes
    nonce: bytes
    ciphertext: bytes
    payload_sha256: bytes


@dataclass(frozen=True)
class Rewrapped:
    id: uuid.UUID
    old_key_id: str
    wrapped_dek: bytes
    payload_sha256: bytes


def _payload_columns(binding: Binding, sealed: Sealed) -> dict[str, object]:
    """The columns a write of the payload sets, on insert and on rotation alike."""
    return {
        "rotation_version": binding.rotation_version,
        "payload_version": PAYLOAD_VERSION,
        "algorithm": ALGORITHM,
        "key_id": sealed.key_id,
        "wrapped_dek": sealed.wrapped_dek,
        "nonce": sealed.nonce,
        "ciphertext": sealed.ciphertext,
        "payload_sha256": sealed.payload_sha256,
    }


def binding_of(row: SealedRow) -> Binding:
    return Binding(row.secret_ref, row.organization_id, row.resource_id, row.rotation_version)


def sealed_of(row: SealedRow) -> Sealed:
    return Sealed(row.key_id, row.wrapped_dek, row.nonce, row.ciphertext, bytes(row.payload_sha256))


class SecretRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def live_for_resource(
        self, organization_id: uuid.UUID, resource_id: uuid.UUID, *, lock: bool = False
    ) -> m.ResourceSecret | None:
        query = select(m.ResourceSecret).where(
            m.ResourceSecret.organization_id == organization_id,
            m.ResourceSecret.resource_id == resource_id,
            m.ResourceSecret.deleted_at.is_(None),
        )
        return self._s.scalars(query.with_for_update() if lock else query).one_or_none()

    def lock_for_put(
        self, organization_id: uuid.UUID, resource_id: uuid.UUID, secret_ref: str
    ) -> tuple[m.ResourceSecret | None, m.ResourceSecret | None]:
        """In one locked read: the resource's live secret, and the row of ``secret_ref``
        (deleted or not); often the same row."""
        rows = self._s.scalars(
            select(m.ResourceSecret)
            .where(
                or_(
                    m.ResourceSecret.secret_ref == secret_ref,
                    and_(
                        m.ResourceSecret.organization_id == organization_id,
                        m.ResourceSecret.resource_id == resource_id,
                        m.ResourceSecret.deleted_at.is_(None),
                    ),
                )
            )
            .with_for_update()
        ).all()
        live = next((r for r in rows if r.resource_id == resource_id and r.deleted_at is None), None)
        by_ref = next((r for r in rows if r.secret_ref == secret_ref), None)
        return live, by_ref

    def insert(self, binding: Binding, name: str, sealed: Sealed) -> m.ResourceSecret:
        return self._s.scalars(
            insert(m.ResourceSecret)
            .values(
                id=uuid.uuid4(),
                organization_id=binding.organization_id,
                resource_id=binding.resource_id,
                secret_ref=binding.secret_ref,
                name=name,
                **_payload_columns(binding, sealed),
            )
            .returning(m.ResourceSecret)
        ).one()

    def rotate(self, row: m.ResourceSecret, binding: Binding, sealed: Sealed) -> m.ResourceSecret:
        """Replace a row's payload (reviving it if deleted) at the binding's rotation version."""
        return self._s.scalars(
            update(m.ResourceSecret)
            .where(
                m.ResourceSecret.id == row.id,
                m.ResourceSecret.rotation_version == binding.rotation_version - 1,
            )
            .values(**_payload_columns(binding, sealed), rotated_at=func.now(), deleted_at=None)
            .returning(m.ResourceSecret),
            execution_options={"synchronize_session": False, "populate_existing": True},
        ).one()

    def shred(self, row: m.ResourceSecret) -> None:
        """Delete a secret: its crypto columns are overwritten, the row stays for its history."""
        self._s.execute(
            update(m.ResourceSecret)
            .where(m.ResourceSecret.id == row.id)
            .values(
                key_id="",
                wrapped_dek=b"",
                nonce=b"",
                ciphertext=b"",
                payload_sha256=b"",
                deleted_at=datetime.now(UTC),
            )
        )

    # Key rotation

    def count_by_key(self) -> dict[str, int]:
        """Rows that need each KEK: live secrets, and sealed platform keys still in use."""
        counts: dict[str, int] = {}
        for model, live in (
            (m.ResourceSecret, m.ResourceSecret.deleted_at.is_(None)),
            (m.SigningKey, m.SigningKey.state != "retired"),
            (m.PlatformCa, m.PlatformCa.retired_at.is_(None)),
        ):
            key_column = model.key_id
            for key_id, count in self._s.execute(
                select(key_column, func.count()).where(live).group_by(key_column)
            ):
                counts[key_id] = counts.get(key_id, 0) + int(count)
        return counts

    def count_needing(self, target_key_id: str) -> int:
        return int(
            self._s.scalar(
                select(func.count())
                .select_from(m.ResourceSecret)
                .where(m.ResourceSecret.deleted_at.is_(None), m.ResourceSecret.key_id != target_key_id)
            )
            or 0
        )

    def lock_batch_needing(
        self, target_key_id: str, limit: int, after: uuid.UUID | None = None
    ) -> Sequence[SealedRow]:
        """Up to ``limit`` live rows not under ``target_key_id``, locked; rows another
        rewrapper holds are skipped, so concurrent runs share the work. Plain rows,
        not ORM objects: a batch is read once and written once."""
        t = SECRETS
        query = (
            select(
                t.c.id,
                t.c.secret_ref,
                t.c.organization_id,
                t.c.resource_id,
                t.c.rotation_version,
                t.c.key_id,
                t.c.wrapped_dek,
                t.c.nonce,
                t.c.ciphertext,
                t.c.payload_sha256,
            )
            .where(
                t.c.deleted_at.is_(None),
                t.c.key_id != target_key_id,
                # Keyset: continue after the last row handled instead of walking past
                # every row already rewrapped (which would make a run quadratic).
                t.c.id > after if after is not None else true(),
            )
            .order_by(t.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return self._s.connection().execute(query).all()

    def rewrap(self, new_key_id: str, rows: Sequence[Rewrapped]) -> int:
        """Point rows at their re-wrapped data keys in one statement, each only
        while it is still under its old key; returns how many were changed.

        psycopg2's execute_values straight on this transaction's connection:
        compiling a thousand-row VALUES through SQLAlchemy costs more than the
        cryptography of the batch.
        """
        if not rows:
            return 0
        cursor = self._s.connection().connection.cursor()
        try:
            execute_values(
                cursor,
                "UPDATE resource_secrets AS t SET key_id = v.new_key_id, wrapped_dek = v.wrapped, "
                "payload_sha256 = v.digest FROM (VALUES %s) AS v(id, old_key_id, new_key_id, wrapped, digest) "
                "WHERE t.id = v.id AND t.key_id = v.old_key_id",
                [(str(r.id), r.old_key_id, new_key_id, r.wrapped_dek, r.payload_sha256) for r in rows],
                template="(%s::uuid, %s, %s, %s::bytea, %s::bytea)",
                page_size=len(rows),
            )
            return int(cursor.rowcount)
        finally:
            cursor.close()
