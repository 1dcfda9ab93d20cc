"""Verification of RAP's signed tokens (data-plane and lease tokens), with public keys only.

The algorithm is fixed here, never read from the token: the header must
say RS256 and name a ``kid`` of the key set, and the signature is checked
with that RSA public key alone. So ``alg: none``, an HS256 token whose
HMAC key is the public key's PEM, and a token from an unknown or retired
key are all refused, each with its own reason code (what the worker
reports and the control plane audits).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from jose import jwk, jwt
from jose.exceptions import ExpiredSignatureError, JWTClaimsError, JWTError

from rap_common.errors import Unauthenticated

ALGORITHM = "RS256"
# Who signs every RAP token: the control plane.
ISSUER = "rap-control-plane"
LEASE_AUDIENCE = "rap-secret-resolver"
DATA_PLANE_AUDIENCE = "rap-data-plane"


class TokenRejected(Unauthenticated):
    """A token that does not verify; ``reason`` says why (never echoing the token)."""


def _refuse(reason: str, message: str) -> TokenRejected:
    return TokenRejected(message, reason=reason)


# Public keys parsed from their JWK, by (kid, n, e): python-jose rebuilds the
# modulus from bytes in pure Python on every call otherwise, which costs more
# than the RSA verification itself. Public keys only; bounded.
_PARSED: dict[tuple[str, str, str], Any] = {}


def _public_key(kid: str, key: Mapping[str, Any]) -> Any:
    cache_key = (kid, str(key.get("n", "")), str(key.get("e", "")))
    parsed = _PARSED.get(cache_key)
    if parsed is None:
        if len(_PARSED) > 256:
            _PARSED.clear()
        parsed = jwk.construct(dict(key), ALGORITHM)
        _PARSED[cache_key] = parsed
    return parsed


def verify(
    token: str,
    keys: Mapping[str, Mapping[str, Any]],
    *,
    audience: str,
    issuer: str,
    leeway: int = 0,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of ``token`` if it verifies under the JWK set ``keys`` (kid -> public JWK).

    Raises TokenRejected with reason malformed, wrong_alg, unknown_kid,
    bad_signature, expired, not_yet_valid, wrong_audience or wrong_issuer.
    """
    try:
        header = jwt.get_unverified_header(token)
    except JWTError:
        raise _refuse("malformed", "the token is not a signed JWT") from None
    if header.get("alg") != ALGORITHM:
        raise _refuse("wrong_alg", f"the token must be signed with {ALGORITHM}")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        raise _refuse("unknown_kid", "the token's signing key is not (or no longer) published")
    key = keys[kid]
    if key.get("kty") != "RSA" or key.get("alg", ALGORITHM) != ALGORITHM:
        raise _refuse("wrong_alg", "the published key for this kid is not an RS256 key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            _public_key(kid, key),
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            options={"leeway": leeway, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except JWTClaimsError as exc:
        text = str(exc).lower()
        reason = "wrong_issuer" if "issuer" in text else "wrong_audience"
        raise _refuse(
            reason, f"the token is not for this {'issuer' if reason == 'wrong_issuer' else 'audience'}"
        ) from None
    except (JWTError, ExpiredSignatureError):
        raise _refuse("bad_signature", "the token's signature does not verify") from None
    current = time.time() if now is None else now
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not isinstance(exp, int | float):
        raise _refuse("malformed", "the token has no expiry")
    if current > exp + leeway:
        raise _refuse("expired", "the token has expired")
    if isinstance(nbf, int | float) and current + leeway < nbf:
        raise _refuse("not_yet_valid", "the token is not valid yet")
    return claims
