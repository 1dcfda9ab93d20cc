"""Bearer-token authentication and the interceptor, over real gRPC on loopback."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rap.v1 import admin_pb2, resource_pb2, resource_pb2_grpc
from rap_control.api.interceptor import RapServerInterceptor
from rap_control.db.engine import Database
from rap_control.identity.tokens import new_api_token
from rap_control.keys.local import LocalKeyProvider
from tests.conftest import Org
from tests.support.client import Client, rpc_error, trailer
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration


def _list(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]) -> resource_pb2.ListResourcesResponse:
    stub = resource_pb2_grpc.ResourceServiceStub(channel)
    return stub.ListResources(resource_pb2.ListResourcesRequest(), metadata=metadata, timeout=10)


def _refused(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    error = rpc_error(_list, channel, metadata)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert trailer(error, "x-request-id")
    return trailer(error, "rap-reason"), error.details()


def test_missing_and_malformed_tokens_are_unauthenticated(dev_server: ServerThread) -> None:
    with dev_server.channel() as channel:
        assert _refused(channel, ())[0] == "missing_token"
        for value in (
            "Bearer",
            "Basic dXNlcjpwYXNz",
            "Bearer not-a-rap-token",
            "Bearer rap_api_short",
            "rap_api_x",
        ):
            reason, details = _refused(channel, (("authorization", value),))
            assert reason == "malformed_token", value
            assert "Bearer" in details


def test_an_unknown_token_is_unauthenticated(dev_server: ServerThread) -> None:
    token, _, _ = new_api_token()
    with dev_server.channel() as channel:
        reason, _ = _refused(channel, (("authorization", f"Bearer {token.reveal()}"),))
    assert reason == "unknown_token"


def test_a_revoked_token_is_unauthenticated(dev_server: ServerThread, org: Org) -> None:
    with dev_server.channel() as channel:
        admin = Client(channel, org.admin_token)
        created = admin.admin.CreateApiToken(admin_pb2.CreateApiTokenRequest(name="ci"))
        md = (("authorization", f"Bearer {created.token}"),)
        _list(channel, md)
        admin.admin.RevokeApiToken(admin_pb2.RevokeApiTokenRequest(id=created.api_token.id))
        assert _refused(channel, md)[0] == "revoked_token"


def test_an_expired_token_is_unauthenticated(dev_server: ServerThread, org: Org) -> None:
    expire = timestamp_pb2.Timestamp()
    expire.FromDatetime(datetime.now(UTC) + timedelta(seconds=1))
    with dev_server.channel() as channel:
        admin = Client(channel, org.admin_token)
        created = admin.admin.CreateApiToken(
            admin_pb2.CreateApiTokenRequest(name="short", expire_time=expire)
        )
        md = (("authorization", f"Bearer {created.token}"),)
        _list(channel, md)
        time.sleep(1.2)
        assert _refused(channel, md)[0] == "expired_token"


def test_a_disabled_users_tokens_stop_working(dev_server: ServerThread, org: Org) -> None:
    with dev_server.channel() as channel:
        admin = Client(channel, org.admin_token)
        user = admin.admin.CreateUser(
            admin_pb2.CreateUserRequest(email="leaver@example.test", role=admin_pb2.ROLE_MEMBER)
        ).user
        token = admin.admin.CreateApiToken(admin_pb2.CreateApiTokenRequest(user_id=user.id)).token
        md = (("authorization", f"Bearer {token}"),)
        _list(channel, md)
        admin.admin.UpdateUser(admin_pb2.UpdateUserRequest(id=user.id, disabled=True))
        assert _refused(channel, md)[0] == "user_disabled"


def test_health_needs_no_token_and_reports_serving(dev_server: ServerThread) -> None:
    with dev_server.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "rap.v1.ResourceService"):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_the_request_id_is_returned_and_a_good_one_is_kept(dev_server: ServerThread, org: Org) -> None:
    with dev_server.channel() as channel:
        stub = resource_pb2_grpc.ResourceServiceStub(channel)
        md = (("authorization", f"Bearer {org.admin_token}"),)
        _, call = stub.ListResources.with_call(resource_pb2.ListResourcesRequest(), metadata=md, timeout=10)
        assert len(dict(call.trailing_metadata())["x-request-id"]) == 32
        _, call = stub.ListResources.with_call(
            resource_pb2.ListResourcesRequest(), metadata=(*md, ("x-request-id", "req-abc-12345")), timeout=10
        )
        assert dict(call.trailing_metadata())["x-request-id"] == "req-abc-12345"


async def test_an_unexpected_error_is_internal_with_a_request_id_and_no_detail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Anything but a RapError becomes INTERNAL; the traceback stays in the server log."""

    async def broken(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError("database password S3cret-canary in a driver message")

    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {"Check": grpc.unary_unary_rpc_method_handler(broken)},
    )
    server = grpc.aio.server(interceptors=[RapServerInterceptor()])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/grpc.health.v1.Health/Check")
            with (
                caplog.at_level(logging.ERROR, logger="rap_control.api.interceptor"),
                pytest.raises(grpc.aio.AioRpcError) as info,
            ):
                await asyncio.wait_for(call(b""), 10)
    finally:
        await server.stop(None)
    error = info.value
    assert error.code() == grpc.StatusCode.INTERNAL
    request_id = dict(error.trailing_metadata())["x-request-id"]
    assert request_id in error.details()
    assert "S3cret" not in error.details()
    assert "RuntimeError" not in error.details()
    assert "RuntimeError" in caplog.text
    assert request_id in caplog.text


def test_a_database_that_is_down_answers_unavailable(org: Org, provider: LocalKeyProvider) -> None:
    """A server whose database cannot be reached says UNAVAILABLE, not INTERNAL, and leaks no URL."""
    from rap_control.config import Environment
    from rap_control.db.engine import Database
    from tests.conftest import _settings

    dead = Database("postgresql+psycopg2://rap:S3cret-pw@127.0.0.1:1/rap", pool_size=1)
    server = ServerThread(
        _settings(Environment.DEVELOPMENT, None, "unused"), dead, provider, register=False
    ).start()
    try:
        with server.channel() as channel:
            error = rpc_error(_list, channel, (("authorization", f"Bearer {org.admin_token}"),))
    finally:
        server.stop()
        dead.close()
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert trailer(error, "rap-reason") == "database_unavailable"
    assert "S3cret" not in error.details()
    assert "127.0.0.1" not in error.details()


def test_database_errors_never_show_statement_parameters(db: Database) -> None:
    """SQLAlchemy keeps parameter values out of its error text (PostgreSQL may still quote
    a bad literal: which is why the interceptor logs no exception message)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError) as info:
        db.run_sync(
            lambda uow: uow.session.execute(text("SELECT CAST(:v AS uuid)"), {"v": "S3cret-canary-param"})
        )
    assert "[parameters:" not in str(info.value)
    assert "[SQL:" in str(info.value), "the statement itself is kept, for diagnosis"
