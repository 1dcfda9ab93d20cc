"""Envelope encryption: round trips, bindings, tampering, unknown keys. No I/O."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rap_common.errors import DataLoss
from rap_common.secrets import SecretBytes, SecretStr
from rap_control.keys.local import LocalKeyProvider
from rap_control.keys.provider import UnknownKey
from rap_control.secrets import envelope, payload
from rap_control.secrets.types import RdpCredential, SshCredential, VncCredential

KEYS = LocalKeyProvider("kek-a", {"kek-a": SecretBytes(os.urandom(32)), "kek-b": SecretBytes(os.urandom(32))})
ORG, RES = uuid.uuid4(), uuid.uuid4()
BINDING = envelope.Binding(f"rap-secret://org/{ORG}/resources/{RES}/default", ORG, RES, 1)

texts = st.text(max_size=40)  # any Unicode, empty included
secrets_ = texts.map(SecretStr)
credentials = st.one_of(
    st.builds(RdpCredential, texts, texts, secrets_),
    st.builds(SshCredential, texts, secrets_, secrets_, secrets_),
    st.builds(VncCredential, texts, secrets_),
)


def _reveal(credential: object) -> dict[str, str]:
    return {k: v.reveal() if isinstance(v, SecretStr) else v for k, v in vars(credential).items()}


@given(credentials)
def test_every_credential_type_round_trips(credential) -> None:  # type: ignore[no-untyped-def]
    encoded = payload.encode(credential)
    sealed = envelope.seal(KEYS, "kek-a", BINDING, encoded)
    opened = payload.decode(envelope.open_sealed(KEYS, BINDING, sealed))
    assert type(opened) is type(credential)
    assert _reveal(opened) == _reveal(credential)


def test_each_write_draws_a_fresh_data_key_and_nonce() -> None:
    encoded = payload.encode(VncCredential("", SecretStr("same")))
    one, two = (envelope.seal(KEYS, "kek-a", BINDING, encoded) for _ in range(2))
    assert one.nonce != two.nonce
    assert one.wrapped_dek != two.wrapped_dek
    assert one.ciphertext != two.ciphertext
    assert one.payload_sha256 == two.payload_sha256


def test_the_digest_is_keyed_not_a_bare_hash() -> None:
    encoded = payload.encode(VncCredential("", SecretStr("hunter2")))
    digest_a = envelope.digest(KEYS, "kek-a", encoded)
    assert digest_a != hashlib.sha256(encoded.reveal()).digest()
    assert digest_a != envelope.digest(KEYS, "kek-b", encoded)


def _sealed() -> envelope.Sealed:
    return envelope.seal(KEYS, "kek-a", BINDING, payload.encode(VncCredential("u", SecretStr("p"))))


@pytest.mark.parametrize(
    "other",
    [
        dataclasses.replace(BINDING, resource_id=uuid.uuid4()),
        dataclasses.replace(BINDING, organization_id=uuid.uuid4()),
        dataclasses.replace(BINDING, rotation_version=2),
        dataclasses.replace(BINDING, secret_ref=BINDING.secret_ref.replace("default", "other")),
    ],
)
def test_a_ciphertext_moved_to_another_binding_fails_its_integrity_check(other: envelope.Binding) -> None:
    with pytest.raises(DataLoss):
        envelope.open_sealed(KEYS, other, _sealed())


@pytest.mark.parametrize(
    ("field", "index"),
    [
        ("ciphertext", 0),
        ("ciphertext", -1),
        ("nonce", 0),
        ("wrapped_dek", 0),
        ("wrapped_dek", 15),
        ("wrapped_dek", -1),
        ("payload_sha256", 3),
    ],
    ids=["ciphertext", "tag", "nonce", "wrapped-nonce", "wrapped-key", "wrapped-tag", "digest"],
)
def test_a_flipped_bit_anywhere_fails_and_never_yields_plaintext(field: str, index: int) -> None:
    sealed = _sealed()
    flipped = bytearray(getattr(sealed, field))
    flipped[index] ^= 0x01
    with pytest.raises(DataLoss) as info:
        envelope.open_sealed(KEYS, BINDING, dataclasses.replace(sealed, **{field: bytes(flipped)}))
    assert info.value.reason == "integrity_check_failed"


def test_an_unknown_key_id_fails_closed() -> None:
    sealed = dataclasses.replace(_sealed(), key_id="kek-gone")
    with pytest.raises(UnknownKey) as info:
        envelope.open_sealed(KEYS, BINDING, sealed)
    assert "kek-gone" in info.value.message
    with pytest.raises(UnknownKey):
        envelope.seal(KEYS, "kek-gone", BINDING, payload.encode(VncCredential("", SecretStr("x"))))


def test_a_wrapped_key_under_one_kek_does_not_open_under_another() -> None:
    sealed = _sealed()
    with pytest.raises(DataLoss):
        envelope.open_sealed(KEYS, BINDING, dataclasses.replace(sealed, key_id="kek-b"))


def test_credentials_print_redacted() -> None:
    credential = SshCredential("root", SecretStr("S3cret-canary"), SecretStr("-----BEGIN"), SecretStr(""))
    assert "S3cret" not in repr(credential) and "BEGIN" not in str(credential)
