"""The development demo behind ``scripts/dev``: a local sshd target, a gateway certificate.

    python -m rap_control.devdemo sshd DIR            # prints the sshd command line to run
    python -m rap_control.devdemo gateway-tls DIR     # a self-signed CA and a gateway certificate
    python -m rap_control.devdemo resource DIR        # (RAP_TOKEN, RAP_ADDRESS) the `demo` resource

The demo target is an sshd on 127.0.0.1:2222 run as the current user, that
lets that user in with a key generated here; the key is stored as the demo
resource's secret through the API, so `rapctl ssh demo` works. Development
only: nothing here is used in production.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import os
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rap.v1 import resource_pb2
from rap_control.pki import certificates

PORT = 2222


def _sshd(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("host_ed25519", "client_ed25519"):
        if not (directory / name).exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)], check=True
            )
    (directory / "authorized_keys").write_text((directory / "client_ed25519.pub").read_text())
    os.chmod(directory / "authorized_keys", 0o600)
    (directory / "sshd_config").write_text(
        f"Port {PORT}\nListenAddress 127.0.0.1\nHostKey {directory / 'host_ed25519'}\nPidFile none\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        f"AllowUsers {getpass.getuser()}\nSubsystem sftp internal-sftp\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    print(f"/usr/sbin/sshd -D -e -f {directory / 'sshd_config'}")


def _gateway_tls(directory: Path) -> None:
    """A CA of its own and a certificate for localhost, from the platform's PKI helpers;
    made again once the certificate has expired."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = dt.datetime.now(dt.UTC)
    existing = directory / "gateway.pem"
    if existing.exists() and x509.load_pem_x509_certificate(existing.read_bytes()).not_valid_after_utc > now:
        return
    ca_key, ca = certificates.new_ca(now)
    key, cert = certificates.issue_server_certificate(ca_key, ca, ["localhost", "127.0.0.1"], now)
    (directory / "gateway-ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    existing.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(directory / "gateway-key.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


async def _resource(directory: Path) -> None:
    from rap_client import RapClient

    async with RapClient(os.environ.get("RAP_ADDRESS", "127.0.0.1:50051"), os.environ["RAP_TOKEN"]) as rap:
        host_key = (directory / "host_ed25519.pub").read_text().split()
        resource = await rap.create_resource(
            "demo",
            resource_pb2.PROTOCOL_SSH,
            f"127.0.0.1:{PORT}",
            metadata={"ssh_host_key": " ".join(host_key[:2])},
        )
        await rap.put_ssh_secret(
            resource.id, getpass.getuser(), private_key=(directory / "client_ed25519").read_text()
        )
    print(f"resource demo ({resource.id}) -> 127.0.0.1:{PORT} as {getpass.getuser()}", file=sys.stderr)


def main() -> int:
    command, directory = sys.argv[1], Path(sys.argv[2])
    if command == "sshd":
        _sshd(directory)
    elif command == "gateway-tls":
        _gateway_tls(directory)
    elif command == "resource":
        asyncio.run(_resource(directory))
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
