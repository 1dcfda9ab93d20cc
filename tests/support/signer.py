"""Tokens signed with the platform's own signing key, for tests of the worker's bind checks.

It reads the active key from the cluster's database with the cluster's KEK,
as a replica would; a test then changes one claim (another worker, an
expired time, another audience...) and the worker must refuse exactly that.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

from jose import jwt

from rap_common.secrets import SecretBytes
from rap_common.tokens import DATA_PLANE_AUDIENCE
from rap_control.audit.service import AuditLog
from rap_control.db.engine import Database
from rap_control.keys.local import LocalKeyProvider
from rap_control.keys.service import KeyService
from rap_control.tokens.keyring import ISSUER, SigningKeyRing


class PlatformSigner:
    def __init__(self, database_url: str, key_b64: str, key_id: str = "e2e-kek") -> None:
        self._provider = LocalKeyProvider(key_id, {key_id: SecretBytes(base64.b64decode(key_b64))})
        self._ring = SigningKeyRing(self._provider, KeyService(AuditLog(), self._provider))
        self._db = Database(database_url, pool_size=1)

    def sign(
        self,
        claims: dict[str, Any],
        *,
        audience: str = DATA_PLANE_AUDIENCE,
        issuer: str = ISSUER,
        ttl: int = 60,
        jti: str | None = None,
    ) -> str:
        key = self._db.run_sync(self._ring.active)
        now = int(time.time())
        body = {
            **claims,
            "iss": issuer,
            "aud": audience,
            "iat": now,
            "nbf": now if ttl > 0 else now + ttl - 10,
            "exp": now + ttl,
            "jti": jti or uuid.uuid4().hex,
        }
        return str(jwt.encode(body, key.signer, algorithm="RS256", headers={"kid": key.kid}))

    def kid(self) -> str:
        return str(self._db.run_sync(self._ring.active).kid)

    def close(self) -> None:
        self._db.close()
        self._provider.close()
