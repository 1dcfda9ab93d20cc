"""The PKCS#11 key provider: KEKs that never leave a hardware (or SoftHSM2) token.

A KEK is an AES-256 secret key object on the token whose label is its key
id, generated there as sensitive and non-extractable. Data keys are wrapped
with CKM_AES_GCM through the token; a tampered blob comes back from the
token as a generic error, mapped here to the integrity error.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from rap_common.errors import ConfigError
from rap_common.secrets import SecretBytes, SecretStr
from rap_control.keys.provider import (
    DEK_BYTES,
    DIGEST_LABEL,
    NONCE_BYTES,
    TAG_BYTES,
    UnknownKey,
    integrity_error,
)


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise ConfigError(
            "SECRET_KEY_PROVIDER=pkcs11 needs the python-pkcs11 package: pip install 'rap-control-plane[pkcs11]'"
        ) from None
    return pkcs11


class Pkcs11KeyProvider:
    """KEKs on a PKCS#11 token, found by label."""

    name = "pkcs11"

    def __init__(self, module: Path, token_label: str, pin: SecretStr, primary_key_id: str) -> None:
        pkcs11 = _pkcs11()
        self._p = pkcs11
        try:
            lib = pkcs11.lib(str(module))
        except RuntimeError:
            raise ConfigError("PKCS11_MODULE does not name a loadable PKCS#11 module") from None
        try:
            token = lib.get_token(token_label=token_label)
        except (pkcs11.NoSuchToken, pkcs11.MultipleTokensReturned):
            raise ConfigError("PKCS11_TOKEN_LABEL names no token (or several) in that module") from None
        try:
            self._session = token.open(user_pin=pin.reveal(), rw=True)
        except pkcs11.UserAlreadyLoggedIn:
            # PKCS#11 logins are per process: another session here logged in already.
            self._session = token.open(rw=True)
        except pkcs11.PinIncorrect:
            raise ConfigError("the PIN in PKCS11_PIN_FILE is not accepted by the token") from None
        except (pkcs11.PinLocked, pkcs11.PinExpired):
            raise ConfigError("the token's user PIN is locked or expired") from None
        self._lock = threading.Lock()  # one PKCS#11 session: calls are serialised
        self._keys: dict[str, Any] = {}
        self._digest: dict[str, SecretBytes] = {}
        self._primary = primary_key_id
        self._key(primary_key_id, startup=True)

    @property
    def primary_key_id(self) -> str:
        return self._primary

    def key_ids(self) -> list[str]:
        p = self._p
        with self._lock:
            labels = {
                obj.label
                for obj in self._session.get_objects(
                    {p.Attribute.CLASS: p.ObjectClass.SECRET_KEY, p.Attribute.KEY_TYPE: p.KeyType.AES}
                )
            }
        return sorted(labels)

    def _key(self, key_id: str, *, startup: bool = False) -> Any:
        if key_id in self._keys:
            return self._keys[key_id]
        p = self._p
        try:
            with self._lock:
                key = self._session.get_key(
                    label=key_id, key_type=p.KeyType.AES, object_class=p.ObjectClass.SECRET_KEY
                )
        except p.NoSuchKey:
            if startup:
                raise ConfigError(
                    "SECRET_ENCRYPTION_KEY_ID names no AES key on the PKCS#11 token "
                    "(create it with `rapctl keys generate`)"
                ) from None
            raise UnknownKey(f"encryption key {key_id!r} is not on the PKCS#11 token") from None
        except p.MultipleObjectsReturned:
            raise ConfigError(f"several keys on the token are labelled {key_id!r}") from None
        self._keys[key_id] = key
        return key

    def wrap(self, key_id: str, data_key: SecretBytes, aad: bytes) -> bytes:
        p = self._p
        key = self._key(key_id)
        nonce = os.urandom(NONCE_BYTES)
        with self._lock:
            sealed = key.encrypt(
                data_key.reveal(), mechanism=p.Mechanism.AES_GCM, mechanism_param=p.GCMParams(nonce, aad, 128)
            )
        return nonce + bytes(sealed)

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> SecretBytes:
        p = self._p
        key = self._key(key_id)
        if len(wrapped) != NONCE_BYTES + DEK_BYTES + TAG_BYTES:
            raise integrity_error("a wrapped data key")
        try:
            with self._lock:
                data_key = key.decrypt(
                    wrapped[NONCE_BYTES:],
                    mechanism=p.Mechanism.AES_GCM,
                    mechanism_param=p.GCMParams(wrapped[:NONCE_BYTES], aad, 128),
                )
        except p.PKCS11Error:
            raise integrity_error("a wrapped data key") from None
        return SecretBytes(bytes(data_key))

    def digest_key(self, key_id: str) -> SecretBytes:
        if key_id not in self._digest:
            key = self._key(key_id)
            with self._lock:
                derived = key.encrypt(DIGEST_LABEL, mechanism=self._p.Mechanism.AES_ECB)
            self._digest[key_id] = SecretBytes(bytes(derived))
        return self._digest[key_id]

    def close(self) -> None:
        for key in self._digest.values():
            key.wipe()
        self._digest.clear()
        self._keys.clear()
        self._session.close()


def generate_token_key(module: Path, token_label: str, pin: SecretStr, key_id: str) -> None:
    """Create KEK ``key_id`` on the token: AES-256, sensitive, never extractable."""
    p = _pkcs11()
    token = p.lib(str(module)).get_token(token_label=token_label)
    with token.open(user_pin=pin.reveal(), rw=True) as session:
        existing = list(
            session.get_objects({p.Attribute.LABEL: key_id, p.Attribute.CLASS: p.ObjectClass.SECRET_KEY})
        )
        if existing:
            raise ConfigError(f"the token already has a key labelled {key_id!r}")
        session.generate_key(
            p.KeyType.AES,
            256,
            label=key_id,
            store=True,
            template={
                p.Attribute.SENSITIVE: True,
                p.Attribute.EXTRACTABLE: False,
                p.Attribute.ENCRYPT: True,
                p.Attribute.DECRYPT: True,
            },
        )
