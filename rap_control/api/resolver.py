"""SecretResolver: credentials for the worker that holds a session's live lease (mTLS only)."""

from __future__ import annotations

from typing import Any

from rap.v1 import resolver_pb2, resolver_pb2_grpc
from rap_control.api import session_convert
from rap_control.api.context import current_request_id, optional_peer_certificate
from rap_control.db.engine import Database
from rap_control.sessions.resolver import ResolveRequest, SecretResolution


class SecretResolverServicer(resolver_pb2_grpc.SecretResolverServicer):
    SERVICE_NAME = "rap.v1.SecretResolver"

    def __init__(self, db: Database, resolution: SecretResolution) -> None:
        self._db = db
        self._resolution = resolution

    async def ResolveSecret(self, request: Any, context: Any) -> resolver_pb2.ResolveSecretResponse:
        # A call without a client certificate is refused inside the unit, so
        # that the refusal is audited too.
        peer, request_id = optional_peer_certificate(), current_request_id()
        ask = ResolveRequest(
            organization_id=request.organization_id,
            resource_id=request.resource_id,
            worker_id=request.worker_id,
            session_id=request.session_id,
            secret_ref=request.secret_ref,
            lease_token=request.lease_token,
        )
        resolved = await self._db.run(lambda uow: self._resolution.resolve(uow, peer, ask, request_id))
        return session_convert.credential_to_proto(resolved.credential, resolved.rotation_version)
