"""Conversions between protobuf messages and domain values, in one place.

Enum values a client sends are checked here: proto3 enums are open, so an
unknown number arrives intact and must be refused by name of the field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from rap.v1 import admin_pb2, audit_pb2, identity_pb2, resource_pb2, secret_pb2
from rap_common.errors import InvalidArgument
from rap_common.identity import ROLE_TO_PROTO
from rap_common.secrets import SecretStr
from rap_control.audit.types import AuditEvent
from rap_control.identity.types import ApiTokenInfo, Organization, User
from rap_control.keys.service import KeyStatus
from rap_control.paging import encode_token
from rap_control.principal import Role
from rap_control.resources.types import Protocol, Resource
from rap_control.secrets.types import Credential, RdpCredential, SecretInfo, SshCredential, VncCredential
from rap_control.workers.types import Worker

# Keyed by plain int: requests carry enum fields as ints, known or not.
_PROTOCOLS: dict[int, Protocol] = {
    resource_pb2.PROTOCOL_RDP: Protocol.RDP,
    resource_pb2.PROTOCOL_VNC: Protocol.VNC,
    resource_pb2.PROTOCOL_SSH: Protocol.SSH,
    resource_pb2.PROTOCOL_TCP: Protocol.TCP,
}
_PROTOCOLS_BACK = {v: resource_pb2.Protocol.ValueType(k) for k, v in _PROTOCOLS.items()}
_ROLES: dict[int, Role] = {admin_pb2.ROLE_ADMIN: Role.ADMIN, admin_pb2.ROLE_MEMBER: Role.MEMBER}
_ROLES_BACK = {v: admin_pb2.Role.ValueType(k) for k, v in _ROLES.items()}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def from_timestamp(message: Any, field: str) -> datetime | None:
    """The datetime of an optional Timestamp field, or None when unset."""
    if not message.HasField(field):
        return None
    value: datetime = getattr(message, field).ToDatetime(tzinfo=UTC)
    return value


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(value)


def dict_to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def next_page_token(key: dict[str, Any] | None) -> str:
    return encode_token(key) if key else ""


def protocol(value: int, field: str = "resource.protocol", *, required: bool = True) -> Protocol | None:
    if value == resource_pb2.PROTOCOL_UNSPECIFIED and not required:
        return None
    if value not in _PROTOCOLS:
        names = ", ".join(resource_pb2.Protocol.Name(resource_pb2.Protocol.ValueType(k)) for k in _PROTOCOLS)
        if value == resource_pb2.PROTOCOL_UNSPECIFIED:
            raise InvalidArgument(f"{field} is required: one of {names}", reason="missing_field")
        raise InvalidArgument(f"{field} {value} is not one of {names}", reason="bad_enum")
    return _PROTOCOLS[value]


def protocol_to_proto(value: Protocol) -> resource_pb2.Protocol.ValueType:
    return _PROTOCOLS_BACK[value]


def role(value: int, *, required: bool) -> Role | None:
    if value == admin_pb2.ROLE_UNSPECIFIED and not required:
        return None
    if value not in _ROLES:
        if value == admin_pb2.ROLE_UNSPECIFIED:
            raise InvalidArgument("role is required: ROLE_ADMIN or ROLE_MEMBER", reason="missing_field")
        raise InvalidArgument(f"role {value} is not ROLE_ADMIN or ROLE_MEMBER", reason="bad_enum")
    return _ROLES[value]


def resource_to_proto(r: Resource) -> resource_pb2.Resource:
    return resource_pb2.Resource(
        id=str(r.id),
        organization_id=str(r.organization_id),
        name=r.name,
        protocol=_PROTOCOLS_BACK[r.protocol],
        address=r.address,
        secret_ref=r.secret_ref or "",
        metadata=dict_to_struct(r.metadata),
        create_time=timestamp(r.created_at),
        update_time=timestamp(r.updated_at),
    )


def organization_to_proto(o: Organization) -> admin_pb2.Organization:
    return admin_pb2.Organization(
        id=str(o.id), name=o.name, create_time=timestamp(o.created_at), policy=dict_to_struct(o.policy)
    )


def user_to_proto(u: User) -> admin_pb2.User:
    return admin_pb2.User(
        id=str(u.id),
        organization_id=str(u.organization_id),
        email=u.email,
        display_name=u.display_name,
        role=_ROLES_BACK[u.role],
        disabled=u.disabled,
        create_time=timestamp(u.created_at),
    )


def api_token_to_proto(t: ApiTokenInfo) -> admin_pb2.ApiToken:
    return admin_pb2.ApiToken(
        id=str(t.id),
        user_id=str(t.user_id),
        name=t.name,
        prefix=t.prefix,
        create_time=timestamp(t.created_at),
        expire_time=timestamp(t.expires_at),
        revoke_time=timestamp(t.revoked_at),
    )


def audit_event_to_proto(e: AuditEvent) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        id=str(e.id),
        organization_id=str(e.organization_id) if e.organization_id else "",
        sequence=e.sequence,
        event_type=e.event_type,
        actor_type=e.actor_type,
        actor_id=e.actor_id,
        target_type=e.target_type,
        target_id=e.target_id,
        request_id=e.request_id,
        details=dict_to_struct(e.details),
        create_time=timestamp(e.created_at),
        hash=e.hash.hex(),
        previous_hash=e.previous_hash.hex(),
    )


def credential(request: Any) -> Credential:
    """The typed credential of a PutResourceSecretRequest's payload oneof."""
    which = request.WhichOneof("payload")
    if which == "rdp":
        c = request.rdp
        return RdpCredential(c.username, c.domain, SecretStr(c.password))
    if which == "ssh":
        c = request.ssh
        return SshCredential(
            c.username, SecretStr(c.password), SecretStr(c.private_key), SecretStr(c.passphrase)
        )
    if which == "vnc":
        c = request.vnc
        return VncCredential(c.username, SecretStr(c.password))
    raise InvalidArgument("a credential is required: set one of rdp, ssh or vnc", reason="missing_field")


def secret_info_to_proto(info: SecretInfo) -> secret_pb2.SecretInfo:
    return secret_pb2.SecretInfo(
        secret_ref=info.secret_ref,
        rotation_version=info.rotation_version,
        key_id=info.key_id,
        algorithm=info.algorithm,
        payload_digest=info.payload_digest.hex(),
        create_time=timestamp(info.created_at),
        rotate_time=timestamp(info.rotated_at),
    )


def key_status_to_proto(key: KeyStatus) -> admin_pb2.EncryptionKey:
    return admin_pb2.EncryptionKey(
        key_id=key.key_id,
        provider=key.provider,
        active=key.active,
        secret_count=key.secret_count,
        create_time=timestamp(key.created_at),
        retire_time=timestamp(key.retired_at),
    )


_WORKER_STATUS = {
    "online": admin_pb2.WORKER_STATUS_ONLINE,
    "offline": admin_pb2.WORKER_STATUS_OFFLINE,
    "revoked": admin_pb2.WORKER_STATUS_REVOKED,
}


def worker_to_proto(w: Worker) -> admin_pb2.Worker:
    return admin_pb2.Worker(
        id=str(w.id),
        organization_id=str(w.organization_id),
        name=w.name,
        status=_WORKER_STATUS[w.status],
        protocols=[_PROTOCOLS_BACK[Protocol(p)] for p in w.protocols],
        capacity=w.capacity,
        direct_url=w.direct_url or "",
        certificate_expire_time=timestamp(w.certificate_not_after),
        last_seen_time=timestamp(w.last_seen_at),
        create_time=timestamp(w.created_at),
        role=ROLE_TO_PROTO.get(w.role, identity_pb2.IDENTITY_ROLE_UNSPECIFIED),
    )
