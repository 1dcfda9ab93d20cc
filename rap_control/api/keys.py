"""The encryption-key RPCs of AdminService (list, set active, rewrap), for operators."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from rap.v1 import admin_pb2
from rap_common.errors import InvalidArgument
from rap_control.api import convert
from rap_control.api.context import current_call
from rap_control.db.engine import Database
from rap_control.keys.service import KeyService
from rap_control.principal import require_operator
from rap_control.secrets.rewrap import DEFAULT_BATCH, Rewrapper


class KeyRpcs:
    """Mixed into AdminServicer: every call needs an admin of the operator organization."""

    def __init__(
        self, db: Database, keys: KeyService, rewrapper: Rewrapper, operator_org: uuid.UUID | None
    ) -> None:
        self._db = db
        self._keys = keys
        self._rewrapper = rewrapper
        self._operator_org = operator_org

    async def list_keys(self) -> admin_pb2.ListEncryptionKeysResponse:
        call = current_call()
        require_operator(call.principal, self._operator_org)
        keys = await self._db.run(self._keys.status)
        return admin_pb2.ListEncryptionKeysResponse(keys=[convert.key_status_to_proto(k) for k in keys])

    async def set_active(self, request: Any) -> admin_pb2.SetActiveEncryptionKeyResponse:
        call = current_call()
        require_operator(call.principal, self._operator_org)
        if not request.key_id:
            raise InvalidArgument("key_id is required", reason="missing_field")
        key = await self._db.run(lambda uow: self._keys.set_active(uow, call.actor, request.key_id))
        return admin_pb2.SetActiveEncryptionKeyResponse(key=convert.key_status_to_proto(key))

    async def rewrap(self, request: Any) -> AsyncIterator[admin_pb2.RewrapSecretsResponse]:
        call = current_call()
        require_operator(call.principal, self._operator_org)
        run = self._rewrapper.batches(call.actor, request.batch_size or DEFAULT_BATCH)
        progress = await self._db.run(run.start)
        yield admin_pb2.RewrapSecretsResponse(rewrapped=0, remaining=progress.remaining, total=progress.total)
        while True:
            step = await self._db.run(run.next_batch)
            if step is None:
                return
            yield admin_pb2.RewrapSecretsResponse(
                rewrapped=step.rewrapped, remaining=step.remaining, total=step.total
            )
