"""`rapctl keys generate` for a local key: a private file, never overwritten, usable at once."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rap_control.keys.settings import KeySettings

pytestmark = pytest.mark.e2e

RAPCTL = str(Path(sys.executable).parent / "rapctl")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SECRET_", "PKCS11_", "APP_ENV"))}


def test_generate_writes_a_private_key_file_that_configures_the_provider(tmp_path: Path) -> None:
    path = tmp_path / "kek-2026-12.key"
    made = subprocess.run(
        [RAPCTL, "keys", "generate", "kek-2026-12", "--file", str(path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert str(path) in made.stdout and "SECRET_ENCRYPTION_KEY_ID=kek-2026-12" in made.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key_text = path.read_text().strip()
    assert len(base64.b64decode(key_text)) == 32
    assert key_text not in made.stdout + made.stderr, "the key itself is never printed"
    settings = KeySettings.from_env(
        {"SECRET_ENCRYPTION_KEY_FILE": str(path), "SECRET_ENCRYPTION_KEY_ID": "kek-2026-12"}, production=True
    )
    assert settings.primary is not None

    again = subprocess.run(
        [RAPCTL, "keys", "generate", "kek-2026-12", "--file", str(path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert path.read_text().strip() == key_text
    no_file = subprocess.run(
        [RAPCTL, "keys", "generate", "kek-x"], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert no_file.returncode == 2 and "--file" in no_file.stderr
