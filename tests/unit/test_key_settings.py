"""Key material at start-up: every refusal names the variable, never the value."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from rap_common.errors import ConfigError
from rap_control.keys.load import DEV_KEY_ID, load_provider
from rap_control.keys.settings import KeySettings

KEY = os.urandom(32)
B64 = base64.b64encode(KEY).decode()


def _refused(env: dict[str, str], *, production: bool = True) -> str:
    with pytest.raises(ConfigError) as info:
        KeySettings.from_env(env, production=production)
    message = str(info.value)
    assert B64 not in message
    return message


def test_production_without_key_material_is_refused() -> None:
    assert "SECRET_ENCRYPTION_KEY_B64" in _refused({})


@pytest.mark.parametrize(
    ("env", "names"),
    [
        (
            {
                "SECRET_ENCRYPTION_KEY_B64": base64.b64encode(os.urandom(16)).decode(),
                "SECRET_ENCRYPTION_KEY_ID": "k",
            },
            "SECRET_ENCRYPTION_KEY_B64",
        ),
        ({"SECRET_ENCRYPTION_KEY_B64": "not base64!!", "SECRET_ENCRYPTION_KEY_ID": "k"}, "not valid base64"),
        ({"SECRET_ENCRYPTION_KEY_B64": B64}, "SECRET_ENCRYPTION_KEY_ID is required"),
        (
            {
                "SECRET_ENCRYPTION_KEY_B64": B64,
                "SECRET_ENCRYPTION_KEY_FILE": "/x",
                "SECRET_ENCRYPTION_KEY_ID": "k",
            },
            "not both",
        ),
        (
            {"SECRET_ENCRYPTION_KEY_FILE": "/nonexistent/kek", "SECRET_ENCRYPTION_KEY_ID": "k"},
            "SECRET_ENCRYPTION_KEY_FILE",
        ),
        (
            {"SECRET_ENCRYPTION_KEY_B64": B64, "SECRET_ENCRYPTION_KEY_ID": "bad id!"},
            "SECRET_ENCRYPTION_KEY_ID must be",
        ),
        ({"SECRET_KEY_PROVIDER": "vault"}, "SECRET_KEY_PROVIDER"),
        ({"SECRET_KEY_PROVIDER": "pkcs11"}, "PKCS11_MODULE"),
    ],
)
def test_bad_key_material_names_the_variable(env: dict[str, str], names: str) -> None:
    assert names in _refused(env)


def test_a_key_file_holds_raw_bytes_or_base64(tmp_path: Path) -> None:
    raw, text = tmp_path / "raw", tmp_path / "text"
    raw.write_bytes(KEY)
    text.write_text(B64 + "\n")
    for path in (raw, text):
        keys = KeySettings.from_env(
            {"SECRET_ENCRYPTION_KEY_FILE": str(path), "SECRET_ENCRYPTION_KEY_ID": "k"}, production=True
        )
        assert keys.primary is not None
        assert keys.primary.reveal() == KEY
    short = tmp_path / "short"
    short.write_bytes(b"abc")
    assert "SECRET_ENCRYPTION_KEY_FILE" in _refused(
        {"SECRET_ENCRYPTION_KEY_FILE": str(short), "SECRET_ENCRYPTION_KEY_ID": "k"}
    )


def test_the_keyring_adds_decrypt_only_keys(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    old = base64.b64encode(os.urandom(32)).decode()
    ring.write_text(json.dumps({"kek-old": old}))
    env = {
        "SECRET_ENCRYPTION_KEY_B64": B64,
        "SECRET_ENCRYPTION_KEY_ID": "kek-new",
        "SECRET_ENCRYPTION_KEYRING_FILE": str(ring),
    }
    provider = load_provider(KeySettings.from_env(env, production=True), tmp_path, production=True)
    assert provider.primary_key_id == "kek-new"
    assert provider.key_ids() == ["kek-new", "kek-old"]
    ring.write_text(json.dumps({"kek-old": "short"}))
    message = _refused(env)
    assert "SECRET_ENCRYPTION_KEYRING_FILE" in message and "short" not in message
    ring.write_text("[1, 2]")
    assert "JSON object" in _refused(env)


def test_development_generates_a_private_key_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = KeySettings.from_env({}, production=False)
    first = load_provider(settings, tmp_path, production=False)
    path = tmp_path / "keys" / f"{DEV_KEY_ID}.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in caplog.text
    second = load_provider(settings, tmp_path, production=False)
    assert first.digest_key(DEV_KEY_ID) == second.digest_key(DEV_KEY_ID)
    assert "generated" not in caplog.text.split(str(path), 1)[1]
