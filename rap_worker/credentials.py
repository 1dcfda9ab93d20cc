"""Credentials on the worker: in memory only, in redacted holders, dropped when the session ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from rap.v1 import resolver_pb2, worker_pb2
from rap_common.secrets import SecretStr

log = logging.getLogger(__name__)

# Development smoke tests may keep credentials in resource metadata (DESIGN.md).
_METADATA_USER = ("username", "user")
_METADATA_PASSWORD = ("password",)


@dataclass
class Credential:
    username: str
    password: SecretStr = field(default_factory=lambda: SecretStr(""))
    private_key: SecretStr = field(default_factory=lambda: SecretStr(""))
    passphrase: SecretStr = field(default_factory=lambda: SecretStr(""))
    domain: str = ""
    rotation_version: int = 0

    def drop(self) -> None:
        """Forget every secret field (the session ended)."""
        for secret in (self.password, self.private_key, self.passphrase):
            secret.drop()


def from_resolved(response: resolver_pb2.ResolveSecretResponse) -> Credential:
    kind = response.WhichOneof("credential")
    version = response.rotation_version
    if kind == "ssh":
        ssh = response.ssh
        return Credential(
            ssh.username,
            SecretStr(ssh.password),
            SecretStr(ssh.private_key),
            SecretStr(ssh.passphrase),
            rotation_version=version,
        )
    if kind == "rdp":
        return Credential(
            response.rdp.username,
            SecretStr(response.rdp.password),
            domain=response.rdp.domain,
            rotation_version=version,
        )
    if kind == "vnc":
        return Credential(response.vnc.username, SecretStr(response.vnc.password), rotation_version=version)
    raise ValueError("the resolver answered without a credential")


def from_development_metadata(
    assignment: worker_pb2.Assignment, metadata: dict[str, Any]
) -> Credential | None:
    """Plaintext metadata credentials, used only when the control plane says the
    environment is development; the use is logged, the values never."""
    if assignment.environment != worker_pb2.ENVIRONMENT_DEVELOPMENT:
        return None
    user = next((metadata[k] for k in _METADATA_USER if isinstance(metadata.get(k), str)), None)
    password = next((metadata[k] for k in _METADATA_PASSWORD if isinstance(metadata.get(k), str)), None)
    if user is None or password is None:
        return None
    log.warning(
        "session %s uses plaintext credentials from resource metadata (development only)",
        assignment.session_id,
    )
    return Credential(user, SecretStr(password))
