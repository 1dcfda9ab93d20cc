"""Seal and open private keys of the platform (data-plane signing keys, the
platform CA key) under the same KEKs as resource secrets.

A sealed blob is ``b"RSB1" || wrapped data key (60) || nonce (12) ||
AES-256-GCM(data key, plaintext, aad)``, stored beside the id of the KEK
that wraps it. The associated data names the purpose and the object id, so
a blob copied onto another row, or used for another purpose, fails to open.
"""

from __future__ import annotations

import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rap_common.secrets import SecretBytes
from rap_control.keys.provider import DEK_BYTES, NONCE_BYTES, TAG_BYTES, KeyProvider, integrity_error

MAGIC = b"RSB1"
PURPOSES = frozenset({"signing_key", "platform_ca"})
_WRAPPED = NONCE_BYTES + DEK_BYTES + TAG_BYTES


def _aad(purpose: str, object_id: str, key_id: str) -> bytes:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown sealing purpose {purpose!r}")
    return json.dumps(
        {"id": object_id, "kek": key_id, "purpose": purpose, "v": 1}, sort_keys=True, separators=(",", ":")
    ).encode()


def seal(
    provider: KeyProvider, key_id: str, plaintext: SecretBytes, *, purpose: str, object_id: str
) -> bytes:
    """Encrypt ``plaintext`` (a private key) for the row ``object_id`` of ``purpose``."""
    aad = _aad(purpose, object_id, key_id)
    dek = SecretBytes(AESGCM.generate_key(bit_length=256))
    try:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(dek.reveal()).encrypt(nonce, plaintext.reveal(), aad)
        wrapped = provider.wrap(key_id, dek, aad)
    finally:
        dek.wipe()
    return MAGIC + wrapped + nonce + sealed


def unseal(provider: KeyProvider, key_id: str, blob: bytes, *, purpose: str, object_id: str) -> SecretBytes:
    """Open a sealed blob; DataLoss if it was altered or belongs elsewhere, UnknownKey if its KEK is not here."""
    aad = _aad(purpose, object_id, key_id)
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _WRAPPED + NONCE_BYTES + TAG_BYTES:
        raise integrity_error(f"the sealed {purpose} {object_id}")
    body = blob[len(MAGIC) :]
    dek = provider.unwrap(key_id, body[:_WRAPPED], aad)
    try:
        nonce, sealed = body[_WRAPPED : _WRAPPED + NONCE_BYTES], body[_WRAPPED + NONCE_BYTES :]
        return SecretBytes(AESGCM(dek.reveal()).decrypt(nonce, sealed, aad))
    except InvalidTag:
        raise integrity_error(f"the sealed {purpose} {object_id}") from None
    finally:
        dek.wipe()
