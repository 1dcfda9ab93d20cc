"""The worker's state directory: its key, certificate, the platform CA bundle and its id.

Files are written whole (a temporary file, then a rename) with mode 0600,
in a directory of mode 0700, so a crash mid-write never leaves half a key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from rap_common.errors import ConfigError
from rap_common.secrets import SecretBytes

KEY, CERT, CA, INFO = "worker-key.pem", "worker-cert.pem", "platform-ca.pem", "worker.json"


@dataclass(frozen=True)
class WorkerIdentity:
    worker_id: str
    key_pem: SecretBytes = field(repr=False)
    certificate_pem: bytes
    ca_pem: bytes

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, identity: WorkerIdentity) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        _write(self.path / KEY, identity.key_pem.reveal())
        _write(self.path / CERT, identity.certificate_pem)
        _write(self.path / CA, identity.ca_pem)
        _write(self.path / INFO, json.dumps({"worker_id": identity.worker_id}).encode())

    def exists(self) -> bool:
        return (self.path / INFO).is_file()

    def load(self) -> WorkerIdentity:
        try:
            info = json.loads((self.path / INFO).read_text())
            return WorkerIdentity(
                worker_id=str(info["worker_id"]),
                key_pem=SecretBytes((self.path / KEY).read_bytes()),
                certificate_pem=(self.path / CERT).read_bytes(),
                ca_pem=(self.path / CA).read_bytes(),
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"the worker state in {self.path} is missing or unreadable ({type(exc).__name__}); "
                "run `rap-worker enroll` first"
            ) from None
