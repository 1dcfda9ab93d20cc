"""Start-up settings fail by the variable's name, never its value."""

from __future__ import annotations

import pytest

from rap_control.config import ConfigError, Settings

CANARY = "S3cret-canary-9931"
KEY = {"SECRET_ENCRYPTION_KEY_B64": "A" * 43 + "=", "SECRET_ENCRYPTION_KEY_ID": "kek-1"}


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"DATABASE_URL": f"mysql://u:{CANARY}@h/db"}, "DATABASE_URL"),
        ({"DATABASE_URL": f"::{CANARY}::"}, "DATABASE_URL"),
        ({"RAP_LISTEN_ADDRESS": "nowhere"}, "RAP_LISTEN_ADDRESS"),
        ({"RAP_LISTEN_ADDRESS": "example.org:50051"}, "RAP_LISTEN_ADDRESS"),
        ({"RAP_TLS_CERT_FILE": f"/nonexistent/{CANARY}.pem"}, "RAP_TLS_CERT_FILE"),
        ({"RAP_DB_POOL_SIZE": "lots"}, "RAP_DB_POOL_SIZE"),
        ({"APP_ENV": "production"}, "key material"),
        ({"APP_ENV": "production", **KEY}, "DATABASE_URL"),
        (
            {"APP_ENV": "production", **KEY, "DATABASE_URL": f"postgresql://u:{CANARY}@h/db"},
            "RAP_TLS_CERT_FILE",
        ),
    ],
)
def test_a_bad_setting_names_the_variable_and_hides_the_value(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert names in str(info.value)
    assert CANARY not in str(info.value)


def test_tls_files_go_together(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="must be set together"):
        Settings.from_env({"RAP_TLS_CERT_FILE": str(cert)})


def test_defaults_are_development_on_loopback() -> None:
    settings = Settings.from_env({})
    assert not settings.production
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 50051)
    assert settings.database_url is None
