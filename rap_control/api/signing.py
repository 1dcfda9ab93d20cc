"""The signing-key RPCs of AdminService: the JWKS, and rotation (operators only)."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence

from rap.v1 import admin_pb2
from rap_common.errors import Unavailable
from rap_control.api import session_convert
from rap_control.api.calls import Calls
from rap_control.coordination.types import Coordination, EventKind, WorkerEvent
from rap_control.db.engine import UnitOfWork
from rap_control.principal import CallContext, require_operator
from rap_control.tokens.keyring import Rotation, SigningKeyRing
from rap_control.workers.repository import WorkerRepository

log = logging.getLogger(__name__)


class SigningKeyRpcs:
    def __init__(
        self,
        calls: Calls,
        ring: SigningKeyRing,
        coordination: Coordination,
        operator_org: uuid.UUID | None,
        overlap_seconds: int,
    ) -> None:
        self._calls = calls
        self._ring = ring
        self._coordination = coordination
        self._operator_org = operator_org
        self._overlap = overlap_seconds

    async def get_jwks(self) -> admin_pb2.GetJwksResponse:
        """The published public keys: any authenticated caller may read them."""

        jwks = await self._calls.run(lambda uow, call: self._ring.jwks(uow))
        return admin_pb2.GetJwksResponse(jwks=session_convert.jwks_to_proto(jwks))

    async def rotate(self) -> admin_pb2.RotateSigningKeyResponse:
        def unit(
            uow: UnitOfWork, call: CallContext
        ) -> tuple[Rotation, dict[str, dict[str, str]], Sequence[uuid.UUID]]:
            require_operator(call.principal, self._operator_org)
            rotation = self._ring.rotate(uow, call.actor, self._overlap)
            return rotation, self._ring.jwks(uow), WorkerRepository(uow.session).online_ids()

        rotation, jwks, workers = await self._calls.run(unit)
        # Every connected worker gets the new set (its replica reads it from PostgreSQL).
        for worker_id in workers:
            with contextlib.suppress(Unavailable):
                await self._coordination.notify(WorkerEvent(EventKind.SIGNING_KEYS_UPDATED, worker_id))
        log.info(
            "signing key %s active; %s retired; %s next",
            rotation.active_kid,
            rotation.retired_kid,
            rotation.next_kid,
        )
        return admin_pb2.RotateSigningKeyResponse(
            jwks=session_convert.jwks_to_proto(jwks), next_kid=rotation.next_kid
        )
