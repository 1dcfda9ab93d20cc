"""AdminService: the organization, users and API tokens."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable

import grpc
import psycopg2.extensions
import pytest

from rap.v1 import admin_pb2
from rap_common.errors import FailedPrecondition
from rap_control.audit.service import AuditLog
from rap_control.db.engine import Database
from rap_control.identity.service import IdentityService
from rap_control.identity.types import UserPatch
from rap_control.principal import CallContext, Principal, Role
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


def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    admin: Client, org: Org, db: Database, sql: psycopg2.extensions.connection
) -> None:
    """The first demotion holds its transaction open while the second runs: without
    the admin lock, both would see the other still an admin and both would commit."""
    second = admin.admin.CreateUser(
        admin_pb2.CreateUserRequest(email="second@example.test", role=admin_pb2.ROLE_ADMIN)
    ).user
    identity = IdentityService(AuditLog())
    first_admin = CallContext(
        Principal(uuid.UUID(org.admin_id), uuid.UUID(org.id), Role.ADMIN, uuid.uuid4()), "r1"
    )
    second_admin = CallContext(
        Principal(uuid.UUID(second.id), uuid.UUID(org.id), Role.ADMIN, uuid.uuid4()), "r2"
    )
    demote = UserPatch(role=Role.MEMBER)
    outcomes: dict[str, str] = {}

    def slow_first() -> None:
        def unit(uow):  # type: ignore[no-untyped-def]
            identity.update_user(uow, first_admin, uuid.UUID(second.id), demote)
            time.sleep(0.5)  # commit late

        db.run_sync(unit)
        outcomes["first"] = "OK"

    holder = threading.Thread(target=slow_first)
    holder.start()
    time.sleep(0.15)
    try:
        db.run_sync(lambda uow: identity.update_user(uow, second_admin, uuid.UUID(org.admin_id), demote))
        outcomes["second"] = "OK"
    except FailedPrecondition as refused:
        outcomes["second"] = refused.reason
    holder.join()
    assert outcomes == {"first": "OK", "second": "last_admin"}
    with sql.cursor() as cur:
        cur.execute("SELECT count(*) FROM users WHERE organization_id = %s AND role = 'admin'", (org.id,))
        assert cur.fetchone()[0] == 1


def test_the_organization_policy_is_checked_and_admin_only(admin: Client, dev_server: ServerThread) -> None:
    from google.protobuf import struct_pb2

    def policy(value: dict[str, object]) -> admin_pb2.UpdateOrganizationPolicyRequest:
        s = struct_pb2.Struct()
        s.update(value)
        return admin_pb2.UpdateOrganizationPolicyRequest(policy=s)

    for bad, field in (
        ({"rap_clipboard": {"max_bytes": -1}}, "rap_clipboard.max_bytes"),
        ({"rap_clipboard": {"client_to_target": "yes"}}, "rap_clipboard.client_to_target"),
        ({"password": "x"}, "password"),
        ({"rap_upload_max_bytes": 1.5}, "rap_upload_max_bytes"),
    ):
        error = rpc_error(admin.admin.UpdateOrganizationPolicy, policy(bad))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and field in error.details()
    org = admin.admin.UpdateOrganizationPolicy(policy({"rap_upload_max_bytes": 1000})).organization
    assert org.policy["rap_upload_max_bytes"] == 1000
    assert admin.admin.GetOrganization(admin_pb2.GetOrganizationRequest()).organization.policy == org.policy
    user = admin.admin.CreateUser(
        admin_pb2.CreateUserRequest(email="policy-member@example.test", role=admin_pb2.ROLE_MEMBER)
    ).user
    token = admin.admin.CreateApiToken(admin_pb2.CreateApiTokenRequest(user_id=user.id, name="m")).token
    with dev_server.channel() as channel:
        member = Client(channel, token)
        assert (
            rpc_error(member.admin.UpdateOrganizationPolicy, policy({})).code()
            == grpc.StatusCode.PERMISSION_DENIED
        )
