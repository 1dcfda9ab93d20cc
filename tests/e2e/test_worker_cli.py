"""`rap-worker enroll` against a control-plane process: files, and the refusals."""

from __future__ import annotations

import json
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rap.v1 import admin_pb2, worker_pb2, worker_pb2_grpc
from tests.e2e.cluster import Cluster, cluster
from tests.support.client import rpc_error, trailer
from tests.support.pki import make_csr, tamper
from tests.support.processes import BIN, base_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def plane(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(postgres_url, tmp_path_factory.mktemp("cli"), None) as c:
        yield c


def _token(plane: Cluster, ttl: int = 0) -> str:
    return str(
        plane.admin.admin.CreateWorkerEnrollmentToken(
            admin_pb2.CreateWorkerEnrollmentTokenRequest(worker_name="cli", ttl_seconds=ttl)
        ).enrollment_token
    )


def _enroll(plane: Cluster, token: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "rap-worker"),
            "enroll",
            "--control",
            plane.a.target,
            "--state-dir",
            str(state),
            "--force",
        ],
        env=base_env(RAP_ENROLLMENT_TOKEN=token),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_enroll_writes_its_key_and_certificate_with_mode_0600(plane: Cluster, tmp_path: Path) -> None:
    token = _token(plane)
    result = _enroll(plane, token, tmp_path / "state")
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert files == ["platform-ca.pem", "worker-cert.pem", "worker-key.pem", "worker.json"]
    for path in (tmp_path / "state").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert token not in result.stdout + result.stderr
    assert "BEGIN" not in result.stdout + result.stderr
    worker_id = json.loads((tmp_path / "state" / "worker.json").read_text())["worker_id"]
    assert (
        result.stdout.strip()
        == f"enrolled worker {worker_id}; key and certificate are in {tmp_path / 'state'}"
    )


def test_a_reused_token_is_refused(plane: Cluster, tmp_path: Path) -> None:
    token = _token(plane)
    assert _enroll(plane, token, tmp_path / "one").returncode == 0
    again = _enroll(plane, token, tmp_path / "two")
    assert again.returncode == 1
    assert "UNAUTHENTICATED" in again.stderr and "used already" in again.stderr
    assert not (tmp_path / "two").exists()


def test_an_expired_token_is_refused(plane: Cluster, tmp_path: Path) -> None:
    token = _token(plane, ttl=1)
    time.sleep(1.5)
    result = _enroll(plane, token, tmp_path / "state")
    assert result.returncode == 1
    assert "expired" in result.stderr


def test_a_tampered_csr_is_refused(plane: Cluster) -> None:
    csr, _ = make_csr()
    with grpc.insecure_channel(plane.a.target) as channel:
        error = rpc_error(
            worker_pb2_grpc.WorkerServiceStub(channel).Enroll,
            worker_pb2.EnrollRequest(enrollment_token=_token(plane), csr_pem=tamper(csr)),
            timeout=15,
        )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(error, "rap-reason")


def test_run_without_enrolling_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(BIN / "rap-worker"),
            "run",
            "--control-worker",
            "127.0.0.1:1",
            "--state-dir",
            str(tmp_path / "none"),
        ],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "rap-worker enroll" in result.stderr


def test_an_operator_token_from_rapctl_enrolls_a_worker(plane: Cluster, tmp_path: Path) -> None:
    env = {k: v for k, v in plane.a.env.items() if k != "RAP_LOG_LEVEL"}
    issued = subprocess.run(
        [str(BIN / "rapctl"), "workers", "token", "--organization", "e2e", "--name", "from-rapctl"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("rap_enr_") and token not in issued.stderr
    assert _enroll(plane, token, tmp_path / "state").returncode == 0
    created = [e for e in plane.audit("worker_enrollment_token_created") if e.actor_type == "system"]
    assert created and created[-1].details["worker_name"] == "from-rapctl"
    unknown = subprocess.run(
        [str(BIN / "rapctl"), "workers", "token", "--organization", "nobody", "--name", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2 and "no organization is named 'nobody'" in unknown.stderr
