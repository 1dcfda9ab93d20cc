"""The production guard through the real API: APP_ENV=production, TLS on loopback.

Property tests plant a credential-like key (or a PEM private key value) at
any depth of arbitrary metadata and check that the user sees
INVALID_ARGUMENT naming the key path and never the value, that no resource
row is written, and that an audit row records the refusal.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import psycopg2
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rap.v1 import audit_pb2, resource_pb2
from rap_control.policy.credentials import is_credential_key, is_credential_value
from tests.conftest import Org, _libpq
from tests.strategies import (
    ORDINARY_KEYS,
    PEM_KINDS,
    PEM_PRIVATE_KEY,
    credential_in_value,
    lookalike_credential_keys,
    ordinary_keys,
    planted_metadata,
    private_key_values,
    short_credential_keys,
)
from tests.support.client import Client, paginate, rpc_error, trailer
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration

CANARY = f"S3cret-{uuid.uuid4().hex[:12]}"
CREDENTIALED = [resource_pb2.PROTOCOL_RDP, resource_pb2.PROTOCOL_VNC, resource_pb2.PROTOCOL_SSH]
PROPERTY = settings(
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


@pytest.fixture(scope="module")
def guarded(prod_server: ServerThread, make_org: Callable[[], Org]) -> Iterator[tuple[Client, Org]]:
    org = make_org()
    channel = prod_server.channel()
    yield Client(channel, org.admin_token), org
    channel.close()


def _create(
    client: Client,
    org: Org,
    metadata: dict[str, Any],
    *,
    protocol: int = resource_pb2.PROTOCOL_SSH,
    with_ref: bool = True,
    name: str | None = None,
) -> resource_pb2.Resource:
    rid = str(uuid.uuid4())
    ref = f"rap-secret://org/{org.id}/resources/{rid}/default" if with_ref else ""
    resource = resource_pb2.Resource(
        name=name or f"r-{uuid.uuid4().hex[:8]}",
        protocol=protocol,
        address="10.1.2.3:4000",
        secret_ref=ref,
        metadata=_struct(metadata),
    )
    return client.resources.CreateResource(
        resource_pb2.CreateResourceRequest(resource=resource, resource_id=rid)
    ).resource


def _last_audit(client: Client, event_type: str) -> audit_pb2.AuditEvent:
    request = audit_pb2.ListAuditEventsRequest(event_type=event_type, page_size=200)
    events, _ = paginate(client.audit.ListAuditEvents, request, "events")
    return events[-1]


def _resource_names(org: Org, database_url: str) -> set[str]:
    with psycopg2.connect(_libpq(database_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM resources WHERE organization_id = %s", (org.id,))
        return {row[0] for row in cur.fetchall()}


@PROPERTY
@given(
    planted=planted_metadata(leaf=CANARY),
    protocol=st.sampled_from([*CREDENTIALED, resource_pb2.PROTOCOL_TCP]),
)
def test_a_credential_key_at_any_depth_is_refused_by_path_and_audited(
    guarded: tuple[Client, Org],
    database_url: str,
    planted,
    protocol: int,  # type: ignore[no-untyped-def]
) -> None:
    client, org = guarded
    name = f"g-{uuid.uuid4().hex[:10]}"
    error = rpc_error(_create, client, org, planted.metadata, protocol=protocol, name=name)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(error, "rap-reason") == "plaintext_credentials"
    assert planted.path in error.details()
    assert CANARY not in error.details()
    assert name not in _resource_names(org, database_url)
    event = _last_audit(client, "resource_rejected_plaintext_credentials")
    assert event.details["name"] == name
    assert planted.path in list(event.details["key_paths"])
    assert CANARY not in str(event)


@PROPERTY
@given(kind=st.sampled_from(PEM_KINDS), key=ordinary_keys(), data=st.data())
def test_a_pem_private_key_value_is_refused_under_any_key(
    guarded: tuple[Client, Org], kind: str, key: str, data: st.DataObject
) -> None:
    assume(not is_credential_key(key))
    client, org = guarded
    pem = PEM_PRIVATE_KEY.replace("PRIVATE KEY", f"{kind}PRIVATE KEY").replace("CANARY", CANARY[:6])
    planted = data.draw(planted_metadata(leaf=pem, key=key))
    error = rpc_error(_create, client, org, planted.metadata)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert planted.path in error.details()
    assert "BEGIN" not in error.details()
    assert CANARY[:6] not in error.details()


@PROPERTY
@given(
    key=st.one_of(lookalike_credential_keys(), short_credential_keys()),
    data=st.data(),
)
def test_lookalike_and_short_credential_keys_are_refused_in_production(
    guarded: tuple[Client, Org], key: str, data: st.DataObject
) -> None:
    client, org = guarded
    planted = data.draw(planted_metadata(leaf=CANARY, key=key))
    error = rpc_error(_create, client, org, planted.metadata)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(error, "rap-reason") == "plaintext_credentials"
    assert planted.path in error.details()
    assert CANARY not in error.details()


@PROPERTY
@given(value=st.one_of(private_key_values(), credential_in_value()), key=ordinary_keys(), data=st.data())
def test_credentials_inside_values_are_refused_in_production(
    guarded: tuple[Client, Org], value: str, key: str, data: st.DataObject
) -> None:
    assume(not is_credential_key(key))
    client, org = guarded
    planted = data.draw(planted_metadata(leaf=value, key=key))
    error = rpc_error(_create, client, org, planted.metadata)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert planted.path in error.details()
    assert value not in error.details()


# NUL is refused for every resource (PostgreSQL cannot store it): see test_resource_validation.
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)


@PROPERTY
@given(metadata=st.dictionaries(ordinary_keys(), st.one_of(TEXT, st.booleans()), max_size=5))
def test_ordinary_metadata_passes_in_production(
    guarded: tuple[Client, Org], metadata: dict[str, Any]
) -> None:
    assume(not any(is_credential_key(k) for k in metadata))
    assume(not any(isinstance(v, str) and is_credential_value(v) for v in metadata.values()))
    client, org = guarded
    assert _create(client, org, metadata).metadata == _struct(metadata)


def test_the_named_ordinary_keys_pass(guarded: tuple[Client, Org]) -> None:
    client, org = guarded
    metadata = {"certificate_verification_mode": "strict", "render_quality_profile": "high"}
    assert set(_create(client, org, metadata).metadata.keys()) == set(metadata)
    assert set(ORDINARY_KEYS) >= set(metadata)


@pytest.mark.parametrize("protocol", CREDENTIALED)
def test_a_credentialed_resource_needs_a_secret_ref_in_production_only(
    guarded: tuple[Client, Org], admin: Client, protocol: int
) -> None:
    client, org = guarded
    name = f"noref-{uuid.uuid4().hex[:8]}"
    error = rpc_error(_create, client, org, {}, protocol=protocol, with_ref=False, name=name)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(error, "rap-reason") == "secret_ref_required"
    assert "secret_ref" in error.details()
    event = _last_audit(client, "resource_rejected_missing_secret_ref")
    assert event.details["name"] == name
    assert event.details["missing_secret_ref"] is True
    # Development accepts it, for smoke tests.
    dev = admin.resources.CreateResource(
        resource_pb2.CreateResourceRequest(
            resource=resource_pb2.Resource(name=name, protocol=protocol, address="10.1.2.3")
        )
    ).resource
    assert dev.secret_ref == ""


def test_a_tcp_resource_needs_no_secret_ref(guarded: tuple[Client, Org]) -> None:
    client, _org = guarded
    rid = str(uuid.uuid4())
    created = client.resources.CreateResource(
        resource_pb2.CreateResourceRequest(
            resource_id=rid,
            resource=resource_pb2.Resource(
                name=f"t-{rid[:8]}", protocol=resource_pb2.PROTOCOL_TCP, address="db:5432"
            ),
        )
    ).resource
    assert created.id == rid


def test_an_update_that_adds_credentials_or_drops_the_secret_ref_is_refused(
    guarded: tuple[Client, Org],
) -> None:
    client, org = guarded
    existing = _create(client, org, {"mode": "x"})
    for paths, resource, reason in [
        (
            ["metadata"],
            resource_pb2.Resource(id=existing.id, metadata=_struct({"opts": [{"dbPassword": CANARY}]})),
            "plaintext_credentials",
        ),
        (["secret_ref"], resource_pb2.Resource(id=existing.id, secret_ref=""), "secret_ref_required"),
    ]:
        error = rpc_error(
            client.resources.UpdateResource,
            resource_pb2.UpdateResourceRequest(
                resource=resource, update_mask=field_mask_pb2.FieldMask(paths=paths)
            ),
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert trailer(error, "rap-reason") == reason
        assert CANARY not in error.details()
    assert "metadata.opts[0].dbPassword" in list(
        _last_audit(client, "resource_rejected_plaintext_credentials").details["key_paths"]
    )
    assert client.resources.GetResource(resource_pb2.GetResourceRequest(id=existing.id)).resource == existing


def test_the_canary_reaches_no_table_log_or_response(
    guarded: tuple[Client, Org], sql: psycopg2.extensions.connection, caplog: pytest.LogCaptureFixture
) -> None:
    """After the refusals above and these, the canary is nowhere but in the test's memory."""
    client, org = guarded
    caplog.set_level("DEBUG")
    answers = []
    for metadata in (
        {"password": CANARY},
        {"a": [{"b": {"client-secret": CANARY}}]},
        {"key": f"-----BEGIN PRIVATE KEY-----\n{CANARY}\n"},
    ):
        error = rpc_error(_create, client, org, metadata)
        answers.append(f"{error.code()} {error.details()} {error.trailing_metadata()}")
    forms = [CANARY, base64.b64encode(CANARY.encode()).decode(), CANARY.encode().hex()]
    with sql.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        tables = [row[0] for row in cur.fetchall()]
        assert "audit_events" in tables
        assert "resources" in tables
        for table in tables:
            cur.execute(
                f'SELECT coalesce(string_agg(t::text, E"\\n"), \'\') FROM "{table}" t'.replace(
                    'E"\\n"', "E'\\n'"
                )
            )
            dump = cur.fetchone()[0]
            for form in forms:
                assert form not in dump, f"canary found in table {table}"
    for form in forms:
        assert form not in caplog.text
        assert all(form not in answer for answer in answers)
