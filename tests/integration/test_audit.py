"""The hash-chained audit log: listing, append-only, and tamper detection."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import psycopg2
import psycopg2.extensions
import pytest

from rap.v1 import admin_pb2, audit_pb2, resource_pb2
from tests.conftest import Org
from tests.support.client import Client, paginate, rpc_error
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration


def _make_events(admin: Client, count: int) -> list[str]:
    ids = []
    for i in range(count):
        ids.append(
            admin.resources.CreateResource(
                resource_pb2.CreateResourceRequest(
                    resource=resource_pb2.Resource(
                        name=f"a{i}", protocol=resource_pb2.PROTOCOL_SSH, address="h.example"
                    )
                )
            ).resource.id
        )
    return ids


def _all_events(admin: Client, **filters: str) -> list[audit_pb2.AuditEvent]:
    events, _ = paginate(
        admin.audit.ListAuditEvents, audit_pb2.ListAuditEventsRequest(page_size=2, **filters), "events"
    )
    return events


def _rapctl(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=database_url)
    return subprocess.run(
        [str(Path(sys.executable).parent / "rapctl"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _tamper(sql: psycopg2.extensions.connection, statement: str, *params: object) -> None:
    """Change the table behind the triggers' back, as a superuser could."""
    with sql.cursor() as cur:
        cur.execute("SET session_replication_role = replica")
        cur.execute(statement, params)
        cur.execute("SET session_replication_role = origin")


def test_events_are_listed_in_order_with_filters_and_paging(admin: Client, org: Org) -> None:
    ids = _make_events(admin, 3)
    events = _all_events(admin)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.event_type for e in events[:3]] == ["organization_created", "user_created", "api_token_created"]
    created = _all_events(admin, event_type="resource_created")
    assert [e.target_id for e in created] == ids
    assert all(e.actor_id == org.admin_id and e.actor_type == "user" and e.request_id for e in created)
    assert [e.target_id for e in _all_events(admin, target_id=ids[1])] == [ids[1]]
    assert all(e.previous_hash == before.hash for before, e in itertools.pairwise(events))
    error = rpc_error(admin.audit.ListAuditEvents, audit_pb2.ListAuditEventsRequest(event_type="made_up"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_members_cannot_read_the_log_and_organizations_see_only_their_own(
    dev_server: ServerThread, admin: Client, make_org: Callable[[], Org]
) -> None:
    _make_events(admin, 1)
    user = admin.admin.CreateUser(
        admin_pb2.CreateUserRequest(email="m@x.test", role=admin_pb2.ROLE_MEMBER)
    ).user
    token = admin.admin.CreateApiToken(admin_pb2.CreateApiTokenRequest(user_id=user.id)).token
    with dev_server.channel() as channel:
        member = Client(channel, token)
        for call, request in (
            (member.audit.ListAuditEvents, audit_pb2.ListAuditEventsRequest()),
            (member.audit.VerifyAuditChain, audit_pb2.VerifyAuditChainRequest()),
        ):
            assert rpc_error(call, request).code() == grpc.StatusCode.PERMISSION_DENIED
        other = make_org()
        stranger = Client(channel, other.admin_token)
        theirs = _all_events(stranger)
    assert {e.organization_id for e in theirs} == {other.id}
    assert not {e.target_id for e in theirs} & {
        e.target_id for e in _all_events(admin, event_type="resource_created")
    }


def test_the_table_refuses_updates_and_deletes(
    admin: Client, org: Org, sql: psycopg2.extensions.connection
) -> None:
    _make_events(admin, 1)
    for statement in (
        "UPDATE audit_events SET event_type = 'x' WHERE chain_id = %s",
        "DELETE FROM audit_events WHERE chain_id = %s",
    ):
        with pytest.raises(psycopg2.Error, match="append-only"), sql.cursor() as cur:
            cur.execute(statement, (org.id,))
    with pytest.raises(psycopg2.Error, match="append-only"), sql.cursor() as cur:
        cur.execute("TRUNCATE audit_events")


def test_an_intact_chain_verifies(admin: Client, org: Org, database_url: str) -> None:
    _make_events(admin, 3)
    answer = admin.audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest())
    assert answer.ok
    assert answer.checked_events == len(_all_events(admin))
    result = _rapctl(database_url, "audit", "verify", "--organization", org.id)
    assert result.returncode == 0, result.stderr
    assert "audit chain ok" in result.stdout


@pytest.mark.parametrize(
    ("tampering", "problem"),
    [
        (
            'UPDATE audit_events SET details = \'{"name": "innocent"}\' WHERE chain_id = %s AND sequence = %s',
            "hash_mismatch",
        ),
        (
            "UPDATE audit_events SET actor_id = 'someone-else' WHERE chain_id = %s AND sequence = %s",
            "hash_mismatch",
        ),
        ("DELETE FROM audit_events WHERE chain_id = %s AND sequence = %s", "missing_row"),
    ],
)
def test_an_edited_or_deleted_row_breaks_the_chain_at_that_row(
    admin: Client,
    org: Org,
    database_url: str,
    sql: psycopg2.extensions.connection,
    tampering: str,
    problem: str,
) -> None:
    _make_events(admin, 3)
    events = _all_events(admin)
    victim = events[4]
    _tamper(sql, tampering, org.id, victim.sequence)

    answer = admin.audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest())
    assert not answer.ok
    assert answer.first_broken_sequence == victim.sequence
    assert answer.problem.startswith(problem)
    assert answer.checked_events == victim.sequence - 1
    if problem == "hash_mismatch":
        assert answer.first_broken_event_id == victim.id
    else:
        assert events[5].id in answer.problem, "a missing row names the next row present"

    result = _rapctl(database_url, "audit", "verify", "--organization", org.id)
    assert result.returncode == 1
    assert f"sequence {victim.sequence}" in result.stdout
    assert problem in result.stdout


def test_deleting_the_newest_row_is_caught_by_the_chain_head(
    admin: Client, org: Org, database_url: str, sql: psycopg2.extensions.connection
) -> None:
    _make_events(admin, 2)
    last = _all_events(admin)[-1]
    _tamper(sql, "DELETE FROM audit_events WHERE chain_id = %s AND sequence = %s", org.id, last.sequence)
    answer = admin.audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest())
    assert not answer.ok
    assert answer.first_broken_sequence == last.sequence
    assert answer.problem.startswith("missing_row")
    result = _rapctl(database_url, "audit", "verify", "--organization", org.id)
    assert result.returncode == 1
    assert f"sequence {last.sequence}" in result.stdout


def test_rapctl_refuses_a_malformed_organization_id_cleanly(database_url: str) -> None:
    result = _rapctl(database_url, "audit", "verify", "--organization", "acme")
    assert result.returncode == 1
    assert "not a UUID" in result.stderr
    assert "Traceback" not in result.stderr
