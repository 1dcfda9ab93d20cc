"""The RS256 signing key ring: keys sealed under the KEK, a JWKS of public keys.

The first key is created on first use (replicas that start together
create one between them, under an advisory lock). Every token names its
key in the ``kid`` header. Rotation (a next key published before it signs,
a retired key published until its tokens have expired) builds on the
``state`` and ``publish_until`` columns.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt
from jose.backends.base import Key
from sqlalchemy import insert, or_, select, text

from rap_common.secrets import SecretBytes
from rap_common.tokens import ALGORITHM
from rap_control.db import models as m
from rap_control.db.engine import UnitOfWork
from rap_control.keys import sealing
from rap_control.keys.provider import KeyProvider
from rap_control.keys.service import KeyService

RSA_BITS = 3072
ISSUER = "rap-control-plane"
_RING_LOCK = 0x5241504A4B  # "RAPJK", for pg_advisory_xact_lock


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


class SigningKeyRing:
    def __init__(self, provider: KeyProvider, keys: KeyService) -> None:
        self._provider = provider
        self._keys = keys
        self._active: ActiveKey | None = None
        self._lock = threading.Lock()

    def active(self, uow: UnitOfWork) -> ActiveKey:
        """The key that signs now, created on first use and cached."""
        with self._lock:
            if self._active is None:
                row = self._active_row(uow)
                if row is None:
                    uow.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _RING_LOCK})
                    row = self._active_row(uow) or self._create(uow)
                pem = sealing.unseal(
                    self._provider,
                    row.key_id,
                    row.sealed_private_key,
                    purpose="signing_key",
                    object_id=row.kid,
                )
                try:
                    private = serialization.load_pem_private_key(pem.reveal(), password=None)
                finally:
                    pem.wipe()
                self._active = ActiveKey(row.kid, jwk.construct(private, ALGORITHM))
            return self._active

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

    def jwks(self, uow: UnitOfWork) -> dict[str, dict[str, str]]:
        """Every published public key by kid: next, active, and retired ones still within their overlap."""
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

    def _create(self, uow: UnitOfWork) -> m.SigningKey:
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
                state="active",
                key_id=key_id,
                sealed_private_key=sealed,
                public_jwk=public_jwk(kid, private.public_key()),
                activated_at=datetime.now(UTC),
            )
            .returning(m.SigningKey)
        ).one()
