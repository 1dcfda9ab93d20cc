"""Every RPC of every rap.v1 service is implemented, or answers UNIMPLEMENTED on purpose.

The planned ones are listed here by name: adding a service or a method to
the contract without either implementing it or listing it fails this test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory

import rap.v1
from rap.v1 import admin_pb2, audit_pb2, resolver_pb2, resource_pb2, secret_pb2, session_pb2, worker_pb2
from rap_control.api.admin import AdminServicer
from rap_control.api.audit import AuditServicer
from rap_control.api.planned import PLANNED
from rap_control.api.resolver import SecretResolverServicer
from rap_control.api.resources import ResourceServicer
from rap_control.api.secrets import SecretServicer
from rap_control.api.sessions import SessionServicer
from rap_control.api.workers import WorkerServicer
from tests.conftest import Org
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration

# The RPCs this version answers UNIMPLEMENTED, on purpose, until their issue lands.
EXPECTED_PLANNED: set[str] = set()

SERVICERS = {
    cls.SERVICE_NAME: cls
    for cls in (
        ResourceServicer,
        AdminServicer,
        AuditServicer,
        SecretServicer,
        SessionServicer,
        WorkerServicer,
        SecretResolverServicer,
    )
}


def all_rpcs() -> list[Any]:
    """Every method of every service in every rap.v1 proto file."""
    methods = []
    for module in (resource_pb2, secret_pb2, session_pb2, worker_pb2, resolver_pb2, audit_pb2, admin_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            methods.extend(service.methods)
    return methods


def rpc_name(method: Any) -> str:
    return f"{method.containing_service.full_name}/{method.name}"


def test_the_generated_package_holds_every_proto_of_the_contract() -> None:
    protos = {p.stem for p in (Path(__file__).parents[2] / "protos" / "rap" / "v1").glob("*.proto")}
    generated = {p.name.removesuffix("_pb2.py") for p in Path(rap.v1.__file__).parent.glob("*_pb2.py")}
    assert protos == generated


def test_every_rpc_is_implemented_or_planned() -> None:
    services = {m.containing_service.full_name for m in all_rpcs()}
    assert services == set(SERVICERS), "a rap.v1 service has no servicer"
    for method in all_rpcs():
        servicer = SERVICERS[method.containing_service.full_name]
        assert method.name in vars(servicer), f"{rpc_name(method)} falls back to the generated stub"
    assert set(PLANNED) == EXPECTED_PLANNED
    implemented = {rpc_name(m) for m in all_rpcs()} - EXPECTED_PLANNED
    assert implemented >= {
        "rap.v1.ResourceService/CreateResource",
        "rap.v1.AuditService/VerifyAuditChain",
        "rap.v1.AdminService/CreateApiToken",
    }


def _call(channel: grpc.Channel, method: Any, token: str) -> grpc.RpcError | None:
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    path = f"/{rpc_name(method)}"
    kwargs = {
        "request_serializer": request_cls.SerializeToString,
        "response_deserializer": response_cls.FromString,
    }
    md = (("authorization", f"Bearer {token}"),)
    try:
        if method.client_streaming and method.server_streaming:
            list(channel.stream_stream(path, **kwargs)(iter([request_cls()]), metadata=md, timeout=10))
        elif method.server_streaming:
            list(channel.unary_stream(path, **kwargs)(request_cls(), metadata=md, timeout=10))
        elif method.client_streaming:
            channel.stream_unary(path, **kwargs)(iter([request_cls()]), metadata=md, timeout=10)
        else:
            channel.unary_unary(path, **kwargs)(request_cls(), metadata=md, timeout=10)
    except grpc.RpcError as error:
        return error
    return None


def test_over_grpc_planned_rpcs_say_so_and_implemented_ones_do_not(
    dev_server: ServerThread, org: Org
) -> None:
    with dev_server.channel() as channel:
        for method in all_rpcs():
            error = _call(channel, method, org.admin_token)
            code = error.code() if error else grpc.StatusCode.OK
            if rpc_name(method) in EXPECTED_PLANNED:
                assert code == grpc.StatusCode.UNIMPLEMENTED, rpc_name(method)
                assert method.name in error.details()
                assert "not implemented yet" in error.details()
            else:
                assert code != grpc.StatusCode.UNIMPLEMENTED, rpc_name(method)
                assert code != grpc.StatusCode.INTERNAL, (rpc_name(method), error and error.details())


def _buf() -> str:
    found = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    assert found, "buf (from the buf-bin wheel) is part of the test extra"
    return found


def test_buf_curl_lists_the_services_through_reflection(dev_server: ServerThread) -> None:
    out = subprocess.run(
        [
            _buf(),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--list-services",
            f"http://{dev_server.target}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    for service in SERVICERS:
        assert service in out
    assert "grpc.health.v1.Health" in out


def test_buf_curl_calls_an_rpc_with_a_bearer_token(dev_server: ServerThread, org: Org) -> None:
    result = subprocess.run(
        [
            _buf(),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "-H",
            f"authorization: Bearer {org.admin_token}",
            "-d",
            json.dumps(
                {"resource": {"name": "via-buf", "protocol": "PROTOCOL_TCP", "address": "db.internal:5432"}}
            ),
            f"http://{dev_server.target}/rap.v1.ResourceService/CreateResource",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    created = json.loads(result.stdout)["resource"]
    assert created["name"] == "via-buf"
    assert created["organizationId"] == org.id
