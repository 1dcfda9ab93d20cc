"""The worker's data plane fetches the keys again when a token names one it does not know."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from rap_common.tokens import DATA_PLANE_AUDIENCE, ISSUER
from rap_control.tokens.keyring import public_jwk
from rap_worker.dataplane import BindRefused, DataPlane, SessionView

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


def _token() -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": DATA_PLANE_AUDIENCE, "sub": "u", "iat": now, "exp": now + 60, "jti": "j"}
    return jwt.encode(claims, PEM, algorithm="RS256", headers={"kid": "fresh"})


class Host:
    """A worker whose Welcome carried an empty key set (the race of a fresh database)."""

    worker_id = "w"

    def __init__(self, refresh_allowed: bool) -> None:
        self.jwks: dict[str, dict[str, str]] = {}
        self.refreshes = 0
        self._allowed = refresh_allowed

    async def refresh_jwks(self) -> bool:
        self.refreshes += 1
        if not self._allowed:
            return False
        self.jwks = {"fresh": public_jwk("fresh", KEY.public_key())}
        return True

    def live_session(self, session_id: str) -> SessionView | None:
        return None

    def ended_state(self, session_id: str) -> str | None:
        return None

    def report_bind_rejected(self, *args: Any) -> None:
        pass


def test_an_unknown_kid_makes_the_worker_fetch_the_keys_and_the_bind_verifies() -> None:
    host = Host(refresh_allowed=True)
    claims = asyncio.run(DataPlane(host)._verify(_token()))
    assert claims["sub"] == "u" and host.refreshes == 1


def test_when_no_fetch_is_allowed_the_unknown_kid_is_refused() -> None:
    host = Host(refresh_allowed=False)
    with pytest.raises(BindRefused) as refused:
        asyncio.run(DataPlane(host)._verify(_token()))
    assert refused.value.error.reason == "unknown_kid" and host.refreshes == 1


def test_other_refusals_never_fetch() -> None:
    host = Host(refresh_allowed=True)
    with pytest.raises(BindRefused) as refused:
        asyncio.run(DataPlane(host)._verify("not-a-token"))
    assert refused.value.error.reason == "malformed" and host.refreshes == 0


def test_the_record_of_attachments_is_pruned_as_sessions_end_and_bounded() -> None:
    from rap_worker import dataplane
    from rap_worker.dataplane import AttachmentInfo

    plane = DataPlane(Host(refresh_allowed=False))

    async def go() -> None:
        for i in range(3):
            await plane.attachment_update(AttachmentInfo(f"a{i}", "s1", "u", "active", ["terminal"]))
        await plane.attachment_update(AttachmentInfo("b", "s2", "u", "active", ["terminal"]))
        await plane.session_ended("s1")
        assert list(plane.attachments) == ["b"]
        for i in range(dataplane.MAX_ATTACHMENTS + 10):
            await plane.attachment_update(AttachmentInfo(f"c{i}", "s3", "u", "detached", ["terminal"]))
        assert len(plane.attachments) == dataplane.MAX_ATTACHMENTS

    asyncio.run(go())
