"""The local key provider: KEKs held in process memory, from a key and a keyring file."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rap_common.secrets import SecretBytes
from rap_control.keys.provider import (
    DEK_BYTES,
    DIGEST_LABEL,
    NONCE_BYTES,
    UnknownKey,
    integrity_error,
)


class LocalKeyProvider:
    """KEKs given as 32-byte keys: the primary one, and older decrypt-only ones."""

    name = "local"

    def __init__(self, primary_key_id: str, keys: dict[str, SecretBytes]) -> None:
        if primary_key_id not in keys:
            raise ValueError("the primary key id must be among the keys")
        self._primary = primary_key_id
        self._keys = dict(keys)
        self._aead = {key_id: AESGCM(key.reveal()) for key_id, key in self._keys.items()}
        self._digest: dict[str, SecretBytes] = {}

    @property
    def primary_key_id(self) -> str:
        return self._primary

    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def _cipher(self, key_id: str) -> AESGCM:
        try:
            return self._aead[key_id]
        except KeyError:
            raise UnknownKey(
                f"encryption key {key_id!r} is not configured here; add it to the keyring to read its secrets"
            ) from None

    def wrap(self, key_id: str, data_key: SecretBytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._cipher(key_id).encrypt(nonce, data_key.reveal(), aad)

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> SecretBytes:
        cipher = self._cipher(key_id)
        try:
            data_key = cipher.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError):
            raise integrity_error("a wrapped data key") from None
        if len(data_key) != DEK_BYTES:
            raise integrity_error("a wrapped data key")
        return SecretBytes(data_key)

    def digest_key(self, key_id: str) -> SecretBytes:
        if key_id not in self._digest:
            self._cipher(key_id)  # UnknownKey
            encryptor = Cipher(algorithms.AES(self._keys[key_id].reveal()), modes.ECB()).encryptor()  # noqa: S305 - a PRF over one fixed label, not encryption of data
            self._digest[key_id] = SecretBytes(encryptor.update(DIGEST_LABEL) + encryptor.finalize())
        return self._digest[key_id]

    def close(self) -> None:
        for key in (*self._keys.values(), *self._digest.values()):
            key.wipe()
        self._aead.clear()
        self._digest.clear()
