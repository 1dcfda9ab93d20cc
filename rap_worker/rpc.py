"""gRPC channels to the control plane: mTLS to the worker port, TLS or plaintext to the user port."""

from __future__ import annotations

import grpc

from rap_worker.state import WorkerIdentity

# Keepalives notice a dead replica (or a dead link) within seconds, not minutes.
_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def worker_channel(target: str, identity: WorkerIdentity) -> grpc.aio.Channel:
    """mTLS under the platform CA: the server must hold a platform certificate, and
    the worker presents its own."""
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
