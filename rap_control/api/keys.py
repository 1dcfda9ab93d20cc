"""The encryption-key RPCs of AdminService (list, set active, rewrap), for operators."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from rap.v1 import admin_pb2
from rap_common.errors import InvalidArgument
from rap_control.api import convert
from rap_control.api.calls import Calls
from rap_control.db.engine import UnitOfWork
from rap_control.keys.service import KeyService, KeyStatus
from rap_control.principal import CallContext, require_operator
from rap_control.secrets.rewrap import DEFAULT_BATCH, Rewrapper


class KeyRpcs:
    """Used by AdminServicer: every call needs an admin of the operator organization."""

    def __init__(
        self, calls: Calls, keys: KeyService, rewrapper: Rewrapper, operator_org: uuid.UUID | None
    ) -> None:
        self._calls = calls
        self._keys = keys
        self._rewrapper = rewrapper
        self._operator_org = operator_org

    async def list_keys(self) -> admin_pb2.ListEncryptionKeysResponse:
        def unit(uow: UnitOfWork, call: CallContext) -> list[KeyStatus]:
            require_operator(call.principal, self._operator_org)
            return self._keys.status(uow)

        keys = await self._calls.run(unit)
        return admin_pb2.ListEncryptionKeysResponse(keys=[convert.key_status_to_proto(k) for k in keys])

    async def set_active(self, request: Any) -> admin_pb2.SetActiveEncryptionKeyResponse:
        if not request.key_id:
            raise InvalidArgument("key_id is required", reason="missing_field")

        def unit(uow: UnitOfWork, call: CallContext) -> KeyStatus:
            require_operator(call.principal, self._operator_org)
            return self._keys.set_active(uow, call.actor, request.key_id)

        key = await self._calls.run(unit)
        return admin_pb2.SetActiveEncryptionKeyResponse(key=convert.key_status_to_proto(key))

    async def rewrap(self, request: Any) -> AsyncIterator[admin_pb2.RewrapSecretsResponse]:
        call = await self._calls.authenticate()
        require_operator(call.principal, self._operator_org)
        run = self._rewrapper.batches(call.actor, request.batch_size or DEFAULT_BATCH)
        progress = await self._calls.db.run(run.start)
        yield admin_pb2.RewrapSecretsResponse(rewrapped=0, remaining=progress.remaining, total=progress.total)
        while True:
            step = await self._calls.db.run(run.next_batch)
            if step is None:
                return
            yield admin_pb2.RewrapSecretsResponse(
                rewrapped=step.rewrapped, remaining=step.remaining, total=step.total
            )
