"""Envelope encryption of secret payloads (DESIGN.md, "Secrets").

Each write draws a fresh 256-bit data key (DEK) and a fresh nonce. The
payload is AES-256-GCM encrypted under the DEK with associated data that
binds it to its row: (secret_ref, organization_id, resource_id,
rotation_version), so a ciphertext copied onto another row fails to
decrypt. The DEK is wrapped by the KEK ``key_id`` with associated data
naming the key and the secret_ref, so a wrapped key copied elsewhere fails
too. ``payload_sha256`` is HMAC-SHA256 of the payload under a key derived
from the KEK: a bare hash of a password would be a guessing oracle.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rap_common.secrets import SecretBytes
from rap_control.keys.provider import DEK_BYTES, NONCE_BYTES, KeyProvider, integrity_error

ALGORITHM = "AES-256-GCM"


@dataclass(frozen=True)
class Binding:
    """What a ciphertext is bound to: the row it belongs in."""

    secret_ref: str
    organization_id: uuid.UUID
    resource_id: uuid.UUID
    rotation_version: int

    def payload_aad(self) -> bytes:
        return json.dumps(
            {
                "alg": ALGORITHM,
                "org": str(self.organization_id),
                "ref": self.secret_ref,
                "res": str(self.resource_id),
                "rot": self.rotation_version,
                "v": 1,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    def dek_aad(self, key_id: str) -> bytes:
        return json.dumps(
            {"kek": key_id, "ref": self.secret_ref, "v": 1}, sort_keys=True, separators=(",", ":")
        ).encode()


@dataclass(frozen=True)
class Sealed:
    """The stored columns of an encrypted payload."""

    key_id: str
    wrapped_dek: bytes
    nonce: bytes
    ciphertext: bytes
    payload_sha256: bytes


def digest(provider: KeyProvider, key_id: str, payload: SecretBytes) -> bytes:
    return hmac.new(provider.digest_key(key_id).reveal(), payload.reveal(), hashlib.sha256).digest()


def seal(provider: KeyProvider, key_id: str, binding: Binding, payload: SecretBytes) -> Sealed:
    """Encrypt ``payload`` for the row ``binding`` names, under KEK ``key_id``."""
    dek = SecretBytes(AESGCM.generate_key(bit_length=256))
    try:
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(dek.reveal()).encrypt(nonce, payload.reveal(), binding.payload_aad())
        wrapped = provider.wrap(key_id, dek, binding.dek_aad(key_id))
    finally:
        dek.wipe()
    return Sealed(key_id, wrapped, nonce, ciphertext, digest(provider, key_id, payload))


def unwrap_dek(provider: KeyProvider, binding: Binding, key_id: str, wrapped_dek: bytes) -> SecretBytes:
    dek = provider.unwrap(key_id, wrapped_dek, binding.dek_aad(key_id))
    if len(dek) != DEK_BYTES:
        dek.wipe()
        raise integrity_error("a wrapped data key")
    return dek


def decrypt_with(dek: SecretBytes, binding: Binding, nonce: bytes, ciphertext: bytes) -> SecretBytes:
    try:
        return SecretBytes(AESGCM(dek.reveal()).decrypt(nonce, ciphertext, binding.payload_aad()))
    except (InvalidTag, ValueError):
        raise integrity_error(f"the secret {binding.secret_ref}") from None


def open_sealed(provider: KeyProvider, binding: Binding, sealed: Sealed) -> SecretBytes:
    """Decrypt and verify; DataLoss for any mismatch, UnknownKey for a key not here."""
    dek = unwrap_dek(provider, binding, sealed.key_id, sealed.wrapped_dek)
    try:
        payload = decrypt_with(dek, binding, sealed.nonce, sealed.ciphertext)
    finally:
        dek.wipe()
    if not hmac.compare_digest(digest(provider, sealed.key_id, payload), sealed.payload_sha256):
        payload.wipe()
        raise integrity_error(f"the digest of the secret {binding.secret_ref}")
    return payload
