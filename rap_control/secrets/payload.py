"""The canonical, versioned payload that is encrypted.

``{"v": 1, "type": "ssh", "username": ..., "password": ..., ...}`` as JSON
with sorted keys and no spaces: the same credential always encodes to the
same bytes, which the payload HMAC relies on. Strings are kept exactly as
given (no Unicode normalisation: a password is what it is).
"""

from __future__ import annotations

import json
from typing import Any

from rap_common.errors import DataLoss, InvalidArgument
from rap_common.secrets import SecretBytes, SecretStr
from rap_control.secrets.types import (
    Credential,
    CredentialType,
    RdpCredential,
    SshCredential,
    VncCredential,
)

PAYLOAD_VERSION = 1
MAX_FIELD = 16 * 1024  # room for a 4096-bit private key in PEM
MAX_USERNAME = 256


def credential_type(credential: Credential) -> CredentialType:
    if isinstance(credential, RdpCredential):
        return CredentialType.RDP
    if isinstance(credential, SshCredential):
        return CredentialType.SSH
    return CredentialType.VNC


def validate(credential: Credential) -> None:
    """Refuse a credential that could not work; messages name fields, never values."""
    kind = credential_type(credential)
    if len(credential.username) > MAX_USERNAME:
        raise InvalidArgument(
            f"{kind}.username is longer than {MAX_USERNAME} characters", reason="bad_credential"
        )
    for field in ("password", "private_key", "passphrase"):
        value = getattr(credential, field, None)
        if value is not None and len(value) > MAX_FIELD:
            raise InvalidArgument(
                f"{kind}.{field} is longer than {MAX_FIELD} characters", reason="bad_credential"
            )
    if isinstance(credential, RdpCredential):
        if not credential.username or not credential.password:
            raise InvalidArgument("rdp needs username and password", reason="bad_credential")
    elif isinstance(credential, SshCredential):
        if not credential.username:
            raise InvalidArgument("ssh needs a username", reason="bad_credential")
        if not credential.password and not credential.private_key:
            raise InvalidArgument("ssh needs a password, a private_key, or both", reason="bad_credential")
        if credential.passphrase and not credential.private_key:
            raise InvalidArgument("ssh.passphrase is only for a private_key", reason="bad_credential")
    elif not credential.password:
        raise InvalidArgument("vnc needs a password", reason="bad_credential")


def encode(credential: Credential) -> SecretBytes:
    """The canonical payload bytes of ``credential``."""
    fields: dict[str, Any] = {"v": PAYLOAD_VERSION, "type": credential_type(credential).value}
    for name, value in vars(credential).items():
        fields[name] = value.reveal() if isinstance(value, SecretStr) else value
    return SecretBytes(json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())


def decode(payload: SecretBytes) -> Credential:
    """The credential in a decrypted payload; DataLoss if it is not one we wrote."""
    try:
        fields = json.loads(payload.reveal())
        version, kind = fields.pop("v"), CredentialType(fields.pop("type"))
        if version != PAYLOAD_VERSION:
            raise ValueError
        if kind is CredentialType.RDP:
            return RdpCredential(fields["username"], fields["domain"], SecretStr(fields["password"]))
        if kind is CredentialType.SSH:
            return SshCredential(
                fields["username"],
                SecretStr(fields["password"]),
                SecretStr(fields["private_key"]),
                SecretStr(fields["passphrase"]),
            )
        return VncCredential(fields["username"], SecretStr(fields["password"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DataLoss("a decrypted secret payload is not in a known format", reason="bad_payload") from None
