"""Key-encryption-key settings, read and checked at start-up.

| variable | meaning |
| --- | --- |
| SECRET_KEY_PROVIDER | ``local`` (default) or ``pkcs11`` |
| SECRET_ENCRYPTION_KEY_ID | id of the primary KEK (for pkcs11: its label on the token) |
| SECRET_ENCRYPTION_KEY_B64 | local: the primary KEK, 32 bytes in base64 |
| SECRET_ENCRYPTION_KEY_FILE | local: a file holding it (32 raw bytes, or base64) |
| SECRET_ENCRYPTION_KEYRING_FILE | local: JSON ``{"key id": "base64 key"}`` of older, decrypt-only KEKs |
| PKCS11_MODULE, PKCS11_TOKEN_LABEL, PKCS11_PIN_FILE | pkcs11: the module, the token, a file holding the user PIN |

Every error names the variable and never echoes a value.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rap_common.errors import ConfigError
from rap_common.secrets import SecretBytes, SecretStr

KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KEY_BYTES = 32


def _decode_key(text: str | bytes, name: str) -> SecretBytes:
    raw = text.strip() if isinstance(text, bytes) else text.strip().encode()
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{name} must hold a {KEY_BYTES}-byte key (it holds {len(key)} bytes)")
    return SecretBytes(key)


def _read(path_text: str, name: str) -> bytes:
    path = Path(path_text).expanduser()
    try:
        return path.read_bytes()
    except OSError:
        raise ConfigError(f"{name} names a file that does not exist or cannot be read") from None


def check_key_id(key_id: str, name: str = "SECRET_ENCRYPTION_KEY_ID") -> str:
    if not KEY_ID.fullmatch(key_id):
        raise ConfigError(f"{name} must be 1-64 characters of letters, digits, '.', '_' or '-'")
    return key_id


@dataclass(frozen=True)
class KeySettings:
    """The KEK configuration. ``primary`` is None only in development, where a key is generated."""

    provider: str
    key_id: str | None
    primary: SecretBytes | None
    keyring: dict[str, SecretBytes]
    pkcs11_module: Path | None = None
    pkcs11_token_label: str | None = None
    pkcs11_pin: SecretStr | None = None

    @property
    def configured(self) -> bool:
        return self.provider == "pkcs11" or self.primary is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, production: bool) -> KeySettings:
        provider = (env.get("SECRET_KEY_PROVIDER") or "local").strip().lower()
        if provider not in ("local", "pkcs11"):
            raise ConfigError("SECRET_KEY_PROVIDER must be local or pkcs11")
        key_id = env.get("SECRET_ENCRYPTION_KEY_ID") or None
        if provider == "pkcs11":
            return cls._pkcs11(env, key_id)
        b64, file = env.get("SECRET_ENCRYPTION_KEY_B64"), env.get("SECRET_ENCRYPTION_KEY_FILE")
        if b64 and file:
            raise ConfigError("set SECRET_ENCRYPTION_KEY_B64 or SECRET_ENCRYPTION_KEY_FILE, not both")
        primary = None
        if b64:
            primary = _decode_key(b64, "SECRET_ENCRYPTION_KEY_B64")
        elif file:
            content = _read(file, "SECRET_ENCRYPTION_KEY_FILE")
            primary = (
                SecretBytes(content)
                if len(content) == KEY_BYTES
                else _decode_key(content, "SECRET_ENCRYPTION_KEY_FILE")
            )
        if primary is not None and not key_id:
            raise ConfigError("SECRET_ENCRYPTION_KEY_ID is required with the key: name it, e.g. kek-2026-11")
        if primary is None and production:
            raise ConfigError(
                "APP_ENV=production needs key material: set SECRET_ENCRYPTION_KEY_B64 or "
                "SECRET_ENCRYPTION_KEY_FILE with SECRET_ENCRYPTION_KEY_ID, or SECRET_KEY_PROVIDER=pkcs11"
            )
        keyring = cls._keyring(env.get("SECRET_ENCRYPTION_KEYRING_FILE"))
        if key_id:
            check_key_id(key_id)
            if key_id in keyring:
                raise ConfigError("SECRET_ENCRYPTION_KEYRING_FILE must not repeat SECRET_ENCRYPTION_KEY_ID")
        return cls(provider="local", key_id=key_id, primary=primary, keyring=keyring)

    @staticmethod
    def _keyring(path: str | None) -> dict[str, SecretBytes]:
        if not path:
            return {}
        name = "SECRET_ENCRYPTION_KEYRING_FILE"
        try:
            entries = json.loads(_read(path, name))
        except ValueError:
            raise ConfigError(f"{name} is not a JSON object of key id to base64 key") from None
        if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
            raise ConfigError(f"{name} is not a JSON object of key id to base64 key")
        return {check_key_id(k, name): _decode_key(v, f"{name} (key {k})") for k, v in entries.items()}

    @classmethod
    def _pkcs11(cls, env: Mapping[str, str], key_id: str | None) -> KeySettings:
        for name in ("PKCS11_MODULE", "PKCS11_TOKEN_LABEL", "PKCS11_PIN_FILE", "SECRET_ENCRYPTION_KEY_ID"):
            if not env.get(name):
                raise ConfigError(f"SECRET_KEY_PROVIDER=pkcs11 needs {name}")
        module = Path(env["PKCS11_MODULE"])
        if not module.is_file():
            raise ConfigError("PKCS11_MODULE names a file that does not exist")
        pin = _read(env["PKCS11_PIN_FILE"], "PKCS11_PIN_FILE").decode(errors="strict").strip()
        if not pin:
            raise ConfigError("PKCS11_PIN_FILE is empty")
        assert key_id is not None
        return cls(
            provider="pkcs11",
            key_id=check_key_id(key_id),
            primary=None,
            keyring={},
            pkcs11_module=module,
            pkcs11_token_label=env["PKCS11_TOKEN_LABEL"],
            pkcs11_pin=SecretStr(pin),
        )


def generate_key_file(path: Path) -> SecretBytes:
    """Write a fresh 32-byte key to ``path`` (base64, mode 0600, never overwriting)."""
    key = SecretBytes(os.urandom(KEY_BYTES))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(base64.b64encode(key.reveal()) + b"\n")
    return key
