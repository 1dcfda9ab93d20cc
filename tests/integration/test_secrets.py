"""SecretService over real gRPC against real PostgreSQL: no plaintext ever comes back."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable

import grpc
import psycopg2.extensions
import pytest

from rap.v1 import admin_pb2, audit_pb2, credentials_pb2, resource_pb2, secret_pb2
from rap_common.errors import DataLoss, NotFound
from rap_control.audit.service import AuditLog
from rap_control.db.engine import Database
from rap_control.keys.local import LocalKeyProvider
from rap_control.keys.provider import UnknownKey
from rap_control.keys.service import KeyService
from rap_control.secrets.service import SecretStore
from tests.conftest import Org
from tests.support.client import Client, paginate, rpc_error, trailer
from tests.support.server import ServerThread

pytestmark = pytest.mark.integration


def _resource(
    client: Client, name: str = "ssh-1", protocol: int = resource_pb2.PROTOCOL_SSH
) -> resource_pb2.Resource:
    return client.resources.CreateResource(
        resource_pb2.CreateResourceRequest(
            resource=resource_pb2.Resource(name=name, protocol=protocol, address="10.9.8.7")
        )
    ).resource


def _put_ssh(client: Client, resource_id: str, password: str, **extra: str) -> secret_pb2.SecretInfo:
    ssh = credentials_pb2.SshCredential(username="rapuser", password=password, **extra)
    return client.secrets.PutResourceSecret(
        secret_pb2.PutResourceSecretRequest(resource_id=resource_id, ssh=ssh)
    ).secret


@pytest.fixture
def store(provider: LocalKeyProvider) -> SecretStore:
    audit = AuditLog()
    return SecretStore(audit, provider, KeyService(audit, provider))


def test_put_get_rotate_delete_and_put_again(
    admin: Client, org: Org, db: Database, store: SecretStore
) -> None:
    resource = _resource(admin)
    info = _put_ssh(admin, resource.id, "first-pw")
    ref = f"rap-secret://org/{org.id}/resources/{resource.id}/default"
    assert (info.secret_ref, info.rotation_version, info.algorithm, info.key_id) == (
        ref,
        1,
        "AES-256-GCM",
        "test-kek-1",
    )
    assert len(info.payload_digest) == 64
    assert (
        admin.resources.GetResource(resource_pb2.GetResourceRequest(id=resource.id)).resource.secret_ref
        == ref
    )
    assert (
        admin.secrets.GetResourceSecret(secret_pb2.GetResourceSecretRequest(resource_id=resource.id)).secret
        == info
    )

    rotated = _put_ssh(admin, resource.id, "second-pw")
    assert rotated.rotation_version == 2 and rotated.payload_digest != info.payload_digest
    credential = db.run_sync(lambda uow: store.reveal(uow, uuid.UUID(org.id), uuid.UUID(resource.id), ref))
    assert credential.password.reveal() == "second-pw"  # type: ignore[union-attr]

    admin.secrets.DeleteResourceSecret(secret_pb2.DeleteResourceSecretRequest(resource_id=resource.id))
    gone = rpc_error(
        admin.secrets.GetResourceSecret, secret_pb2.GetResourceSecretRequest(resource_id=resource.id)
    )
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(NotFound):
        db.run_sync(lambda uow: store.reveal(uow, uuid.UUID(org.id), uuid.UUID(resource.id), ref))
    # The resource keeps its (now dangling) secret_ref until a secret is put again.
    assert (
        admin.resources.GetResource(resource_pb2.GetResourceRequest(id=resource.id)).resource.secret_ref
        == ref
    )
    assert _put_ssh(admin, resource.id, "third-pw").rotation_version == 3

    events, _ = paginate(admin.audit.ListAuditEvents, audit_pb2.ListAuditEventsRequest(), "events")
    kinds = [e.event_type for e in events if e.event_type.startswith("resource_secret")]
    assert kinds == ["resource_secret_rotated"] * 2 + ["resource_secret_deleted", "resource_secret_rotated"]
    assert all(e.details["secret_ref"] == ref for e in events if e.event_type.startswith("resource_secret"))


def test_each_credential_type_is_accepted_and_the_name_follows_the_resource(admin: Client, org: Org) -> None:
    rdp = _resource(admin, "rdp-1", resource_pb2.PROTOCOL_RDP)
    info = admin.secrets.PutResourceSecret(
        secret_pb2.PutResourceSecretRequest(
            resource_id=rdp.id,
            name="admin-login",
            rdp=credentials_pb2.RdpCredential(username="Administrator", domain="CORP", password="pw"),
        )
    ).secret
    assert info.secret_ref.endswith("/admin-login")
    again = admin.secrets.PutResourceSecret(
        secret_pb2.PutResourceSecretRequest(
            resource_id=rdp.id, rdp=credentials_pb2.RdpCredential(username="a", password="b")
        )
    ).secret
    assert again.secret_ref == info.secret_ref and again.rotation_version == 2
    other_name = rpc_error(
        admin.secrets.PutResourceSecret,
        secret_pb2.PutResourceSecretRequest(
            resource_id=rdp.id, name="second", rdp=credentials_pb2.RdpCredential(username="a", password="b")
        ),
    )
    assert other_name.code() == grpc.StatusCode.INVALID_ARGUMENT and "admin-login" in other_name.details()
    vnc = _resource(admin, "vnc-1", resource_pb2.PROTOCOL_VNC)
    admin.secrets.PutResourceSecret(
        secret_pb2.PutResourceSecretRequest(
            resource_id=vnc.id, vnc=credentials_pb2.VncCredential(password="pw")
        )
    )


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (secret_pb2.PutResourceSecretRequest(), "resource_id is required"),
        (secret_pb2.PutResourceSecretRequest(resource_id="RES"), "a credential is required"),
        (
            secret_pb2.PutResourceSecretRequest(
                resource_id="RES", rdp=credentials_pb2.RdpCredential(username="u")
            ),
            "rdp needs",
        ),
        (
            secret_pb2.PutResourceSecretRequest(
                resource_id="RES", ssh=credentials_pb2.SshCredential(username="u")
            ),
            "ssh needs",
        ),
        (
            secret_pb2.PutResourceSecretRequest(resource_id="RES", vnc=credentials_pb2.VncCredential()),
            "vnc needs",
        ),
        (
            secret_pb2.PutResourceSecretRequest(
                resource_id="RES", name="Bad Name", vnc=credentials_pb2.VncCredential(password="p")
            ),
            "name must be",
        ),
        (
            secret_pb2.PutResourceSecretRequest(
                resource_id="RES", vnc=credentials_pb2.VncCredential(password="p" * 20000)
            ),
            "vnc.password is longer",
        ),
    ],
)
def test_bad_puts_are_invalid_argument_and_store_nothing(
    admin: Client, request_: secret_pb2.PutResourceSecretRequest, expected: str
) -> None:
    resource = _resource(admin)
    if request_.resource_id == "RES":
        request_.resource_id = resource.id
    error = rpc_error(admin.secrets.PutResourceSecret, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.details()
    missing = rpc_error(
        admin.secrets.GetResourceSecret, secret_pb2.GetResourceSecretRequest(resource_id=resource.id)
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


def test_members_and_strangers_cannot_touch_secrets(
    dev_server: ServerThread, admin: Client, make_org: Callable[[], Org]
) -> None:
    resource = _resource(admin)
    _put_ssh(admin, resource.id, "pw")
    user = admin.admin.CreateUser(
        admin_pb2.CreateUserRequest(email="m@s.test", role=admin_pb2.ROLE_MEMBER)
    ).user
    member_token = admin.admin.CreateApiToken(admin_pb2.CreateApiTokenRequest(user_id=user.id)).token
    with dev_server.channel() as channel:
        member, stranger = Client(channel, member_token), Client(channel, make_org().admin_token)
        calls = [
            lambda c: _put_ssh(c, resource.id, "mine"),
            lambda c: c.secrets.GetResourceSecret(
                secret_pb2.GetResourceSecretRequest(resource_id=resource.id)
            ),
            lambda c: c.secrets.DeleteResourceSecret(
                secret_pb2.DeleteResourceSecretRequest(resource_id=resource.id)
            ),
        ]
        for call in calls:
            assert rpc_error(call, member).code() == grpc.StatusCode.PERMISSION_DENIED
            assert rpc_error(call, stranger).code() == grpc.StatusCode.NOT_FOUND
    assert (
        admin.secrets.GetResourceSecret(
            secret_pb2.GetResourceSecretRequest(resource_id=resource.id)
        ).secret.rotation_version
        == 1
    )


def test_a_canary_password_is_nowhere_but_in_ciphertext(
    admin: Client, org: Org, sql: psycopg2.extensions.connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    canary = f"C4nary-{uuid.uuid4().hex}"
    key_canary = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{canary}KEY\n-----END OPENSSH PRIVATE KEY-----\n"
    resource = _resource(admin)
    responses = [
        _put_ssh(admin, resource.id, canary, private_key=key_canary, passphrase=canary + "pp"),
        _put_ssh(admin, resource.id, canary + "2"),
        admin.secrets.GetResourceSecret(secret_pb2.GetResourceSecretRequest(resource_id=resource.id)),
        admin.resources.GetResource(resource_pb2.GetResourceRequest(id=resource.id)),
        admin.audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(page_size=200)),
    ]
    forms = [canary, base64.b64encode(canary.encode()).decode(), canary.encode().hex(), f"{canary}KEY"]
    with sql.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        tables = [row[0] for row in cur.fetchall()]
        assert {"resource_secrets", "audit_events", "resources"} <= set(tables)
        for table in tables:
            cur.execute(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM \"{table}\" t")
            dump = cur.fetchone()[0]
            for form in forms:
                assert form not in dump, f"{form[:12]}... found in table {table}"
    for form in forms:
        assert form not in caplog.text
        assert all(form not in str(response) for response in responses)


def _copy_columns(sql: psycopg2.extensions.connection, source: str, target: str) -> None:
    with sql.cursor() as cur:
        cur.execute(
            """UPDATE resource_secrets t SET key_id = s.key_id, wrapped_dek = s.wrapped_dek, nonce = s.nonce,
                   ciphertext = s.ciphertext, payload_sha256 = s.payload_sha256
               FROM resource_secrets s WHERE s.resource_id = %s AND t.resource_id = %s""",
            (source, target),
        )


def test_a_ciphertext_copied_onto_another_row_fails_to_decrypt(
    admin: Client, org: Org, db: Database, store: SecretStore, sql: psycopg2.extensions.connection
) -> None:
    one, two = _resource(admin, "one"), _resource(admin, "two")
    _put_ssh(admin, one.id, "one-pw")
    info = _put_ssh(admin, two.id, "two-pw")
    _copy_columns(sql, one.id, two.id)
    with pytest.raises(DataLoss):
        db.run_sync(lambda uow: store.reveal(uow, uuid.UUID(org.id), uuid.UUID(two.id), info.secret_ref))


@pytest.mark.parametrize(
    "column_expression",
    [
        "set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1)",
        "set_byte(ciphertext, length(ciphertext) - 1, get_byte(ciphertext, length(ciphertext) - 1) # 1)",
        "set_byte(nonce, 3, get_byte(nonce, 3) # 1)",
        "set_byte(wrapped_dek, 20, get_byte(wrapped_dek, 20) # 1)",
    ],
    ids=["ciphertext", "tag", "nonce", "wrapped_key"],
)
def test_a_flipped_bit_in_the_table_is_an_integrity_error(
    admin: Client,
    org: Org,
    db: Database,
    store: SecretStore,
    sql: psycopg2.extensions.connection,
    column_expression: str,
) -> None:
    resource = _resource(admin)
    info = _put_ssh(admin, resource.id, "pw")
    column = column_expression.split("(", 1)[1].split(",", 1)[0]
    with sql.cursor() as cur:
        cur.execute(
            f"UPDATE resource_secrets SET {column} = {column_expression} WHERE resource_id = %s",
            (resource.id,),
        )
    with pytest.raises(DataLoss) as info_:
        db.run_sync(lambda uow: store.reveal(uow, uuid.UUID(org.id), uuid.UUID(resource.id), info.secret_ref))
    assert "pw" not in info_.value.message


def test_an_unknown_key_id_fails_closed(
    admin: Client, org: Org, db: Database, store: SecretStore, sql: psycopg2.extensions.connection
) -> None:
    resource = _resource(admin)
    info = _put_ssh(admin, resource.id, "pw")
    with sql.cursor() as cur:
        cur.execute(
            "UPDATE resource_secrets SET key_id = 'kek-from-elsewhere' WHERE resource_id = %s", (resource.id,)
        )
    with pytest.raises(UnknownKey) as refused:
        db.run_sync(lambda uow: store.reveal(uow, uuid.UUID(org.id), uuid.UUID(resource.id), info.secret_ref))
    assert "kek-from-elsewhere" in refused.value.message


def test_key_management_needs_the_operator_organization(admin: Client) -> None:
    for call, request in [
        (admin.admin.ListEncryptionKeys, admin_pb2.ListEncryptionKeysRequest()),
        (admin.admin.SetActiveEncryptionKey, admin_pb2.SetActiveEncryptionKeyRequest(key_id="test-kek-1")),
    ]:
        error = rpc_error(call, request)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert trailer(error, "rap-reason") == "operator_required"
    with pytest.raises(grpc.RpcError) as info:
        list(admin.admin.RewrapSecrets(admin_pb2.RewrapSecretsRequest()))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
