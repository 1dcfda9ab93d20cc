"""A real OpenSSH server on loopback, for the SSH adapter's end-to-end tests.

It follows the recipe in RECIPES.md: a local user with a password that
only the test (and then the secret store) knows, a fresh ed25519 host key,
password authentication, no PAM. It needs root and /usr/sbin/sshd, which
scripts/test installs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
USER = "rapuser"


@dataclass
class Sshd:
    port: int
    username: str
    password: str
    host_key: str  # the public host key line, for metadata.ssh_host_key
    other_host_key: str  # another key, for the mismatch refusal
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().split(" comment")[0].strip()


def start_sshd(directory: Path, extra_config: str = "") -> Sshd:
    if os.geteuid() != 0 or not Path(SSHD).exists():
        raise RuntimeError("the sshd tests need root and openssh-server (scripts/test installs it)")
    password = f"Ssh-canary-{uuid.uuid4().hex}"
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", USER], check=True)
    subprocess.run(["chpasswd"], input=f"{USER}:{password}".encode(), check=True)
    host_key = _keygen(directory / "host_ed25519")
    other = _keygen(directory / "other_ed25519")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = _free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {directory / 'host_ed25519'}\nPidFile none\n"
        "PasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"PermitRootLogin no\nAllowUsers {USER}\nSubsystem sftp internal-sftp\n{extra_config}"
    )
    log = directory / "sshd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sshd did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return Sshd(port, USER, password, host_key, other, process, log)


def available() -> bool:
    return os.geteuid() == 0 and Path(SSHD).exists() and shutil.which("ssh-keygen") is not None
