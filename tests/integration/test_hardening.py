"""Errors stay inside the contract, and health tells the truth about the database."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rap.v1 import resource_pb2
from rap_control.config import Environment
from rap_control.db.engine import Database
from rap_control.keys.local import LocalKeyProvider
from tests.conftest import Org, _settings
from tests.support.server import ServerThread
from tests.support.tcp_proxy import TcpProxy, postgres_upstream, proxied_postgres_url

pytestmark = pytest.mark.integration


def _nested_struct_bytes(depth: int) -> bytes:
    """A CreateResourceRequest whose metadata Struct nests ``depth`` levels, encoded by hand
    (the library refuses to build what it cannot parse)."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(number: int, payload: bytes) -> bytes:
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    struct = b""
    for _ in range(depth):
        value = field(5, struct)  # Value.struct_value
        entry = field(1, b"k") + field(2, value)  # map entry: key, value
        struct = field(1, entry)  # Struct.fields
    fields = resource_pb2.Resource.DESCRIPTOR.fields_by_name
    resource = field(fields["name"].number, b"deep") + field(fields["metadata"].number, struct)
    return field(1, resource)


def test_a_request_that_cannot_be_parsed_is_invalid_argument_with_a_request_id(
    dev_server: ServerThread, org: Org
) -> None:
    with dev_server.channel() as channel:
        call = channel.unary_unary(
            "/rap.v1.ResourceService/CreateResource",
            request_serializer=lambda raw: raw,
            response_deserializer=resource_pb2.Resource.FromString,
        )
        with pytest.raises(grpc.RpcError) as caught:
            call(
                _nested_struct_bytes(150),
                metadata=(("authorization", f"Bearer {org.admin_token}"), ("x-request-id", "deep-struct-1")),
                timeout=10,
            )
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailers = dict(error.trailing_metadata() or ())
    assert trailers["x-request-id"] == "deep-struct-1"
    assert trailers["rap-reason"] == "malformed_request"
    assert "Exception" not in error.details() and "Error" not in error.details()


def test_a_request_of_garbage_bytes_is_invalid_argument(dev_server: ServerThread, org: Org) -> None:
    with dev_server.channel() as channel:
        call = channel.unary_unary("/rap.v1.ResourceService/GetResource", request_serializer=lambda raw: raw)
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\xff\xff\xff\xff", metadata=(("authorization", f"Bearer {org.admin_token}"),), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def proxied_server(database_url: str, provider: LocalKeyProvider) -> Iterator[tuple[ServerThread, TcpProxy]]:
    proxy = TcpProxy(postgres_upstream(database_url)).start()
    url = proxied_postgres_url(database_url, proxy.port)
    db = Database(url, pool_size=2)
    server = ServerThread(_settings(Environment.DEVELOPMENT, None, url), db, provider).start()
    yield server, proxy
    server.stop()
    db.close()
    proxy.stop()


def _wait_status(stub: health_pb2_grpc.HealthStub, service: str, wanted: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        if status == wanted:
            return
        time.sleep(0.1)
    raise AssertionError(f"health of {service!r} stayed {status}, wanted {wanted}")


def test_health_is_not_serving_while_the_database_is_down_and_serving_after(
    proxied_server: tuple[ServerThread, TcpProxy],
) -> None:
    server, proxy = proxied_server
    with server.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "rap.v1.SessionService"):
            _wait_status(stub, service, health_pb2.HealthCheckResponse.SERVING)
        proxy.cut()
        for service in ("", "rap.v1.SessionService"):
            _wait_status(stub, service, health_pb2.HealthCheckResponse.NOT_SERVING)
        proxy.restore()
        for service in ("", "rap.v1.SessionService"):
            _wait_status(stub, service, health_pb2.HealthCheckResponse.SERVING)
