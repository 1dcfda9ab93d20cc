"""The control plane and the worker as separate processes, for end-to-end tests."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process handed out before (the kernel
    may offer a just-released port again, before its first user has bound it)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def base_env(**overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "APP_ENV")
        and not k.startswith(("SECRET_", "PKCS11_", "RAP_"))
    }
    env.update(overrides)
    return env


def wait_for(text: str, log: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise RuntimeError(f"{log.name}: the process exited early:\n{log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{log.name}: no {text!r} within {timeout} s:\n{log.read_text(errors='replace')}"
            )
        time.sleep(0.05)


@dataclass
class ControlPlane:
    """One `rap-control serve` replica."""

    name: str
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    worker_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def worker_target(self) -> str:
        return f"127.0.0.1:{self.worker_port}"

    def start(self) -> ControlPlane:
        env = dict(
            self.env,
            RAP_LISTEN_ADDRESS=self.target,
            RAP_WORKER_LISTEN_ADDRESS=self.worker_target,
        )
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "rap-control"), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        wait_for("serving on", self.log, self.process)
        return self

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def control_env(
    database_url: str, key_b64: str, redis_url: str | None, data_dir: Path, **extra: str
) -> dict[str, str]:
    settings = {
        "DATABASE_URL": database_url,
        "SECRET_ENCRYPTION_KEY_B64": key_b64,
        "SECRET_ENCRYPTION_KEY_ID": "e2e-kek",
        "RAP_DATA_DIR": str(data_dir),
        "RAP_SESSION_LEASE_TTL_SECONDS": "6",
        "RAP_WORKER_HEARTBEAT_SECONDS": "1",
        "RAP_LOG_LEVEL": "DEBUG",
    }
    env = base_env(**(settings | extra))
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def new_key_b64() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class WorkerProcess:
    """A real `rap_worker` agent in its own process (through tests.support.worker_probe)."""

    state_dir: Path
    log: Path
    probe_out: Path
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def enroll(cls, directory: Path, control_target: str, token: str, name: str) -> WorkerProcess:
        state = directory / f"state-{name}"
        result = subprocess.run(
            [
                str(BIN / "rap-worker"),
                "enroll",
                "--control",
                control_target,
                "--state-dir",
                str(state),
                "--name",
                name,
                "--direct-host",
                "127.0.0.1",
            ],
            env=base_env(RAP_ENROLLMENT_TOKEN=token),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"rap-worker enroll failed: {result.stderr}")
        return cls(state, directory / f"worker-{name}.log", directory / f"probe-{name}.jsonl")

    def run(
        self,
        targets: list[str],
        probe_command: str = "whoami",
        direct: bool = True,
        nofile: int | None = None,
        **env: str,
    ) -> WorkerProcess:
        """Run the agent; ``nofile`` caps its open files (soft and hard), like a stock host.

        The cap is set by util-linux ``prlimit``, which execs the agent: a ``preexec_fn``
        would run Python in a fork of this multi-threaded (gRPC) process, which is unsafe."""
        limit = ["prlimit", f"--nofile={nofile}:{nofile}", "--"] if nofile is not None else []
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    *limit,
                    sys.executable,
                    "-m",
                    "tests.support.worker_probe",
                    "--state-dir",
                    str(self.state_dir),
                    "--control-worker",
                    ",".join(targets),
                    "--probe-command",
                    probe_command,
                    "--out",
                    str(self.probe_out),
                    *(["--direct-listen", "127.0.0.1:0"] if direct else []),
                ],
                env=base_env(RAP_LOG_LEVEL="DEBUG", **env),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        wait_for("connected to", self.log, self.process)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def enroll_gateway(directory: Path, control_target: str, enrollment_token: str) -> Path:
    """`rap-gateway enroll` with a gateway token; returns the state directory."""
    state = directory / "gateway-state"
    enrolled = subprocess.run(
        [
            str(BIN / "rap-gateway"),
            "enroll",
            "--control",
            control_target,
            "--state-dir",
            str(state),
            "--name",
            "gateway",
            "--force",
        ],
        env=base_env(RAP_ENROLLMENT_TOKEN=enrollment_token),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if enrolled.returncode != 0:
        raise RuntimeError(f"the gateway's enrollment failed: {enrolled.stderr}")
    return state


def start_gateway(
    directory: Path,
    listen_port: int,
    control_target: str,
    enrollment_token: str,
    worker_targets: list[str],
    cert_file: Path,
    key_file: Path,
) -> subprocess.Popen[bytes]:
    """Enroll a gateway identity (`rap-gateway enroll`, a gateway token) and run `rap-gateway`."""
    state = enroll_gateway(directory, control_target, enrollment_token)
    log = directory / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(BIN / "rap-gateway"),
                "run",
                "--listen",
                f"127.0.0.1:{listen_port}",
                "--tls-cert-file",
                str(cert_file),
                "--tls-key-file",
                str(key_file),
                "--state-dir",
                str(state),
                "--control-worker",
                ",".join(worker_targets),
            ],
            env=base_env(RAP_LOG_LEVEL="DEBUG"),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    wait_for("gateway serving on", log, process)
    return process
