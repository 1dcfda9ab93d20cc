"""Platform private keys sealed under the KEK: round trip, binding, tampering."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rap_common.errors import DataLoss
from rap_common.secrets import SecretBytes
from rap_control.keys import sealing
from rap_control.keys.local import LocalKeyProvider
from rap_control.keys.provider import UnknownKey

KEYS = LocalKeyProvider("kek-a", {"kek-a": SecretBytes(os.urandom(32))})


def _pem() -> SecretBytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SecretBytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def test_a_signing_key_round_trips_and_the_blob_hides_it() -> None:
    pem = _pem()
    blob = sealing.seal(KEYS, "kek-a", pem, purpose="signing_key", object_id="kid-1")
    assert b"PRIVATE KEY" not in blob
    assert sealing.unseal(KEYS, "kek-a", blob, purpose="signing_key", object_id="kid-1") == pem


@pytest.mark.parametrize(("purpose", "object_id"), [("platform_ca", "kid-1"), ("signing_key", "kid-2")])
def test_a_blob_opens_only_for_its_own_purpose_and_row(purpose: str, object_id: str) -> None:
    blob = sealing.seal(KEYS, "kek-a", SecretBytes(b"x" * 64), purpose="signing_key", object_id="kid-1")
    with pytest.raises(DataLoss):
        sealing.unseal(KEYS, "kek-a", blob, purpose=purpose, object_id=object_id)


@pytest.mark.parametrize("index", [0, 5, 40, 70, 80, -1])
def test_a_flipped_bit_is_an_integrity_error(index: int) -> None:
    blob = bytearray(
        sealing.seal(KEYS, "kek-a", SecretBytes(b"x" * 64), purpose="platform_ca", object_id="ca-1")
    )
    blob[index] ^= 1
    with pytest.raises(DataLoss):
        sealing.unseal(KEYS, "kek-a", bytes(blob), purpose="platform_ca", object_id="ca-1")


def test_an_unknown_kek_fails_closed() -> None:
    blob = sealing.seal(KEYS, "kek-a", SecretBytes(b"x"), purpose="platform_ca", object_id="ca-1")
    with pytest.raises(UnknownKey):
        sealing.unseal(KEYS, "kek-gone", blob, purpose="platform_ca", object_id="ca-1")
