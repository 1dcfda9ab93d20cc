"""ResourceService: validate the request, call the domain, convert the answer."""

from __future__ import annotations

from typing import Any

from rap.v1 import resource_pb2, resource_pb2_grpc
from rap_common.errors import InvalidArgument
from rap_control.api import convert
from rap_control.api.calls import Calls
from rap_control.ids import parse_id, require_id
from rap_control.paging import page_request
from rap_control.resources.service import ResourceService
from rap_control.resources.types import ResourcePatch, ResourceSpec

UPDATABLE = ("name", "address", "secret_ref", "metadata")


def _patch(resource: resource_pb2.Resource, paths: list[str]) -> ResourcePatch:
    if not paths:
        raise InvalidArgument(
            f"update_mask is required: name the fields to replace ({', '.join(UPDATABLE)})",
            reason="missing_field",
        )
    fields: dict[str, Any] = {}
    for path in paths:
        if path == "protocol":
            raise InvalidArgument(
                "protocol cannot change: create a new resource instead", reason="immutable_field"
            )
        if path not in UPDATABLE:
            raise InvalidArgument(
                f"update_mask path {path[:64]!r} is not one of {', '.join(UPDATABLE)}",
                reason="bad_update_mask",
            )
        if path == "metadata":
            fields["metadata"] = convert.struct_to_dict(resource.metadata)
        elif path == "secret_ref" and not resource.secret_ref:
            fields["clear_secret_ref"] = True
        else:
            fields[path] = getattr(resource, path)
    return ResourcePatch(**fields)


class ResourceServicer(resource_pb2_grpc.ResourceServiceServicer):
    SERVICE_NAME = "rap.v1.ResourceService"

    def __init__(self, calls: Calls, service: ResourceService) -> None:
        self._calls = calls
        self._service = service

    async def CreateResource(self, request: Any, context: Any) -> resource_pb2.CreateResourceResponse:
        if not request.HasField("resource"):
            raise InvalidArgument("resource is required", reason="missing_field")
        r = request.resource
        protocol = convert.protocol(r.protocol)
        assert protocol is not None
        spec = ResourceSpec(
            name=r.name,
            protocol=protocol,
            address=r.address,
            secret_ref=r.secret_ref or None,
            metadata=convert.struct_to_dict(r.metadata),
        )
        resource_id = parse_id(request.resource_id, "resource_id", required=False)
        created = await self._calls.run(lambda uow, call: self._service.create(uow, call, spec, resource_id))
        return resource_pb2.CreateResourceResponse(resource=convert.resource_to_proto(created))

    async def GetResource(self, request: Any, context: Any) -> resource_pb2.GetResourceResponse:
        resource_id = require_id(request.id, "id")
        found = await self._calls.run(lambda uow, call: self._service.get(uow, call, resource_id))
        return resource_pb2.GetResourceResponse(resource=convert.resource_to_proto(found))

    async def ListResources(self, request: Any, context: Any) -> resource_pb2.ListResourcesResponse:
        page = page_request(request.page_size, request.page_token)
        protocol = convert.protocol(request.protocol, "protocol", required=False)
        rows, next_key = await self._calls.run(
            lambda uow, call: self._service.list(uow, call, page, protocol)
        )
        return resource_pb2.ListResourcesResponse(
            resources=[convert.resource_to_proto(r) for r in rows],
            next_page_token=convert.next_page_token(next_key),
        )

    async def UpdateResource(self, request: Any, context: Any) -> resource_pb2.UpdateResourceResponse:
        if not request.HasField("resource"):
            raise InvalidArgument("resource is required", reason="missing_field")
        resource_id = require_id(request.resource.id, "resource.id")
        patch = _patch(request.resource, list(request.update_mask.paths))
        updated = await self._calls.run(lambda uow, call: self._service.update(uow, call, resource_id, patch))
        return resource_pb2.UpdateResourceResponse(resource=convert.resource_to_proto(updated))

    async def DeleteResource(self, request: Any, context: Any) -> resource_pb2.DeleteResourceResponse:
        resource_id = require_id(request.id, "id")
        await self._calls.run(lambda uow, call: self._service.delete(uow, call, resource_id))
        return resource_pb2.DeleteResourceResponse()
