"""Enrollment: a fresh key and CSR, exchanged with a one-time token for a certificate."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rap.v1 import worker_pb2, worker_pb2_grpc
from rap_common.secrets import SecretBytes
from rap_worker.rpc import user_channel
from rap_worker.state import WorkerIdentity


def new_key_and_csr(name: str) -> tuple[SecretBytes, str]:
    """A P-256 key (PEM, unencrypted: it lives in a 0600 file) and a CSR for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64] or "rap-worker")]))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SecretBytes(pem), csr.public_bytes(serialization.Encoding.PEM).decode()


async def enroll(
    target: str,
    token: str,
    name: str,
    host_names: list[str],
    *,
    tls_ca_pem: bytes | None,
) -> WorkerIdentity:
    """Enroll at the control plane's user-facing port (the worker has no certificate yet)."""
    key_pem, csr_pem = new_key_and_csr(name)
    async with user_channel(target, tls_ca_pem) as channel:
        response = await worker_pb2_grpc.WorkerServiceStub(channel).Enroll(
            worker_pb2.EnrollRequest(
                enrollment_token=token, csr_pem=csr_pem, name=name, direct_host_names=host_names
            ),
            timeout=30,
        )
    return WorkerIdentity(
        worker_id=response.worker_id,
        key_pem=key_pem,
        certificate_pem=response.certificate_pem.encode(),
        ca_pem=response.ca_bundle_pem.encode(),
    )
