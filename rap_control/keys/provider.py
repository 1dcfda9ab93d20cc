"""The key-provider interface and its errors.

A provider holds key-encryption keys (KEKs) by id and does three things
with them: wrap a data key, unwrap it, and derive the key that HMACs
payloads. A KEK's material may never leave the provider (PKCS#11).

Wrapped data keys have one format for every provider:
``nonce (12) || AES-256-GCM(KEK, data key, aad) || tag (16)``.
"""

from __future__ import annotations

from typing import Protocol

from rap_common.errors import DataLoss, FailedPrecondition
from rap_common.secrets import SecretBytes

NONCE_BYTES = 12
TAG_BYTES = 16
DEK_BYTES = 32
# The label whose AES-ECB encryption under a KEK is that KEK's digest key.
# A block cipher as a PRF over a fixed label works the same inside a token.
DIGEST_LABEL = b"rap/v1/payload-digest-key\x00\x00\x00\x00\x00\x00\x00"
assert len(DIGEST_LABEL) == 32


class UnknownKey(FailedPrecondition):
    """A row names a key id this provider does not have: refuse, never guess."""

    default_reason = "unknown_key_id"


def integrity_error(what: str) -> DataLoss:
    return DataLoss(f"{what} failed its integrity check and was not used", reason="integrity_check_failed")


class KeyProvider(Protocol):
    """What the secret store needs from a key-encryption-key provider."""

    name: str

    @property
    def primary_key_id(self) -> str:
        """The key whose material start-up was given; active unless an operator chose another."""
        ...

    def key_ids(self) -> list[str]:
        """Every key id this provider can unwrap with."""
        ...

    def wrap(self, key_id: str, data_key: SecretBytes, aad: bytes) -> bytes:
        """Wrap a 32-byte data key under KEK ``key_id``. Raises UnknownKey."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> SecretBytes:
        """Unwrap; raises UnknownKey, or DataLoss when the blob or aad does not verify."""
        ...

    def digest_key(self, key_id: str) -> SecretBytes:
        """The HMAC key derived from KEK ``key_id``. Raises UnknownKey."""
        ...

    def close(self) -> None:
        """Drop key material or sessions held."""
        ...
