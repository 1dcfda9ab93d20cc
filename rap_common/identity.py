"""Platform identities: what a worker and a gateway hold, and how they get it.

An identity is a key, a certificate from the platform CA and the CA bundle.
Its certificate names it in a URI SAN ``rap://<role>/<id>``: the role
(``worker`` or ``gateway``) comes from the enrollment token and is what
every worker-facing check reads. A gateway's identity can never pass for a
worker's: the control plane and the workers' direct endpoints compare the
role before anything else.

The state directory holds the identity on disk: files written whole (a
temporary file, then a rename) with mode 0600 in a directory of mode 0700,
so a crash mid-write never leaves half a key.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rap.v1 import identity_pb2, worker_pb2, worker_pb2_grpc
from rap_common.errors import ConfigError
from rap_common.secrets import SecretBytes

ROLE_WORKER = "worker"
ROLE_GATEWAY = "gateway"
ROLES = (ROLE_WORKER, ROLE_GATEWAY)
URI_SCHEME = "rap://"

ROLE_TO_PROTO = {
    ROLE_WORKER: identity_pb2.IDENTITY_ROLE_WORKER,
    ROLE_GATEWAY: identity_pb2.IDENTITY_ROLE_GATEWAY,
}
PROTO_TO_ROLE = {v: k for k, v in ROLE_TO_PROTO.items()}

# State files. The names predate gateways; a gateway's directory has the same layout.
KEY, CERT, CA, INFO = "worker-key.pem", "worker-cert.pem", "platform-ca.pem", "worker.json"


def identity_uri(role: str, identity_id: uuid.UUID | str) -> str:
    """The URI SAN naming an identity: ``rap://<role>/<id>``."""
    if role not in ROLES:
        raise ValueError(f"unknown identity role {role!r}")
    return f"{URI_SCHEME}{role}/{identity_id}"


def parse_identity_uri(uri: str) -> tuple[str, uuid.UUID] | None:
    """(role, id) of ``rap://<role>/<id>``, or None for any other URI."""
    if not uri.startswith(URI_SCHEME):
        return None
    role, _, rest = uri[len(URI_SCHEME) :].partition("/")
    if role not in ROLES:
        return None
    try:
        return role, uuid.UUID(rest)
    except ValueError:
        return None


def _single(found: Iterable[tuple[str, uuid.UUID]]) -> tuple[str, uuid.UUID] | None:
    # A certificate naming two identities is no identity at all.
    unique = set(found)
    return next(iter(unique)) if len(unique) == 1 else None


def identity_of_certificate(certificate: x509.Certificate) -> tuple[str, uuid.UUID] | None:
    """The (role, id) a certificate names in its URI SANs, or None."""
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    parsed = (parse_identity_uri(uri) for uri in sans.get_values_for_type(x509.UniformResourceIdentifier))
    return _single(p for p in parsed if p is not None)


def identity_of_peercert(peercert: dict[str, Any] | None) -> tuple[str, uuid.UUID] | None:
    """The (role, id) of a TLS peer certificate in the form ``ssl`` gives (``getpeercert()``)."""
    if not peercert:
        return None
    parsed = (
        parse_identity_uri(str(value)) for kind, value in peercert.get("subjectAltName", ()) if kind == "URI"
    )
    return _single(p for p in parsed if p is not None)


@dataclass(frozen=True)
class PlatformIdentity:
    identity_id: str
    role: str
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
    """An identity's files on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, identity: PlatformIdentity) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        _write(self.path / KEY, identity.key_pem.reveal())
        _write(self.path / CERT, identity.certificate_pem)
        _write(self.path / CA, identity.ca_pem)
        _write(
            self.path / INFO,
            json.dumps({"worker_id": identity.identity_id, "role": identity.role}).encode(),
        )

    def exists(self) -> bool:
        return (self.path / INFO).is_file()

    def load(self, role: str | None = None) -> PlatformIdentity:
        """The identity, or ConfigError; with ``role``, an identity of another role is refused."""
        try:
            info = json.loads((self.path / INFO).read_text())
            identity = PlatformIdentity(
                identity_id=str(info["worker_id"]),
                role=str(info.get("role", ROLE_WORKER)),
                key_pem=SecretBytes((self.path / KEY).read_bytes()),
                certificate_pem=(self.path / CERT).read_bytes(),
                ca_pem=(self.path / CA).read_bytes(),
            )
        except (OSError, ValueError, KeyError) as exc:
            how = f"run `rap-{role} enroll` first" if role else "enroll first"
            raise ConfigError(
                f"the identity in {self.path} is missing or unreadable ({type(exc).__name__}); {how}"
            ) from None
        if role is not None and identity.role != role:
            raise ConfigError(
                f"{self.path} holds a {identity.role} identity, not a {role}: "
                f"run `rap-{role} enroll` with a {role} token"
            )
        return identity


def enrollment_token(token_file: str | None) -> str:
    """The one-time enrollment token: from ``token_file``, else ``RAP_ENROLLMENT_TOKEN``;
    never from the command line, where every user of the host could read it."""
    if token_file:
        return Path(token_file).read_text().strip()
    token = os.environ.get("RAP_ENROLLMENT_TOKEN", "").strip()
    if not token:
        raise ConfigError("give the enrollment token in RAP_ENROLLMENT_TOKEN or with --token-file")
    return token


def new_key_and_csr(name: str) -> tuple[SecretBytes, str]:
    """A P-256 key (PEM, unencrypted: it lives in a 0600 file) and a CSR for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64] or "rap-identity")]))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SecretBytes(pem), csr.public_bytes(serialization.Encoding.PEM).decode()


# Keepalives notice a dead replica (or a dead link) within seconds, not minutes.
_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def platform_channel(target: str, identity: PlatformIdentity) -> grpc.aio.Channel:
    """mTLS under the platform CA to the control plane's worker port: the server must
    hold a platform certificate, and the identity presents its own."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=identity.ca_pem,
        private_key=identity.key_pem.reveal(),
        certificate_chain=identity.certificate_pem,
    )
    return grpc.aio.secure_channel(target, credentials, options=_OPTIONS)


def user_channel(target: str, tls_ca_pem: bytes | None) -> grpc.aio.Channel:
    """The user-facing port, for enrollment: TLS when a CA bundle is given, else plaintext
    (development only)."""
    if tls_ca_pem is None:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=tls_ca_pem))


async def enroll(
    target: str,
    token: str,
    name: str,
    host_names: list[str],
    *,
    tls_ca_pem: bytes | None,
    expected_role: str,
) -> PlatformIdentity:
    """Enroll at the control plane's user-facing port (there is no certificate yet).

    The role comes from the token; a token of another role than
    ``expected_role`` is a ConfigError (the identity is not saved), so a
    gateway token cannot make a worker or the reverse by mistake.
    """
    key_pem, csr_pem = new_key_and_csr(name)
    async with user_channel(target, tls_ca_pem) as channel:
        response = await worker_pb2_grpc.WorkerServiceStub(channel).Enroll(
            worker_pb2.EnrollRequest(
                enrollment_token=token, csr_pem=csr_pem, name=name, direct_host_names=host_names
            ),
            timeout=30,
        )
    role = PROTO_TO_ROLE.get(response.role, ROLE_WORKER)
    if role != expected_role:
        raise ConfigError(
            f"the enrollment token was for a {role}, not a {expected_role}; ask for a {expected_role} token"
        )
    return PlatformIdentity(
        identity_id=response.worker_id,
        role=role,
        key_pem=key_pem,
        certificate_pem=response.certificate_pem.encode(),
        ca_pem=response.ca_bundle_pem.encode(),
    )


def enroll_state_dir(
    state_dir: Path,
    *,
    control: str,
    token_file: str | None,
    tls_ca_file: str | None,
    name: str,
    host_names: list[str],
    role: str,
    force: bool,
) -> PlatformIdentity:
    """``rap-worker enroll`` and ``rap-gateway enroll``: enroll and write the identity's
    files, refusing to overwrite an enrolled identity unless ``force``."""
    import asyncio

    state = StateDir(state_dir)
    if state.exists() and not force:
        raise ConfigError(f"{state.path} already holds an enrolled identity (use --force to enroll anew)")
    ca = Path(tls_ca_file).read_bytes() if tls_ca_file else None
    identity = asyncio.run(
        enroll(
            control,
            enrollment_token(token_file),
            name,
            host_names,
            tls_ca_pem=ca,
            expected_role=role,
        )
    )
    state.save(identity)
    return identity


async def renew(channel: grpc.aio.Channel, identity: PlatformIdentity) -> PlatformIdentity:
    """A fresh key and certificate of the same identity and role, from the platform CA."""
    key_pem, csr_pem = new_key_and_csr(f"rap-{identity.role}-{identity.identity_id}")
    response = await worker_pb2_grpc.WorkerServiceStub(channel).RenewCertificate(
        worker_pb2.RenewCertificateRequest(csr_pem=csr_pem), timeout=30
    )
    return PlatformIdentity(
        identity_id=identity.identity_id,
        role=identity.role,
        key_pem=key_pem,
        certificate_pem=response.certificate_pem.encode(),
        ca_pem=response.ca_bundle_pem.encode(),
    )


def seconds_until_renewal(identity: PlatformIdentity, now: Any) -> float:
    """Renew when less than a third of the certificate's lifetime is left."""
    certificate = identity.certificate()
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    renew_at = certificate.not_valid_after_utc - lifetime / 3
    return float((renew_at - now).total_seconds())


async def fetch_data_plane_keys(channel: grpc.aio.Channel) -> dict[str, dict[str, str]]:
    """The published data-plane keys, by kid, read with the identity's own certificate."""
    response = await worker_pb2_grpc.WorkerServiceStub(channel).GetDataPlaneKeys(
        worker_pb2.GetDataPlaneKeysRequest(), timeout=15
    )
    return jwks_from_proto(response.jwks)


def jwks_from_proto(jwks: Any) -> dict[str, dict[str, str]]:
    """A JsonWebKeySet message as the kid -> JWK mapping token verification takes."""
    return {
        k.kid: {"kid": k.kid, "kty": k.kty, "alg": k.alg, "use": k.use, "n": k.n, "e": k.e} for k in jwks.keys
    }
