"""The RS256 signing key ring: keys sealed under the KEK, a JWKS of public keys.

The ring holds an active key, which signs, and a next key, published in the
JWKS (and so on every worker) before it ever signs. Both are created on
first use (replicas that start together create them between them, under an
advisory lock). Rotation promotes next to active, retires the active key
(it stays published until every token it signed has expired) and creates a
new next key. Every token names its key in the ``kid`` header. A replica
re-reads which key is active every few seconds, so a rotation on another
replica takes effect here within that time; the retired key's overlap
covers the tokens signed meanwhile.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt
from jose.backends.base import Key
from sqlalchemy import insert, or_, select, text, update

from rap_common.secrets import SecretBytes
from rap_common.tokens import ALGORITHM, ISSUER
from rap_control.audit.service import AuditLog
from rap_control.audit.types import EventType
from rap_control.db import models as m
from rap_control.db.engine import UnitOfWork
from rap_control.keys import sealing
from rap_control.keys.provider import KeyProvider
from rap_control.keys.service import KeyService
from rap_control.principal import Actor

RSA_BITS = 3072
_RING_LOCK = 0x5241504A4B  # "RAPJK", for pg_advisory_xact_lock
# How long a replica trusts its cached idea of the active key.
ACTIVE_RECHECK_SECONDS = 5.0


def _b64(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(kid: str, key: rsa.RSAPublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    return {
        "kid": kid,
        "kty": "RSA",
        "alg": ALGORITHM,
        "use": "sig",
        "n": _b64(numbers.n),
        "e": _b64(numbers.e),
    }


@dataclass(frozen=True)
class ActiveKey:
    kid: str
    # The parsed key, kept: parsing a PEM RSA key checks its primes, which costs
    # tens of milliseconds, far more than a signature.
    signer: Key = field(repr=False)


@dataclass(frozen=True)
class Rotation:
    retired_kid: str
    active_kid: str
    next_kid: str
    publish_until: datetime


class SigningKeyRing:
    def __init__(self, provider: KeyProvider, keys: KeyService, audit: AuditLog | None = None) -> None:
        self._provider = provider
        self._keys = keys
        self._audit = audit or AuditLog()
        self._active: ActiveKey | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    def active(self, uow: UnitOfWork) -> ActiveKey:
        """The key that signs now, created on first use and cached.

        The cache only ever holds a committed key: a key this unit creates is
        cached once the unit commits, so that no other caller (a worker's
        Welcome, a gateway's fetch) is told of keys it cannot read yet; such
        a caller waits on the ring's advisory lock and then reads them.
        """
        with self._lock:
            now = time.monotonic()
            if self._active is not None and now - self._checked_at > ACTIVE_RECHECK_SECONDS:
                current = uow.session.scalar(select(m.SigningKey.kid).where(m.SigningKey.state == "active"))
                if current != self._active.kid:
                    self._active = None
                self._checked_at = now
            if self._active is not None:
                return self._active
        created = False
        row = self._active_row(uow)
        if row is None or self._next_row(uow) is None:
            uow.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _RING_LOCK})
            row = self._active_row(uow)
            if row is None:
                row, created = self._create(uow, "active"), True
            if self._next_row(uow) is None:
                self._create(uow, "next")
                created = True
        key = self._load(row)
        if created:
            uow.after_commit(lambda: self._cache(key))
        else:
            self._cache(key)
        return key

    def _cache(self, key: ActiveKey) -> None:
        with self._lock:
            self._active = key
            self._checked_at = time.monotonic()

    def _load(self, row: m.SigningKey) -> ActiveKey:
        pem = sealing.unseal(
            self._provider, row.key_id, row.sealed_private_key, purpose="signing_key", object_id=row.kid
        )
        try:
            private = serialization.load_pem_private_key(pem.reveal(), password=None)
        finally:
            pem.wipe()
        return ActiveKey(row.kid, jwk.construct(private, ALGORITHM))

    def sign(
        self, uow: UnitOfWork, claims: dict[str, Any], *, audience: str, ttl_seconds: int
    ) -> tuple[str, str, int]:
        """A signed token for ``audience``; returns (token, jti, exp)."""
        key = self.active(uow)
        now = int(time.time())
        jti = uuid.uuid4().hex
        body = {
            **claims,
            "iss": ISSUER,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "jti": jti,
        }
        token = jwt.encode(body, key.signer, algorithm=ALGORITHM, headers={"kid": key.kid})
        return token, jti, now + ttl_seconds

    def rotate(self, uow: UnitOfWork, actor: Actor, overlap_seconds: int) -> Rotation:
        """Promote the next key, retire the active one (published ``overlap_seconds``
        more, past the life of any token it signed) and create a new next key."""
        self.active(uow)  # both keys exist
        uow.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _RING_LOCK})
        active, upcoming = self._active_row(uow), self._next_row(uow)
        assert active is not None and upcoming is not None
        now = datetime.now(UTC)
        publish_until = now + timedelta(seconds=overlap_seconds)
        uow.session.execute(
            update(m.SigningKey)
            .where(m.SigningKey.kid == active.kid)
            .values(state="retired", retired_at=now, publish_until=publish_until)
        )
        uow.session.execute(
            update(m.SigningKey)
            .where(m.SigningKey.kid == upcoming.kid)
            .values(state="active", activated_at=now)
        )
        fresh = self._create(uow, "next")
        self._audit.record(
            uow,
            actor,
            EventType.SIGNING_KEY_ROTATED,
            target_type="signing_key",
            target_id=upcoming.kid,
            details={
                "retired_kid": active.kid,
                "next_kid": fresh.kid,
                "retired_published_until": publish_until.isoformat(),
            },
        )
        # Forget the old key once the rotation is committed (not before: a
        # caller meanwhile would cache the old key again, harmlessly, for 5 s).
        uow.after_commit(self._forget)
        return Rotation(active.kid, upcoming.kid, fresh.kid, publish_until)

    def _forget(self) -> None:
        with self._lock:
            self._active = None

    def jwks(self, uow: UnitOfWork) -> dict[str, dict[str, str]]:
        """Every published public key by kid: next, active, and retired ones still within their overlap.

        The ring's keys are created first if they do not exist yet, so that nobody
        (a worker's Welcome, a gateway) is handed an empty set that the first
        signature would then outdate.
        """
        self.active(uow)
        rows = uow.session.scalars(
            select(m.SigningKey).where(
                or_(m.SigningKey.state != "retired", m.SigningKey.publish_until > datetime.now(UTC))
            )
        ).all()
        return {row.kid: dict(row.public_jwk) for row in rows}

    @staticmethod
    def _active_row(uow: UnitOfWork) -> m.SigningKey | None:
        return uow.session.scalars(
            select(m.SigningKey).where(m.SigningKey.state == "active").limit(1)
        ).one_or_none()

    @staticmethod
    def _next_row(uow: UnitOfWork) -> m.SigningKey | None:
        return uow.session.scalars(
            select(m.SigningKey).where(m.SigningKey.state == "next").limit(1)
        ).one_or_none()

    def _create(self, uow: UnitOfWork, state: str) -> m.SigningKey:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        kid = secrets.token_urlsafe(12)
        pem = SecretBytes(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_id = self._keys.active_key_id(uow)
        try:
            sealed = sealing.seal(self._provider, key_id, pem, purpose="signing_key", object_id=kid)
        finally:
            pem.wipe()
        return uow.session.scalars(
            insert(m.SigningKey)
            .values(
                kid=kid,
                state=state,
                key_id=key_id,
                sealed_private_key=sealed,
                public_jwk=public_jwk(kid, private.public_key()),
                activated_at=datetime.now(UTC) if state == "active" else None,
            )
            .returning(m.SigningKey)
        ).one()
