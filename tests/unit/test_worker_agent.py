"""The worker agent's pure parts: renewal timing, credential holders, development credentials."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import struct_pb2

from rap.v1 import resolver_pb2, worker_pb2
from rap_common.identity import PlatformIdentity
from rap_common.secrets import SecretBytes
from rap_worker.agent import seconds_until_renewal
from rap_worker.credentials import from_development_metadata, from_resolved


def _identity(not_before: dt.datetime, hours: int) -> PlatformIdentity:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "w")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(hours=hours))
        .sign(key, hashes.SHA256())
    )
    return PlatformIdentity(
        "w", "worker", SecretBytes(b""), cert.public_bytes(serialization.Encoding.PEM), b""
    )


def test_renewal_comes_when_a_third_of_the_lifetime_is_left() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    identity = _identity(start, 24)
    assert seconds_until_renewal(identity, start) == 16 * 3600
    assert seconds_until_renewal(identity, start + dt.timedelta(hours=16)) == 0
    assert seconds_until_renewal(identity, start + dt.timedelta(hours=20)) < 0


def test_a_resolved_credential_prints_redacted_and_is_dropped() -> None:
    response = resolver_pb2.ResolveSecretResponse(rotation_version=3)
    response.ssh.username, response.ssh.password = "alice", "Unit-canary-1"
    credential = from_resolved(response)
    assert credential.username == "alice" and credential.rotation_version == 3
    assert "Unit-canary-1" not in repr(credential) and "Unit-canary-1" not in f"{credential}"
    assert credential.password.reveal() == "Unit-canary-1"
    credential.drop()
    assert credential.password.reveal() == ""


def test_metadata_credentials_are_for_development_only() -> None:
    metadata = {"username": "bob", "password": "Dev-canary"}
    struct = struct_pb2.Struct()
    struct.update(metadata)
    dev = worker_pb2.Assignment(session_id="s", environment=worker_pb2.ENVIRONMENT_DEVELOPMENT)
    prod = worker_pb2.Assignment(session_id="s", environment=worker_pb2.ENVIRONMENT_PRODUCTION)
    unknown = worker_pb2.Assignment(session_id="s")
    found = from_development_metadata(dev, metadata)
    assert found is not None and found.username == "bob" and found.password.reveal() == "Dev-canary"
    assert from_development_metadata(prod, metadata) is None
    assert from_development_metadata(unknown, metadata) is None
