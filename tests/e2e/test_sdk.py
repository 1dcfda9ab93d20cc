"""The SDK and `rapctl ssh` / `rapctl upload` against a control plane, a worker and sshd."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rap.v1 import resource_pb2
from rap_client import RapClient
from rap_common.errors import FailedPrecondition
from tests.e2e.cluster import Cluster, cluster
from tests.support.processes import BIN, WorkerProcess, base_env
from tests.support.sshd import Sshd

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def plane(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(postgres_url, tmp_path_factory.mktemp("sdk"), None) as c:
        yield c


@pytest.fixture(scope="module")
def worker(plane: Cluster) -> WorkerProcess:
    return plane.enroll_worker("sdk")


def test_the_sdk_runs_a_terminal_and_uploads_a_file(
    plane: Cluster, sshd: Sshd, worker: WorkerProcess, tmp_path: Path
) -> None:
    resource_id = plane.ssh_resource(sshd)
    payload = tmp_path / f"sdk-{os.getpid()}.bin"
    payload.write_bytes(os.urandom(150_000))

    async def go() -> tuple[str, str, str]:
        async with RapClient(plane.a.target, plane.admin.token, production=True) as rap:
            resource = await rap.get_resource(resource_id)
            assert resource.protocol == resource_pb2.PROTOCOL_SSH
            session = await rap.start_session(resource_id)
            await session.wait_active()
            connection = await session.connect()
            try:
                assert connection.chosen.kind == "direct"  # platform CA bundle: verifiable
                await connection.resize(100, 30)
                await connection.write(b"echo sdk-$((20+3))\n")
                seen = b""
                deadline = time.monotonic() + 15
                while b"sdk-23" not in seen and time.monotonic() < deadline:
                    seen += await asyncio.wait_for(connection.read(), 15)
                result = await connection.upload(payload)
            finally:
                await connection.close()
            ended = await rap.terminate_session(session.id)
            return seen.decode(errors="replace"), result.path, str(ended.state)

    output, path, _ = asyncio.run(go())
    assert "sdk-23" in output
    assert path == f"RAP_Transfers/{payload.name}"
    landed = Path(pwd.getpwnam(sshd.username).pw_dir) / path
    assert hashlib.sha256(landed.read_bytes()).hexdigest() == hashlib.sha256(payload.read_bytes()).hexdigest()


def _rapctl(plane: Cluster, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "rapctl"), *args],
        env=base_env(RAP_ADDRESS=plane.a.target, RAP_TOKEN=plane.admin.token),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rapctl_ssh_and_upload_by_resource_name(
    plane: Cluster, sshd: Sshd, worker: WorkerProcess, tmp_path: Path
) -> None:
    resource_id = plane.ssh_resource(sshd)
    name = plane.admin.resources.GetResource(resource_pb2.GetResourceRequest(id=resource_id)).resource.name
    shell = _rapctl(plane, "ssh", name, stdin="whoami\nexit\n")
    assert shell.returncode == 0, shell.stderr
    assert sshd.username in shell.stdout
    assert sshd.password not in shell.stdout + shell.stderr
    file = tmp_path / f"cli-{os.getpid()}.txt"
    file.write_text("hello through rapctl\n")
    uploaded = _rapctl(plane, "upload", name, str(file))
    assert uploaded.returncode == 0, uploaded.stderr
    assert uploaded.stdout.strip() == f"RAP_Transfers/{file.name}"
    landed = Path(pwd.getpwnam(sshd.username).pw_dir) / uploaded.stdout.strip()
    assert landed.read_text() == "hello through rapctl\n"
    again = _rapctl(plane, "upload", name, str(file))
    assert again.returncode == 1 and "file_exists" in again.stderr
    missing = _rapctl(plane, "ssh", "no-such-resource", stdin="")
    assert missing.returncode == 1 and "no resource is named" in missing.stderr


def test_smoke_mode_connects_only_when_asked_and_never_in_production(
    postgres_url: str, sshd: Sshd, tmp_path: Path
) -> None:
    with cluster(
        postgres_url, tmp_path, None, DATA_PLANE_DIRECT_WORKER_TLS_TRUST_MODE="smoke_insecure"
    ) as smoke:
        smoke.enroll_worker("smoke")
        resource_id = smoke.ssh_resource(sshd)

        async def attempt(**options: bool) -> str:
            async with RapClient(smoke.a.target, smoke.admin.token, **options) as rap:
                session = await rap.start_session(resource_id)
                await session.wait_active()
                try:
                    connection = await session.connect(takeover=True)
                except FailedPrecondition as refused:
                    return refused.reason
                try:
                    await connection.write(b"echo smoke-$((4*4))\n")
                    seen = b""
                    while b"smoke-16" not in seen:
                        seen += await asyncio.wait_for(connection.read(), 15)
                    return connection.chosen.kind
                finally:
                    await connection.close()
                    await rap.terminate_session(session.id)

        assert asyncio.run(attempt()) == "no_candidate"
        assert asyncio.run(attempt(production=True)) == "no_candidate"
        assert asyncio.run(attempt(allow_smoke_insecure=True)) == "direct_smoke_only"
