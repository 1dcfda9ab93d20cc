"""Lease tokens: the signed proof that a worker holds a session's lease.

A lease token (audience ``rap-secret-resolver``) names the worker, the
session, its organization and resource, the secret_ref and the lease id.
It is signed when the Assignment goes out (again on every re-send), lives
as long as the lease's time to live, and is only half of the proof: the
resolver also checks the lease row, which heartbeats renew and which the
sweeper ends when it lapses.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from rap_common.errors import PermissionDenied
from rap_common.tokens import ISSUER, LEASE_AUDIENCE, TokenRejected, verify
from rap_control.db.engine import UnitOfWork
from rap_control.tokens.keyring import SigningKeyRing


@dataclass(frozen=True)
class LeaseClaims:
    worker_id: uuid.UUID
    session_id: uuid.UUID
    organization_id: uuid.UUID
    resource_id: uuid.UUID
    lease_id: uuid.UUID
    secret_ref: str


class LeaseTokens:
    def __init__(self, ring: SigningKeyRing, ttl_seconds: int) -> None:
        self._ring = ring
        self._ttl = ttl_seconds

    def issue(self, uow: UnitOfWork, claims: LeaseClaims) -> tuple[str, int]:
        """A signed lease token and its expiry (epoch seconds)."""
        token, _jti, exp = self._ring.sign(
            uow,
            {
                "sub": str(claims.worker_id),
                "wrk": str(claims.worker_id),
                "sid": str(claims.session_id),
                "org": str(claims.organization_id),
                "res": str(claims.resource_id),
                "lid": str(claims.lease_id),
                "ref": claims.secret_ref,
            },
            audience=LEASE_AUDIENCE,
            ttl_seconds=self._ttl,
        )
        return token, exp

    def verify(self, uow: UnitOfWork, token: str) -> LeaseClaims:
        """The claims of a lease token that verifies; PermissionDenied with a
        ``lease_token_<reason>`` reason code otherwise."""
        try:
            raw = verify(token, self._ring.jwks(uow), audience=LEASE_AUDIENCE, issuer=ISSUER)
        except TokenRejected as exc:
            reason = "lease_expired" if exc.reason == "expired" else f"lease_token_{exc.reason}"
            raise PermissionDenied(f"the lease token was refused: {exc.message}", reason=reason) from None
        return _claims(raw)


def _claims(raw: dict[str, Any]) -> LeaseClaims:
    try:
        return LeaseClaims(
            worker_id=uuid.UUID(raw["wrk"]),
            session_id=uuid.UUID(raw["sid"]),
            organization_id=uuid.UUID(raw["org"]),
            resource_id=uuid.UUID(raw["res"]),
            lease_id=uuid.UUID(raw["lid"]),
            secret_ref=str(raw["ref"]),
        )
    except (KeyError, ValueError, TypeError, AttributeError):
        raise PermissionDenied(
            "the lease token lacks the lease claims", reason="lease_token_malformed"
        ) from None
