"""Build the configured key provider at start-up."""

from __future__ import annotations

import logging
from pathlib import Path

from rap_common.errors import ConfigError
from rap_common.secrets import SecretBytes
from rap_control.keys.local import LocalKeyProvider
from rap_control.keys.provider import KeyProvider
from rap_control.keys.settings import KeySettings, _decode_key, generate_key_file

log = logging.getLogger(__name__)

DEV_KEY_ID = "dev-local-1"


def load_provider(keys: KeySettings, data_dir: Path, *, production: bool) -> KeyProvider:
    """The provider the settings describe; in development with no key, one generated under ``data_dir``."""
    if keys.provider == "pkcs11":
        from rap_control.keys.pkcs11 import Pkcs11KeyProvider

        if not (keys.pkcs11_module and keys.pkcs11_token_label and keys.pkcs11_pin and keys.key_id):
            raise ConfigError("SECRET_KEY_PROVIDER=pkcs11 is not fully configured")
        return Pkcs11KeyProvider(keys.pkcs11_module, keys.pkcs11_token_label, keys.pkcs11_pin, keys.key_id)
    key_id, primary = keys.key_id, keys.primary
    if primary is None:
        if production:  # KeySettings refuses this already; never generate a production key
            raise ConfigError("APP_ENV=production needs key material")
        key_id, primary = DEV_KEY_ID, _development_key(data_dir / "keys" / f"{DEV_KEY_ID}.key")
    assert key_id is not None
    return LocalKeyProvider(key_id, {**keys.keyring, key_id: primary})


def _development_key(path: Path) -> SecretBytes:
    if path.exists():
        return _decode_key(path.read_bytes(), f"the development key file {path}")
    key = generate_key_file(path)
    log.warning(
        "generated a development key-encryption key at %s (key id %s, mode 0600): "
        "secrets stored in development are encrypted under it; production needs a key of its own",
        path,
        DEV_KEY_ID,
    )
    return key
