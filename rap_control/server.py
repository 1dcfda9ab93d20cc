"""Composition root: wire the services into a grpc.aio server.

``build_server(settings, db) -> (server, port)`` binds the listener (port 0
picks a free one, for tests) and returns the server unstarted; ``serve``
runs it until SIGINT or SIGTERM, then stops gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import UTC, datetime

import grpc
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rap.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    resolver_pb2,
    resolver_pb2_grpc,
    resource_pb2,
    resource_pb2_grpc,
    secret_pb2,
    secret_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)
from rap_control.api.admin import AdminServicer
from rap_control.api.audit import AuditServicer
from rap_control.api.interceptor import RapServerInterceptor
from rap_control.api.resolver import SecretResolverServicer
from rap_control.api.resources import ResourceServicer
from rap_control.api.secrets import SecretServicer
from rap_control.api.sessions import SessionServicer
from rap_control.api.workers import WorkerServicer
from rap_control.audit.service import AuditLog
from rap_control.config import ConfigError, Settings
from rap_control.db.engine import Database
from rap_control.keys.provider import KeyProvider
from rap_control.keys.service import KeyService
from rap_control.pki import certificates
from rap_control.plane import Plane, build_plane
from rap_control.principal import Actor

log = logging.getLogger(__name__)

RAP_SERVICES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (resource_pb2, "ResourceService"),
        (secret_pb2, "SecretService"),
        (session_pb2, "SessionService"),
        (worker_pb2, "WorkerService"),
        (resolver_pb2, "SecretResolver"),
        (audit_pb2, "AuditService"),
        (admin_pb2, "AdminService"),
    )
)


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
    )


async def build_server(
    settings: Settings, db: Database, provider: KeyProvider, plane: Plane | None = None
) -> tuple[grpc.aio.Server, int]:
    """A server with every rap.v1 service, health and reflection, bound but not started.

    Composition only: it touches no database. Call :func:`register_keys`
    before serving secrets, and start ``plane`` (shared with the worker
    server) to deliver sessions.
    """
    plane = plane or build_plane(settings, db, provider)
    calls = plane.calls
    server = grpc.aio.server(
        interceptors=[RapServerInterceptor()],
        # Two replicas on one host must never share a port by accident.
        options=[("grpc.so_reuseport", 0)],
    )
    resource_pb2_grpc.add_ResourceServiceServicer_to_server(ResourceServicer(calls, plane.resources), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(
            calls,
            plane.identity,
            plane.key_rpcs,
            plane.enrollment,
            plane.coordination,
            plane.signing_rpcs,
            plane.revocations,
        ),
        server,
    )
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(calls, plane.audit), server)
    secret_pb2_grpc.add_SecretServiceServicer_to_server(SecretServicer(calls, plane.store), server)
    session_pb2_grpc.add_SessionServiceServicer_to_server(
        SessionServicer(
            calls, plane.sessions, plane.attachments, plane.authority, settings, plane.coordination
        ),
        server,
    )
    _add_worker_services(server, plane)

    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # SERVING only while the database, the bus and the key provider answer.
    await plane.health.register(health_servicer, RAP_SERVICES)
    reflection.enable_server_reflection(
        (*RAP_SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )

    address = f"{settings.listen_host}:{settings.listen_port}"
    credentials = _credentials(settings)
    try:
        port = (
            server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        )
    except RuntimeError as exc:
        raise ConfigError(
            f"RAP_LISTEN_ADDRESS {address} could not be bound (in use, or not an address here)"
        ) from exc
    return server, port


WORKER_SERVICES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in ((worker_pb2, "WorkerService"), (resolver_pb2, "SecretResolver"))
)


def _add_worker_services(server: grpc.aio.Server, plane: Plane) -> None:
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(
        WorkerServicer(plane.db, plane.enrollment, plane.streams, plane.ring), server
    )
    resolver_pb2_grpc.add_SecretResolverServicer_to_server(
        SecretResolverServicer(plane.db, plane.resolution), server
    )


async def build_worker_server(
    settings: Settings, db: Database, provider: KeyProvider, plane: Plane | None = None
) -> tuple[grpc.aio.Server, int, str]:
    """The worker-facing listener: mTLS, client certificates from the platform CA only.

    Its own certificate comes from the platform CA too (a fresh key each start),
    so a worker verifies it with the bundle it got at enrollment. Returns the
    server (bound, not started), its port and the CA bundle.
    """
    plane = plane or build_plane(settings, db, provider)
    ca = await db.run(plane.authority.get)
    names = ["localhost", "127.0.0.1", *settings.worker_tls_names]
    if settings.worker_listen_host not in ("0.0.0.0", "::", "localhost", "127.0.0.1"):  # noqa: S104 - comparing, not binding
        names.append(settings.worker_listen_host)
    key, certificate = certificates.issue_server_certificate(ca.key, ca.certificate, names, datetime.now(UTC))
    credentials = grpc.ssl_server_credentials(
        [
            (
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                certificate.public_bytes(serialization.Encoding.PEM),
            )
        ],
        root_certificates=ca.certificate_pem.encode(),
        require_client_auth=True,
    )
    server = grpc.aio.server(interceptors=[RapServerInterceptor()], options=[("grpc.so_reuseport", 0)])
    _add_worker_services(server, plane)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await plane.health.register(health_servicer, WORKER_SERVICES)
    address = f"{settings.worker_listen_host}:{settings.worker_listen_port}"
    try:
        port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise ConfigError(f"RAP_WORKER_LISTEN_ADDRESS {address} could not be bound") from exc
    return server, port, ca.certificate_pem


async def register_keys(db: Database, provider: KeyProvider) -> str:
    """Register the provider's keys in the database and return the active key id.

    A replica whose key material does not include the active key refuses to
    start (see KeyService.register_at_startup).
    """
    keys = KeyService(AuditLog(), provider)
    active = await db.run(lambda uow: keys.register_at_startup(uow, Actor.system("startup")))
    log.info("encryption key %s is active (provider %s)", active, provider.name)
    return active


async def serve(settings: Settings, db: Database, provider: KeyProvider) -> None:
    """Run the control plane until SIGINT or SIGTERM."""
    await register_keys(db, provider)
    plane = build_plane(settings, db, provider)
    server, port = await build_server(settings, db, provider, plane)
    worker_server, worker_port, _ = await build_worker_server(settings, db, provider, plane)
    await plane.start()
    await server.start()
    await worker_server.start()
    log.info("worker-facing services (mTLS, platform CA) on %s:%d", settings.worker_listen_host, worker_port)
    log.info(
        "RAP control plane serving on %s:%d (%s, %s)",
        settings.listen_host,
        port,
        "TLS" if settings.tls else "plaintext",
        settings.app_env.value,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing calls in flight (5 s at most)")
    await asyncio.gather(server.stop(grace=5), worker_server.stop(grace=5))
    await plane.close()
