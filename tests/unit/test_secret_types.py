"""Secret-holding types never show their value; log redaction masks tokens and keys."""

from __future__ import annotations

import logging
import pickle

import pytest

from rap_common.logging import RedactingFilter, redact_text
from rap_common.secrets import SecretBytes, SecretStr
from rap_control.config import Settings
from rap_control.identity.tokens import new_api_token

CANARY = "S3cret-canary-4417"


def test_secret_str_never_prints() -> None:
    secret = SecretStr(CANARY)
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret}", repr([secret])):
        assert CANARY not in shown
    assert secret.reveal() == CANARY
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        hash(secret)


def test_secret_bytes_never_prints_and_wipes() -> None:
    secret = SecretBytes(CANARY.encode())
    assert CANARY not in repr(secret)
    assert CANARY not in str(secret)
    assert secret == SecretBytes(CANARY.encode())
    secret.wipe()
    assert secret.reveal() == b""
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_redaction_masks_tokens_bearer_values_and_private_keys() -> None:
    token, _, _ = new_api_token()
    pem = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk"
        + CANARY
        + "\n-----END OPENSSH PRIVATE KEY-----"
    )
    text = f"token {token.reveal()} header Bearer {CANARY} key {pem} end"
    redacted = redact_text(text)
    assert token.reveal() not in redacted
    assert CANARY not in redacted
    assert redacted.startswith("token ")
    assert redacted.endswith(" end")


def test_the_log_filter_redacts_messages_and_arguments(caplog: pytest.LogCaptureFixture) -> None:
    token, _, _ = new_api_token()
    logger = logging.getLogger("rap.test.redaction")
    handler_filter = RedactingFilter()
    logger.addFilter(handler_filter)
    try:
        with caplog.at_level(logging.INFO, logger="rap.test.redaction"):
            logger.info("got %s and Bearer %s", token.reveal(), CANARY)
            logger.info(f"inline {token.reveal()}")
    finally:
        logger.removeFilter(handler_filter)
    assert token.reveal() not in caplog.text
    assert CANARY not in caplog.text


def test_settings_repr_hides_database_and_redis_urls() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": f"postgresql://rap:{CANARY}@db.example/rap",
            "REDIS_URL": f"redis://:{CANARY}@r:6379/0",
        }
    )
    assert CANARY not in repr(settings)
