"""Credentials and what the secret store tells about them.

Credential fields that are secret are :class:`SecretStr`, so a credential
in a log call or an exception prints redacted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from rap_common.secrets import SecretStr


class CredentialType(StrEnum):
    RDP = "rdp"
    SSH = "ssh"
    VNC = "vnc"


@dataclass(frozen=True)
class RdpCredential:
    username: str
    domain: str
    password: SecretStr


@dataclass(frozen=True)
class SshCredential:
    username: str
    password: SecretStr
    private_key: SecretStr
    passphrase: SecretStr


@dataclass(frozen=True)
class VncCredential:
    username: str
    password: SecretStr


Credential = RdpCredential | SshCredential | VncCredential


@dataclass(frozen=True)
class SecretInfo:
    """Metadata of a stored secret: never its value."""

    id: uuid.UUID
    organization_id: uuid.UUID
    resource_id: uuid.UUID
    secret_ref: str
    name: str
    rotation_version: int
    key_id: str
    algorithm: str
    payload_digest: bytes
    created_at: datetime
    rotated_at: datetime
