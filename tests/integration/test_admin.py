"""AdminService: the organization, users and API tokens."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable

import grpc
import psycopg2.extensions
import pytest

from rap.v1 import admin_pb2
from tests.conftest import Org
from tests.support.client import Client, paginate, rpc_error
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration


def _member(admin: Client, email: str = "member@example.test") -> tuple[admin_pb2.User, str]:
    user = admin.admin.CreateUser(
        admin_pb2.CreateUserRequest(email=email, display_name="Mem Ber", role=admin_pb2.ROLE_MEMBER)
    ).user
    token = admin.admin.CreateApiToken(admin_pb2.CreateApiTokenRequest(user_id=user.id, name="laptop")).token
    return user, token


def test_the_organization_is_the_callers_own(admin: Client, org: Org, make_org: Callable[[], Org]) -> None:
    assert admin.admin.GetOrganization(admin_pb2.GetOrganizationRequest()).organization.id == org.id
    other = make_org()
    error = rpc_error(admin.admin.GetOrganization, admin_pb2.GetOrganizationRequest(id=other.id))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_users_are_created_listed_and_updated_by_admins(admin: Client, org: Org) -> None:
    user, _ = _member(admin)
    assert (user.email, user.role, user.organization_id) == (
        "member@example.test",
        admin_pb2.ROLE_MEMBER,
        org.id,
    )
    users, pages = paginate(admin.admin.ListUsers, admin_pb2.ListUsersRequest(page_size=1), "users")
    assert sorted(u.id for u in users) == sorted([org.admin_id, user.id])
    assert pages == 2
    promoted = admin.admin.UpdateUser(admin_pb2.UpdateUserRequest(id=user.id, role=admin_pb2.ROLE_ADMIN)).user
    assert promoted.role == admin_pb2.ROLE_ADMIN
    dup = rpc_error(
        admin.admin.CreateUser,
        admin_pb2.CreateUserRequest(email="MEMBER@example.test", role=admin_pb2.ROLE_MEMBER),
    )
    assert dup.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (admin_pb2.CreateUserRequest(email="no-at-sign", role=admin_pb2.ROLE_MEMBER), "email"),
        (admin_pb2.CreateUserRequest(email="a@b.test"), "role is required"),
        (admin_pb2.CreateUserRequest(email="a@b.test", role=7), "role 7"),
        (
            admin_pb2.CreateUserRequest(email="a@b.test", role=admin_pb2.ROLE_MEMBER, display_name="x" * 200),
            "display_name",
        ),
    ],
)
def test_bad_users_are_invalid_argument(admin: Client, request_, expected: str) -> None:  # type: ignore[no-untyped-def]
    error = rpc_error(admin.admin.CreateUser, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.details()


def test_the_last_admin_cannot_be_demoted_or_disabled(admin: Client, org: Org) -> None:
    for request in (
        admin_pb2.UpdateUserRequest(id=org.admin_id, role=admin_pb2.ROLE_MEMBER),
        admin_pb2.UpdateUserRequest(id=org.admin_id, disabled=True),
    ):
        error = rpc_error(admin.admin.UpdateUser, request)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "without an enabled admin" in error.details()
    me = admin.admin.GetUser(admin_pb2.GetUserRequest(id=org.admin_id)).user
    assert me.role == admin_pb2.ROLE_ADMIN
    assert not me.disabled


def test_members_manage_only_their_own_tokens(dev_server: ServerThread, admin: Client, org: Org) -> None:
    user, token = _member(admin)
    with dev_server.channel() as channel:
        member = Client(channel, token)
        own = member.admin.CreateApiToken(admin_pb2.CreateApiTokenRequest(name="second"))
        assert own.api_token.user_id == user.id
        names = {t.name for t in member.admin.ListApiTokens(admin_pb2.ListApiTokensRequest()).api_tokens}
        assert names == {"laptop", "second"}
        for call, request in [
            (member.admin.CreateApiToken, admin_pb2.CreateApiTokenRequest(user_id=org.admin_id)),
            (member.admin.ListApiTokens, admin_pb2.ListApiTokensRequest(user_id=org.admin_id)),
            (
                member.admin.CreateUser,
                admin_pb2.CreateUserRequest(email="x@y.test", role=admin_pb2.ROLE_ADMIN),
            ),
            (member.admin.UpdateUser, admin_pb2.UpdateUserRequest(id=user.id, role=admin_pb2.ROLE_ADMIN)),
            (member.admin.ListUsers, admin_pb2.ListUsersRequest()),
        ]:
            assert rpc_error(call, request).code() == grpc.StatusCode.PERMISSION_DENIED
        admins_tokens = admin.admin.ListApiTokens(admin_pb2.ListApiTokensRequest()).api_tokens
        error = rpc_error(
            member.admin.RevokeApiToken, admin_pb2.RevokeApiTokenRequest(id=admins_tokens[0].id)
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        revoked = member.admin.RevokeApiToken(admin_pb2.RevokeApiTokenRequest(id=own.api_token.id)).api_token
        assert revoked.revoke_time.seconds > 0


def test_another_organizations_user_or_token_is_not_found(admin: Client, make_org: Callable[[], Org]) -> None:
    other = make_org()
    for call, request in [
        (admin.admin.GetUser, admin_pb2.GetUserRequest(id=other.admin_id)),
        (admin.admin.CreateApiToken, admin_pb2.CreateApiTokenRequest(user_id=other.admin_id)),
        (admin.admin.UpdateUser, admin_pb2.UpdateUserRequest(id=other.admin_id, disabled=True)),
        (admin.admin.RevokeApiToken, admin_pb2.RevokeApiTokenRequest(id=str(uuid.uuid4()))),
    ]:
        assert rpc_error(call, request).code() == grpc.StatusCode.NOT_FOUND


def test_a_token_is_shown_once_and_stored_only_as_a_hash(
    admin: Client, org: Org, sql: psycopg2.extensions.connection
) -> None:
    created = admin.admin.CreateApiToken(admin_pb2.CreateApiTokenRequest(name="ci"))
    assert created.token.startswith("rap_api_")
    assert len(created.token) == 51
    assert created.token.startswith(created.api_token.prefix)
    listed = admin.admin.ListApiTokens(admin_pb2.ListApiTokensRequest())
    assert created.token not in str(listed)
    with sql.cursor() as cur:
        cur.execute("SELECT token_hash FROM api_tokens WHERE id = %s", (created.api_token.id,))
        assert bytes(cur.fetchone()[0]) == hashlib.sha256(created.token.encode()).digest()
        for table in ("api_tokens", "audit_events", "users"):
            cur.execute(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t")
            assert created.token not in cur.fetchone()[0]
            cur.execute(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t")
            assert org.admin_token not in cur.fetchone()[0]


def test_a_token_cannot_expire_in_the_past(admin: Client) -> None:
    request = admin_pb2.CreateApiTokenRequest()
    request.expire_time.FromSeconds(1_000_000)
    error = rpc_error(admin.admin.CreateApiToken, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "future" in error.details()
