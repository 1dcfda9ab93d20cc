"""The platform CA: created once, its key sealed under the KEK, loaded when needed.

Replicas that start together create one CA between them: creation takes a
transaction-level advisory lock, and the loser finds the winner's row.
The CA key lives in memory of the control plane only while it signs, as an
object whose repr says nothing.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import insert, select, text

from rap_common.secrets import SecretBytes
from rap_control.db import models as m
from rap_control.db.engine import UnitOfWork
from rap_control.keys import sealing
from rap_control.keys.provider import KeyProvider
from rap_control.keys.service import KeyService
from rap_control.pki import certificates
from rap_control.pki.certificates import PrivateKey

# pg_advisory_xact_lock key: "RAPCA" as a number, so that it is recognisable in pg_locks.
_CA_LOCK = 0x5241504341


@dataclass(frozen=True)
class LoadedCa:
    id: uuid.UUID
    certificate: x509.Certificate
    key: PrivateKey = field(repr=False)

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


class CertificateAuthority:
    def __init__(self, provider: KeyProvider, keys: KeyService) -> None:
        self._provider = provider
        self._keys = keys
        self._loaded: LoadedCa | None = None
        self._lock = threading.Lock()

    def get(self, uow: UnitOfWork) -> LoadedCa:
        """The platform CA, created on first use and cached afterwards.

        A CA this unit creates is cached only once the unit commits: a
        rolled-back CA must never sign anything, and another caller waits
        on the advisory lock for the committed one.
        """
        with self._lock:
            if self._loaded is not None:
                return self._loaded
        row = self._current(uow)
        created = False
        if row is None:
            uow.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CA_LOCK})
            row = self._current(uow)
            if row is None:
                row, created = self._create(uow), True
        loaded = self._load(row)
        if created:
            uow.after_commit(lambda: self._cache(loaded))
        else:
            self._cache(loaded)
        return loaded

    def _cache(self, loaded: LoadedCa) -> None:
        with self._lock:
            self._loaded = loaded

    def _load(self, row: m.PlatformCa) -> LoadedCa:
        pem = sealing.unseal(
            self._provider, row.key_id, row.sealed_private_key, purpose="platform_ca", object_id=str(row.id)
        )
        try:
            key = serialization.load_pem_private_key(pem.reveal(), password=None)
        finally:
            pem.wipe()
        assert isinstance(key, PrivateKey)
        return LoadedCa(row.id, x509.load_pem_x509_certificate(row.certificate_pem.encode()), key)

    @staticmethod
    def _current(uow: UnitOfWork) -> m.PlatformCa | None:
        return uow.session.scalars(
            select(m.PlatformCa)
            .where(m.PlatformCa.retired_at.is_(None))
            .order_by(m.PlatformCa.created_at.desc())
            .limit(1)
        ).one_or_none()

    def _create(self, uow: UnitOfWork) -> m.PlatformCa:
        key, certificate = certificates.new_ca(dt.datetime.now(dt.UTC))
        ca_id = uuid.uuid4()
        pem = SecretBytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_id = self._keys.active_key_id(uow)
        try:
            sealed = sealing.seal(self._provider, key_id, pem, purpose="platform_ca", object_id=str(ca_id))
        finally:
            pem.wipe()
        return uow.session.scalars(
            insert(m.PlatformCa)
            .values(
                id=ca_id,
                key_id=key_id,
                sealed_private_key=sealed,
                certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
                not_after=certificate.not_valid_after_utc,
            )
            .returning(m.PlatformCa)
        ).one()
