"""Token verification with public keys only: every refusal, each with its reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st
from jose import jwt

from rap_common.tokens import TokenRejected, verify
from rap_control.tokens.keyring import ISSUER, public_jwk

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PUBLIC_PEM = KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
KEYS = {"k1": public_jwk("k1", KEY.public_key())}
AUD = "rap-secret-resolver"


def _token(**overrides: object) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUD, "sub": "worker", "iat": now, "nbf": now, "exp": now + 60, "jti": "j"}
    headers = {"kid": overrides.pop("kid", "k1")}
    claims.update(overrides)
    return jwt.encode(claims, PEM, algorithm="RS256", headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _handmade(header: dict[str, str], secret: bytes | None) -> str:
    """A token jose would refuse to make: alg none, or HS256 keyed with the public key."""
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUD, "iat": now, "exp": now + 60}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"
    signature = _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()) if secret else ""
    return f"{signing_input}.{signature}"


def _reason(token: str, **kwargs: object) -> str:
    with pytest.raises(TokenRejected) as info:
        verify(
            token, KEYS, audience=kwargs.pop("audience", AUD), issuer=kwargs.pop("issuer", ISSUER), **kwargs
        )  # type: ignore[arg-type]
    assert token not in info.value.message
    return info.value.reason


def test_a_good_token_verifies() -> None:
    assert verify(_token(), KEYS, audience=AUD, issuer=ISSUER)["sub"] == "worker"


def test_alg_none_is_refused() -> None:
    assert _reason(_handmade({"alg": "none", "kid": "k1"}, None)) == "wrong_alg"


def test_hs256_keyed_with_the_public_key_is_refused() -> None:
    assert _reason(_handmade({"alg": "HS256", "kid": "k1", "typ": "JWT"}, PUBLIC_PEM)) == "wrong_alg"


def test_another_keys_signature_under_a_known_kid_is_refused() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    forged = jwt.encode(
        {"iss": ISSUER, "aud": AUD, "exp": int(time.time()) + 60},
        pem.decode(),
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    assert _reason(forged) == "bad_signature"


@pytest.mark.parametrize(
    ("token", "kwargs", "reason"),
    [
        (lambda: _token(kid="k-retired"), {}, "unknown_kid"),
        (lambda: _token(exp=int(time.time()) - 5), {}, "expired"),
        (lambda: _token(nbf=int(time.time()) + 60), {}, "not_yet_valid"),
        (lambda: _token(), {"audience": "rap-data-plane"}, "wrong_audience"),
        (lambda: _token(), {"issuer": "someone-else"}, "wrong_issuer"),
        (lambda: "not.a.token", {}, "malformed"),
    ],
    ids=["unknown-kid", "expired", "not-yet-valid", "wrong-audience", "wrong-issuer", "malformed"],
)
def test_each_refusal_has_its_reason(token, kwargs: dict[str, object], reason: str) -> None:  # type: ignore[no-untyped-def]
    assert _reason(token(), **kwargs) == reason


def _segments(token: str) -> list[bytes | None]:
    out: list[bytes | None] = []
    for part in token.split("."):
        try:
            out.append(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        except ValueError:
            out.append(None)
    return out


@given(st.data())
def test_any_tampered_byte_is_refused(data: st.DataObject) -> None:
    token = _token()
    index = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from("ABCabc012-_"))
    tampered = token[:index] + replacement + token[index + 1 :]
    if _segments(tampered) == _segments(token):
        return  # the last character of a segment can carry unused bits: same bytes, same token
    with pytest.raises(TokenRejected):
        verify(tampered, KEYS, audience=AUD, issuer=ISSUER)
