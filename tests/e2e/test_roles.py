"""A stolen gateway key yields no session and no credential (issue: identities have roles).

The gateway's identity comes from `rap-gateway enroll` with a gateway token,
as in production. With its key and certificate an attacker reaches the
worker port over mTLS and tries what a worker does: open Connect, be
scheduled, call ResolveSecret. Each is refused with its reason and audited;
what a gateway may do (read the published keys, renew its own certificate)
still works, and renewal never turns it into a worker.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg2
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from rap.v1 import (
    admin_pb2,
    identity_pb2,
    resolver_pb2,
    resolver_pb2_grpc,
    resource_pb2,
    session_pb2,
    worker_pb2,
    worker_pb2_grpc,
)
from rap_common.identity import ROLE_GATEWAY, StateDir, identity_of_certificate
from tests.conftest import _libpq
from tests.e2e.cluster import Cluster, cluster
from tests.support.client import rpc_error, trailer
from tests.support.pki import make_csr
from tests.support.processes import BIN, base_env, enroll_gateway
from tests.support.raw_worker import RawWorker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CANARY = f"Roles-canary-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def plane(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(
        postgres_url, tmp_path_factory.mktemp("roles"), None, RAP_SESSION_LEASE_TTL_SECONDS="600"
    ) as c:
        yield c


def _gateway_token(plane: Cluster) -> str:
    return plane.admin.admin.CreateWorkerEnrollmentToken(
        admin_pb2.CreateWorkerEnrollmentTokenRequest(
            worker_name="edge", role=identity_pb2.IDENTITY_ROLE_GATEWAY
        )
    ).enrollment_token


class Stolen:
    """The gateway's key and certificate, as an attacker who took its state directory has them."""

    def __init__(self, state: Path, worker_target: str) -> None:
        identity = StateDir(state).load(ROLE_GATEWAY)
        self.id = identity.identity_id
        self.identity = identity
        self.target = worker_target

    def channel(self) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.identity.ca_pem,
            private_key=self.identity.key_pem.reveal(),
            certificate_chain=self.identity.certificate_pem,
        )
        return grpc.secure_channel(self.target, credentials)


@pytest.fixture(scope="module")
def stolen(plane: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Stolen:
    state = enroll_gateway(tmp_path_factory.mktemp("gw"), plane.a.target, _gateway_token(plane))
    return Stolen(state, plane.a.worker_target)


def _refusals(plane: Cluster, method: str) -> list[object]:
    return [e for e in plane.audit("platform_identity_refused") if e.target_id == method]


def test_the_gateway_certificate_names_a_gateway(stolen: Stolen) -> None:
    certificate = stolen.identity.certificate()
    assert identity_of_certificate(certificate) == (ROLE_GATEWAY, uuid.UUID(stolen.id))
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH], "a client certificate only"
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert not sans.get_values_for_type(x509.DNSName) and not sans.get_values_for_type(x509.IPAddress)


def test_a_stolen_gateway_key_is_never_scheduled(plane: Cluster, stolen: Stolen) -> None:
    """No worker is online in this organization; the gateway's row, forced online with
    capacity (as if a bypass had let it advertise), is still never picked."""
    with psycopg2.connect(_libpq(plane.database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE workers SET status = 'online', protocols = '{ssh}', capacity = 100, "
            "last_seen_at = now() WHERE id = %s",
            (stolen.id,),
        )
    resource_id = plane.secret_resource("127.0.0.1:22", "alice", CANARY)
    error = rpc_error(
        plane.admin.sessions.StartSession, session_pb2.StartSessionRequest(resource_id=resource_id)
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    with psycopg2.connect(_libpq(plane.database_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM sessions WHERE worker_id = %s", (stolen.id,))
        assert cur.fetchone() == (0,)
        cur.execute("UPDATE workers SET status = 'offline' WHERE id = %s", (stolen.id,))


def test_a_stolen_gateway_key_cannot_open_connect(plane: Cluster, stolen: Stolen) -> None:
    hello = worker_pb2.ConnectRequest(
        hello=worker_pb2.Hello(version="thief", protocols=[resource_pb2.PROTOCOL_SSH], capacity=100)
    )
    with stolen.channel() as channel:
        stream = worker_pb2_grpc.WorkerServiceStub(channel).Connect(iter([hello]), timeout=15)
        with pytest.raises(grpc.RpcError) as caught:
            next(iter(stream))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert trailer(caught.value, "rap-reason") == "not_a_worker"
    refused = _refusals(plane, "Connect")
    assert refused and refused[-1].details["identity_id"] == stolen.id  # type: ignore[attr-defined]
    assert refused[-1].details["reason"] == "not_a_worker"  # type: ignore[attr-defined]
    workers = plane.admin.admin.ListWorkers(admin_pb2.ListWorkersRequest()).workers
    mine = [w for w in workers if w.id == stolen.id]
    assert mine and mine[0].role == identity_pb2.IDENTITY_ROLE_GATEWAY
    assert mine[0].status != admin_pb2.WORKER_STATUS_ONLINE


def test_a_stolen_gateway_key_cannot_resolve_a_secret(plane: Cluster, stolen: Stolen) -> None:
    worker = RawWorker(plane.admin, plane.a.target, plane.a.worker_target, "real-worker")
    worker.connect(capacity=10)
    try:
        resource_id = plane.secret_resource("127.0.0.1:22", "alice", CANARY)
        session = plane.start(resource_id)
        assignment = worker.assignment(session.id)
        worker.accept(assignment)
        request = {
            "organization_id": assignment.organization_id,
            "resource_id": assignment.resource_id,
            "session_id": assignment.session_id,
            "secret_ref": assignment.secret_ref,
            "lease_token": assignment.lease_token,
        }

        for claimed in (stolen.id, worker.worker_id):
            with stolen.channel() as channel:
                error = rpc_error(
                    resolver_pb2_grpc.SecretResolverStub(channel).ResolveSecret,
                    resolver_pb2.ResolveSecretRequest(worker_id=claimed, **request),
                    timeout=15,
                )
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert trailer(error, "rap-reason") == "not_a_worker"
            assert CANARY not in str(error.details())
        denied = [
            e
            for e in plane.audit("resource_secret_access_denied")
            if e.details["reason"] == "not_a_worker" and e.details["session_id"] == session.id
        ]
        assert len(denied) == 2
        # The real worker still gets it.
        assert worker.resolve(assignment).ssh.password == CANARY
    finally:
        worker.close()


def test_a_gateway_reads_the_keys_and_renews_into_a_gateway(plane: Cluster, stolen: Stolen) -> None:
    with stolen.channel() as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        keys = stub.GetDataPlaneKeys(worker_pb2.GetDataPlaneKeysRequest(), timeout=15)
        assert len(keys.jwks.keys) >= 2 and all(k.kty == "RSA" for k in keys.jwks.keys)
        csr, _ = make_csr()
        renewed = stub.RenewCertificate(worker_pb2.RenewCertificateRequest(csr_pem=csr), timeout=15)
    certificate = x509.load_pem_x509_certificate(renewed.certificate_pem.encode())
    assert identity_of_certificate(certificate) == (ROLE_GATEWAY, uuid.UUID(stolen.id))


def test_a_gateway_token_does_not_enroll_a_worker(plane: Cluster, tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = subprocess.run(
        [str(BIN / "rap-worker"), "enroll", "--control", plane.a.target, "--state-dir", str(state)],
        env=base_env(RAP_ENROLLMENT_TOKEN=_gateway_token(plane)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "for a gateway, not a worker" in result.stderr
    assert not state.exists()


def test_rap_gateway_enroll_says_what_it_did_and_never_echoes_the_token(
    plane: Cluster, tmp_path: Path
) -> None:
    token = _gateway_token(plane)
    state = tmp_path / "gw"
    command = [str(BIN / "rap-gateway"), "enroll", "--control", plane.a.target, "--state-dir", str(state)]
    done = subprocess.run(
        command, env=base_env(RAP_ENROLLMENT_TOKEN=token), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    identity = StateDir(state).load(ROLE_GATEWAY)
    assert (
        done.stdout.strip() == f"enrolled gateway {identity.identity_id}; key and certificate are in {state}"
    )
    # The same token again: the control plane's refusal, one line, without the token.
    again = subprocess.run(
        [*command, "--force"],
        env=base_env(RAP_ENROLLMENT_TOKEN=token),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1
    assert again.stderr.startswith("rap-gateway: the control plane refused: UNAUTHENTICATED")
    assert token not in again.stderr + again.stdout and "Traceback" not in again.stderr
