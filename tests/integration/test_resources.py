"""ResourceService over real gRPC against real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import psycopg2.extensions
import pytest
from google.protobuf import field_mask_pb2, struct_pb2

from rap.v1 import admin_pb2, resource_pb2
from tests.conftest import Org
from tests.support.client import Client, paginate, rpc_error, trailer
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration

SSH = resource_pb2.PROTOCOL_SSH


def _struct(value: dict) -> struct_pb2.Struct:  # type: ignore[type-arg]
    out = struct_pb2.Struct()
    out.update(value)
    return out


def _resource(
    name: str = "web-1", protocol: int = SSH, address: str = "web-1.example.org", **kw
) -> resource_pb2.Resource:  # type: ignore[no-untyped-def]
    return resource_pb2.Resource(name=name, protocol=protocol, address=address, **kw)


def create(client: Client, **kw) -> resource_pb2.Resource:  # type: ignore[no-untyped-def]
    resource_id = kw.pop("resource_id", "")
    return client.resources.CreateResource(
        resource_pb2.CreateResourceRequest(resource=_resource(**kw), resource_id=resource_id)
    ).resource


def _count(sql: psycopg2.extensions.connection, org: Org) -> int:
    with sql.cursor() as cur:
        cur.execute("SELECT count(*) FROM resources WHERE organization_id = %s", (org.id,))
        return int(cur.fetchone()[0])


def test_create_get_list_update_delete(admin: Client, org: Org) -> None:
    created = create(admin, metadata=_struct({"display": {"depth": 24}}))
    assert created.organization_id == org.id
    assert created.address == "web-1.example.org:22"
    assert created.create_time.seconds > 0

    got = admin.resources.GetResource(resource_pb2.GetResourceRequest(id=created.id)).resource
    assert got == created

    listed = admin.resources.ListResources(resource_pb2.ListResourcesRequest()).resources
    assert [r.id for r in listed] == [created.id]

    ref = f"rap-secret://org/{org.id}/resources/{created.id}/default"
    updated = admin.resources.UpdateResource(
        resource_pb2.UpdateResourceRequest(
            resource=resource_pb2.Resource(
                id=created.id, name="web-renamed", secret_ref=ref, address="10.0.0.9:2222"
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["name", "secret_ref", "address"]),
        )
    ).resource
    assert (updated.name, updated.secret_ref, updated.address) == ("web-renamed", ref, "10.0.0.9:2222")
    assert updated.metadata == created.metadata, "fields outside the mask are kept"
    assert updated.update_time.ToDatetime() >= created.update_time.ToDatetime()

    admin.resources.DeleteResource(resource_pb2.DeleteResourceRequest(id=created.id))
    error = rpc_error(admin.resources.GetResource, resource_pb2.GetResourceRequest(id=created.id))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert admin.resources.ListResources(resource_pb2.ListResourcesRequest()).resources == []
    assert create(admin, name="web-renamed").name == "web-renamed", "a deleted resource frees its name"


def test_create_with_a_client_chosen_id_and_its_own_secret_ref(admin: Client, org: Org) -> None:
    resource_id = str(uuid.uuid4())
    ref = f"rap-secret://org/{org.id}/resources/{resource_id}/default"
    created = create(admin, resource_id=resource_id, secret_ref=ref)
    assert (created.id, created.secret_ref) == (resource_id, ref)
    again = rpc_error(create, admin, resource_id=resource_id, name="other")
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS


def test_list_pages_through_everything_in_order(admin: Client) -> None:
    made = [
        create(admin, name=f"host-{i}", protocol=SSH if i % 2 else resource_pb2.PROTOCOL_RDP).id
        for i in range(7)
    ]
    seen, pages = paginate(
        admin.resources.ListResources, resource_pb2.ListResourcesRequest(page_size=3), "resources"
    )
    assert [r.id for r in seen] == made
    assert pages == 3
    ssh_only = admin.resources.ListResources(resource_pb2.ListResourcesRequest(protocol=SSH)).resources
    assert {r.id for r in ssh_only} == set(made[1::2])


def test_duplicate_names_are_refused(admin: Client) -> None:
    create(admin, name="dup")
    error = rpc_error(create, admin, name="dup")
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "dup" in error.details()


def test_a_member_reads_but_cannot_write(dev_server: ServerThread, admin: Client) -> None:
    existing = create(admin)
    user = admin.admin.CreateUser(
        admin_pb2.CreateUserRequest(email="m@example.test", role=admin_pb2.ROLE_MEMBER)
    ).user
    token = admin.admin.CreateApiToken(admin_pb2.CreateApiTokenRequest(user_id=user.id)).token
    with dev_server.channel() as channel:
        member = Client(channel, token)
        assert (
            member.resources.GetResource(resource_pb2.GetResourceRequest(id=existing.id)).resource == existing
        )
        assert len(member.resources.ListResources(resource_pb2.ListResourcesRequest()).resources) == 1
        denied = [
            rpc_error(create, member, name="mine"),
            rpc_error(
                member.resources.UpdateResource,
                resource_pb2.UpdateResourceRequest(
                    resource=resource_pb2.Resource(id=existing.id, name="x"),
                    update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                ),
            ),
            rpc_error(member.resources.DeleteResource, resource_pb2.DeleteResourceRequest(id=existing.id)),
        ]
    for error in denied:
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "admin" in error.details()
    assert admin.resources.GetResource(resource_pb2.GetResourceRequest(id=existing.id)).resource == existing


def test_another_organizations_resource_is_not_found(
    dev_server: ServerThread, admin: Client, make_org: Callable[[], Org]
) -> None:
    mine = create(admin)
    with dev_server.channel() as channel:
        stranger = Client(channel, make_org().admin_token)
        calls = [
            lambda: stranger.resources.GetResource(resource_pb2.GetResourceRequest(id=mine.id)),
            lambda: stranger.resources.UpdateResource(
                resource_pb2.UpdateResourceRequest(
                    resource=resource_pb2.Resource(id=mine.id, name="stolen"),
                    update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                )
            ),
            lambda: stranger.resources.DeleteResource(resource_pb2.DeleteResourceRequest(id=mine.id)),
        ]
        for call in calls:
            error = rpc_error(call)
            assert error.code() == grpc.StatusCode.NOT_FOUND
        assert stranger.resources.ListResources(resource_pb2.ListResourcesRequest()).resources == []
    assert admin.resources.GetResource(resource_pb2.GetResourceRequest(id=mine.id)).resource == mine


def _bad_creates(org: Org, other: Org) -> list[tuple[str, dict, str]]:  # type: ignore[type-arg]
    rid = str(uuid.uuid4())
    return [
        ("unknown protocol", {"protocol": 99}, "resource.protocol 99"),
        ("no protocol", {"protocol": resource_pb2.PROTOCOL_UNSPECIFIED}, "resource.protocol is required"),
        ("long name", {"name": "n" * 300}, "300 characters"),
        ("empty name", {"name": ""}, "resource.name is required"),
        ("bad address", {"address": "not a host"}, "resource.address"),
        ("bad port", {"address": "host:99999"}, "port"),
        (
            "deep metadata",
            {"metadata": _struct({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {}}}}}}}}})},
            "nested deeper",
        ),
        ("big metadata", {"metadata": _struct({"blob": "x" * 20000})}, "bytes as JSON"),
        ("malformed secret_ref", {"secret_ref": "vault://kv/web"}, "secret_ref must be"),
        (
            "other organization's secret_ref",
            {"resource_id": rid, "secret_ref": f"rap-secret://org/{other.id}/resources/{rid}/default"},
            "another organization",
        ),
        (
            "other resource's secret_ref",
            {"resource_id": rid, "secret_ref": f"rap-secret://org/{org.id}/resources/{uuid.uuid4()}/default"},
            "not this resource",
        ),
        ("malformed resource_id", {"resource_id": "123"}, "resource_id '123' is not a UUID"),
    ]


def test_bad_input_is_invalid_argument_with_a_helpful_message_and_no_row(
    admin: Client, org: Org, make_org: Callable[[], Org], sql: psycopg2.extensions.connection
) -> None:
    for label, fields, expected in _bad_creates(org, make_org()):
        error = rpc_error(create, admin, **fields)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, label
        assert expected in error.details(), (label, error.details())
        assert trailer(error, "rap-reason"), label
    missing = rpc_error(admin.resources.CreateResource, resource_pb2.CreateResourceRequest())
    assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _count(sql, org) == 0


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (resource_pb2.GetResourceRequest(id="nope"), "id 'nope' is not a UUID"),
        (resource_pb2.GetResourceRequest(id=""), "id is required"),
        (resource_pb2.ListResourcesRequest(page_size=5000), "page_size"),
        (resource_pb2.ListResourcesRequest(page_token="!!!"), "page_token"),
        (resource_pb2.ListResourcesRequest(protocol=42), "protocol 42"),
    ],
)
def test_bad_reads_are_invalid_argument(admin: Client, request_, expected: str) -> None:  # type: ignore[no-untyped-def]
    method = (
        admin.resources.GetResource
        if isinstance(request_, resource_pb2.GetResourceRequest)
        else admin.resources.ListResources
    )
    error = rpc_error(method, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.details()


def test_a_bad_update_changes_nothing(admin: Client) -> None:
    existing = create(admin)
    cases = [
        (
            ["protocol"],
            resource_pb2.Resource(id=existing.id, protocol=resource_pb2.PROTOCOL_RDP),
            "protocol cannot change",
        ),
        ([], resource_pb2.Resource(id=existing.id, name="x"), "update_mask is required"),
        (["owner"], resource_pb2.Resource(id=existing.id), "'owner' is not one of"),
        (
            ["name", "address"],
            resource_pb2.Resource(id=existing.id, name="ok-name", address="bad host"),
            "resource.address",
        ),
    ]
    for paths, resource, expected in cases:
        error = rpc_error(
            admin.resources.UpdateResource,
            resource_pb2.UpdateResourceRequest(
                resource=resource, update_mask=field_mask_pb2.FieldMask(paths=paths)
            ),
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert expected in error.details(), error.details()
    assert admin.resources.GetResource(resource_pb2.GetResourceRequest(id=existing.id)).resource == existing
