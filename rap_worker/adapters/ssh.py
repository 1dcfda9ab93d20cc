"""SSH adapter (asyncssh): the target's host key is pinned by resource metadata.

The metadata field ``ssh_host_key`` holds the target's public host key in
OpenSSH form (``ssh-ed25519 AAAA...``): public, so not a secret. A target
that shows another key is refused, and so is a resource that pins none.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh

from rap_worker.adapters import AdapterError, split_address
from rap_worker.credentials import Credential

HOST_KEY_FIELD = "ssh_host_key"
CONNECT_TIMEOUT = 15.0
RUN_TIMEOUT = 30.0


class SshConnection:
    def __init__(self, connection: asyncssh.SSHClientConnection) -> None:
        self.connection = connection

    async def run(self, command: str) -> str:
        """Run a command on the target and return its standard output."""
        result = await asyncio.wait_for(self.connection.run(command, check=True), RUN_TIMEOUT)
        out = result.stdout
        return out if isinstance(out, str) else bytes(out or b"").decode()

    async def close(self) -> None:
        self.connection.close()
        await self.connection.wait_closed()


def _pinned_key(metadata: dict[str, Any]) -> asyncssh.SSHKey:
    raw = metadata.get(HOST_KEY_FIELD)
    if not isinstance(raw, str) or not raw.strip():
        raise AdapterError(
            "host_key_not_pinned",
            f"the resource pins no SSH host key: set metadata.{HOST_KEY_FIELD} to the target's public host key",
        )
    try:
        return asyncssh.import_public_key(raw.strip())
    except (asyncssh.KeyImportError, ValueError):
        raise AdapterError(
            "bad_host_key", f"metadata.{HOST_KEY_FIELD} is not an OpenSSH public key"
        ) from None


async def connect(address: str, credential: Credential, metadata: dict[str, Any]) -> SshConnection:
    host, port = split_address(address)
    pinned = _pinned_key(metadata)
    client_keys = None
    if credential.private_key:
        try:
            client_keys = [
                asyncssh.import_private_key(
                    credential.private_key.reveal(), credential.passphrase.reveal() or None
                )
            ]
        except (asyncssh.KeyImportError, ValueError):
            raise AdapterError("bad_private_key", "the stored private key cannot be read") from None
    try:
        connection = await asyncio.wait_for(
            asyncssh.connect(
                host,
                port=port,
                username=credential.username,
                password=credential.password.reveal() or None,
                client_keys=client_keys,
                known_hosts=([pinned], [], []),
                agent_path=None,
                config=None,
            ),
            CONNECT_TIMEOUT,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise AdapterError("host_key_mismatch", "the target's SSH host key is not the pinned one") from None
    except asyncssh.PermissionDenied:
        raise AdapterError("authentication_failed", "the target refused the session's credential") from None
    except (OSError, TimeoutError, asyncssh.Error) as exc:
        raise AdapterError(
            "target_unreachable", f"cannot reach {host}:{port}: {type(exc).__name__}"
        ) from None
    return SshConnection(connection)
