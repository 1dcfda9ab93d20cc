"""SecretService: store, describe and delete resource secrets. Never returns plaintext."""

from __future__ import annotations

from typing import Any

from rap.v1 import secret_pb2, secret_pb2_grpc
from rap_control.api import convert
from rap_control.api.calls import Calls
from rap_control.ids import require_id
from rap_control.secrets.service import SecretStore


class SecretServicer(secret_pb2_grpc.SecretServiceServicer):
    SERVICE_NAME = "rap.v1.SecretService"

    def __init__(self, calls: Calls, store: SecretStore) -> None:
        self._calls = calls
        self._store = store

    async def PutResourceSecret(self, request: Any, context: Any) -> secret_pb2.PutResourceSecretResponse:
        resource_id = require_id(request.resource_id, "resource_id")
        credential = convert.credential(request)
        info = await self._calls.run(
            lambda uow, call: self._store.put(uow, call, resource_id, request.name, credential)
        )
        return secret_pb2.PutResourceSecretResponse(secret=convert.secret_info_to_proto(info))

    async def GetResourceSecret(self, request: Any, context: Any) -> secret_pb2.GetResourceSecretResponse:
        resource_id = require_id(request.resource_id, "resource_id")
        info = await self._calls.run(lambda uow, call: self._store.get(uow, call, resource_id))
        return secret_pb2.GetResourceSecretResponse(secret=convert.secret_info_to_proto(info))

    async def DeleteResourceSecret(
        self, request: Any, context: Any
    ) -> secret_pb2.DeleteResourceSecretResponse:
        resource_id = require_id(request.resource_id, "resource_id")
        await self._calls.run(lambda uow, call: self._store.delete(uow, call, resource_id))
        return secret_pb2.DeleteResourceSecretResponse()
