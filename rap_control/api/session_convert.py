"""Conversions between protobuf messages and session values, in one place."""

from __future__ import annotations

from typing import Any

from rap.v1 import jwk_pb2, resolver_pb2, session_pb2, worker_pb2
from rap_common.errors import InvalidArgument
from rap_control.api import convert
from rap_control.policy.candidates import Candidate
from rap_control.secrets.types import Credential, RdpCredential, SshCredential, VncCredential
from rap_control.sessions.types import Assignment, Attachment, Channel, Session, SessionState

_STATES: dict[int, SessionState] = {
    session_pb2.SESSION_STATE_REQUESTED: SessionState.REQUESTED,
    session_pb2.SESSION_STATE_ASSIGNED: SessionState.ASSIGNED,
    session_pb2.SESSION_STATE_STARTING: SessionState.STARTING,
    session_pb2.SESSION_STATE_ACTIVE: SessionState.ACTIVE,
    session_pb2.SESSION_STATE_TERMINATED: SessionState.TERMINATED,
    session_pb2.SESSION_STATE_FAILED: SessionState.FAILED,
}
_STATES_BACK = {v: session_pb2.SessionState.ValueType(k) for k, v in _STATES.items()}
_CHANNELS: dict[int, Channel] = {
    session_pb2.CHANNEL_TERMINAL: Channel.TERMINAL,
    session_pb2.CHANNEL_CLIPBOARD: Channel.CLIPBOARD,
    session_pb2.CHANNEL_FILE_UPLOAD: Channel.FILE_UPLOAD,
}
_CHANNELS_BACK = {v: session_pb2.Channel.ValueType(k) for k, v in _CHANNELS.items()}


def state(value: int, field: str, *, required: bool) -> SessionState | None:
    if value == session_pb2.SESSION_STATE_UNSPECIFIED and not required:
        return None
    if value not in _STATES:
        raise InvalidArgument(f"{field} must be a known session state", reason="bad_state")
    return _STATES[value]


def channels(values: Any, field: str = "channels") -> list[Channel]:
    out = []
    for value in values:
        if value not in _CHANNELS:
            raise InvalidArgument(f"{field} holds an unknown channel ({value})", reason="bad_channel")
        out.append(_CHANNELS[value])
    return out


def session_to_proto(s: Session) -> session_pb2.Session:
    return session_pb2.Session(
        id=str(s.id),
        organization_id=str(s.organization_id),
        resource_id=str(s.resource_id),
        user_id=str(s.user_id),
        worker_id=str(s.worker_id) if s.worker_id else "",
        state=_STATES_BACK[s.state],
        channels=[_CHANNELS_BACK[c] for c in s.channels],
        end_reason=s.end_reason or "",
        create_time=convert.timestamp(s.created_at),
        update_time=convert.timestamp(s.updated_at),
    )


def environment(production: bool) -> worker_pb2.Environment.ValueType:
    return worker_pb2.ENVIRONMENT_PRODUCTION if production else worker_pb2.ENVIRONMENT_DEVELOPMENT


def assignment_to_proto(a: Assignment, *, production: bool) -> worker_pb2.ConnectResponse:
    return worker_pb2.ConnectResponse(
        assignment=worker_pb2.Assignment(
            session_id=str(a.session.id),
            organization_id=str(a.session.organization_id),
            resource_id=str(a.session.resource_id),
            protocol=convert.protocol_to_proto(a.protocol),
            address=a.address,
            secret_ref=a.secret_ref,
            lease_token=a.lease_token,
            lease_expire_time=convert.timestamp(a.lease_expires_at),
            resource_metadata=convert.dict_to_struct(a.resource_metadata),
            channels=[_CHANNELS_BACK[c] for c in a.session.channels],
            environment=environment(production),
            organization_policy=convert.dict_to_struct(a.organization_policy),
        )
    )


def jwks_to_proto(keys: dict[str, dict[str, str]]) -> jwk_pb2.JsonWebKeySet:
    return jwk_pb2.JsonWebKeySet(
        keys=[
            jwk_pb2.JsonWebKey(kid=kid, kty=k["kty"], alg=k["alg"], use=k["use"], n=k["n"], e=k["e"])
            for kid, k in sorted(keys.items())
        ]
    )


def credential_to_proto(credential: Credential, rotation_version: int) -> resolver_pb2.ResolveSecretResponse:
    """The one conversion that reveals a credential: for ResolveSecret only."""
    response = resolver_pb2.ResolveSecretResponse(rotation_version=rotation_version)
    if isinstance(credential, SshCredential):
        response.ssh.username = credential.username
        response.ssh.password = credential.password.reveal()
        response.ssh.private_key = credential.private_key.reveal()
        response.ssh.passphrase = credential.passphrase.reveal()
    elif isinstance(credential, RdpCredential):
        response.rdp.username = credential.username
        response.rdp.domain = credential.domain
        response.rdp.password = credential.password.reveal()
    elif isinstance(credential, VncCredential):
        response.vnc.username = credential.username
        response.vnc.password = credential.password.reveal()
    return response


_KINDS = {
    "direct_worker": session_pb2.CANDIDATE_KIND_DIRECT_WORKER,
    "gateway": session_pb2.CANDIDATE_KIND_GATEWAY,
}
_TRUST = {
    "smoke_insecure": session_pb2.TRUST_MODE_SMOKE_INSECURE,
    "public_ca": session_pb2.TRUST_MODE_PUBLIC_CA,
    "platform_ca": session_pb2.TRUST_MODE_PLATFORM_CA,
}
_ATTACHMENT_STATES = {
    "active": session_pb2.ATTACHMENT_STATE_ACTIVE,
    "detached": session_pb2.ATTACHMENT_STATE_DETACHED,
    "superseded": session_pb2.ATTACHMENT_STATE_SUPERSEDED,
}


def attachment_to_proto(
    attachment: Attachment, token: str, candidates: list[Candidate]
) -> session_pb2.Attachment:
    out = session_pb2.Attachment(
        attachment_id=str(attachment.id),
        session_id=str(attachment.session_id),
        data_plane_token=token,
        expire_time=convert.timestamp(attachment.expires_at),
        state=_ATTACHMENT_STATES[attachment.state],
    )
    for c in candidates:
        candidate = out.candidates.add(
            kind=_KINDS[c.kind.value], url=c.url, trust_mode=_TRUST[c.trust_mode], smoke_only=c.smoke_only
        )
        if c.ca_bundle_pem:
            candidate.ca_bundle_pem = c.ca_bundle_pem
    return out


def attachment_message(attachment: Attachment) -> worker_pb2.AttachmentUpdate:
    return worker_pb2.AttachmentUpdate(
        session_id=str(attachment.session_id),
        attachment_id=str(attachment.id),
        user_id=str(attachment.user_id),
        state=_ATTACHMENT_STATES[attachment.state],
        channels=[_CHANNELS_BACK[c] for c in attachment.channels],
    )


def attachment_update(attachment: Attachment) -> worker_pb2.ConnectResponse:
    return worker_pb2.ConnectResponse(attachment_update=attachment_message(attachment))
