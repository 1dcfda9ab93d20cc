"""The SDK's typed calls against an in-process control plane."""

from __future__ import annotations

import pytest

from rap.v1 import admin_pb2, resource_pb2
from rap_client import RapClient
from tests.conftest import Org
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration


async def test_the_typed_calls_reach_their_rpcs(dev_server: ServerThread, org: Org) -> None:
    async with RapClient(dev_server.target, org.admin_token) as rap:
        created = await rap.create_resource("sdk-db", resource_pb2.PROTOCOL_TCP, "10.0.0.7:5432")
        assert [r.id for r in await rap.list_resources(resource_pb2.PROTOCOL_TCP)] == [created.id]
        created.name = "sdk-db-renamed"
        assert (await rap.update_resource(created, ["name"])).name == "sdk-db-renamed"
        assert (await rap.find_resource("sdk-db-renamed")).id == created.id
        ssh = await rap.create_resource("sdk-ssh", resource_pb2.PROTOCOL_SSH, "10.0.0.8")
        info = await rap.put_ssh_secret(ssh.id, "u", password="Sdk-canary")
        assert (await rap.get_secret_info(ssh.id)).secret_ref == info.secret_ref
        await rap.delete_secret(ssh.id)
        await rap.delete_resource(created.id)
        assert (await rap.get_organization()).id == org.id
        assert (await rap.update_organization_policy({"rap_upload_max_bytes": 2048})).policy[
            "rap_upload_max_bytes"
        ] == 2048
        user = await rap.create_user("sdk-user@example.test", admin_pb2.ROLE_MEMBER)
        assert (await rap.get_user(user.id)).email == "sdk-user@example.test"
        assert user.id in {u.id for u in await rap.list_users()}
        record, bearer = await rap.create_api_token("sdk", user.id)
        assert bearer.startswith("rap_api_") and record.id in {
            t.id for t in await rap.list_api_tokens(user.id)
        }
        assert (await rap.revoke_api_token(record.id)).revoke_time.seconds > 0
        assert await rap.list_workers() == []
        assert (await rap.verify_audit_chain()).ok
        assert "Sdk-canary" not in str(await rap.audit_events())
        assert len((await rap.jwks()).jwks.keys) >= 2
