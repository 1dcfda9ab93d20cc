"""RapClient: typed calls to the control plane's user-facing services (grpc.aio).

    async with RapClient("127.0.0.1:50051", token) as rap:
        session = await rap.start_session(resource_id)
        await session.wait_active()
        connection = await session.connect()
        await connection.write(b"whoami\\n")

Every method raises ``grpc.aio.AioRpcError`` with the server's status and
message on refusal; ``reason()`` reads its ``rap-reason`` code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import struct_pb2

from rap.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    credentials_pb2,
    resource_pb2,
    resource_pb2_grpc,
    secret_pb2,
    secret_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)
from rap_client.connection import DataConnection

_LIVE = {
    session_pb2.SESSION_STATE_REQUESTED,
    session_pb2.SESSION_STATE_ASSIGNED,
    session_pb2.SESSION_STATE_STARTING,
}


def reason(error: grpc.aio.AioRpcError) -> str:
    """The ``rap-reason`` code of a refusal."""
    metadata: Any = error.trailing_metadata() or ()
    return next((str(v) for k, v in metadata if k == "rap-reason"), "")


class RapClient:
    def __init__(
        self,
        target: str,
        token: str,
        *,
        tls_ca_pem: bytes | None = None,
        production: bool = False,
        allow_smoke_insecure: bool = False,
    ) -> None:
        """``tls_ca_pem``: the CA of the control plane's TLS certificate (plaintext without).
        ``production``: never use an unverifiable data-plane endpoint, even if asked.
        ``allow_smoke_insecure``: in development, accept a smoke-only endpoint (no
        certificate check at all); off unless asked for."""
        if production and allow_smoke_insecure:
            raise ValueError("allow_smoke_insecure is for development; it cannot be used in production mode")
        self._channel = (
            grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=tls_ca_pem))
            if tls_ca_pem is not None
            else grpc.aio.insecure_channel(target)
        )
        self._metadata = (("authorization", f"Bearer {token}"),)
        self.production = production
        self.allow_smoke_insecure = allow_smoke_insecure
        self.resources = resource_pb2_grpc.ResourceServiceStub(self._channel)
        self.secrets = secret_pb2_grpc.SecretServiceStub(self._channel)
        self.sessions = session_pb2_grpc.SessionServiceStub(self._channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(self._channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)

    async def __aenter__(self) -> RapClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    async def call(self, method: Any, request: Any) -> Any:
        """Any RPC of the stubs above, with this client's credentials."""
        return await method(request, metadata=self._metadata)

    # -- resources and secrets ----------------------------------------------

    async def create_resource(
        self, name: str, protocol: int, address: str, *, metadata: dict[str, Any] | None = None
    ) -> resource_pb2.Resource:
        md = struct_pb2.Struct()
        md.update(metadata or {})
        response = await self.call(
            self.resources.CreateResource,
            resource_pb2.CreateResourceRequest(
                resource=resource_pb2.Resource(name=name, protocol=protocol, address=address, metadata=md)  # type: ignore[arg-type]
            ),
        )
        return response.resource  # type: ignore[no-any-return]

    async def get_resource(self, resource_id: str) -> resource_pb2.Resource:
        response = await self.call(
            self.resources.GetResource, resource_pb2.GetResourceRequest(id=resource_id)
        )
        return response.resource  # type: ignore[no-any-return]

    async def find_resource(self, name_or_id: str) -> resource_pb2.Resource:
        """A resource by id, or by name among the organization's resources."""
        token = ""
        while True:
            page = await self.call(
                self.resources.ListResources,
                resource_pb2.ListResourcesRequest(page_size=200, page_token=token),
            )
            for resource in page.resources:
                if name_or_id in (resource.id, resource.name):
                    return resource  # type: ignore[no-any-return]
            token = page.next_page_token
            if not token:
                raise LookupError(f"no resource is named {name_or_id!r}")

    async def put_ssh_secret(
        self, resource_id: str, username: str, password: str = "", private_key: str = ""
    ) -> secret_pb2.SecretInfo:
        response = await self.call(
            self.secrets.PutResourceSecret,
            secret_pb2.PutResourceSecretRequest(
                resource_id=resource_id,
                ssh=credentials_pb2.SshCredential(
                    username=username, password=password, private_key=private_key
                ),
            ),
        )
        return response.secret  # type: ignore[no-any-return]

    async def list_resources(self, protocol: int = 0) -> list[resource_pb2.Resource]:
        out: list[resource_pb2.Resource] = []
        token = ""
        while True:
            page = await self.call(
                self.resources.ListResources,
                resource_pb2.ListResourcesRequest(page_size=200, page_token=token, protocol=protocol),  # type: ignore[arg-type]
            )
            out.extend(page.resources)
            token = page.next_page_token
            if not token:
                return out

    async def update_resource(
        self, resource: resource_pb2.Resource, fields: Iterable[str]
    ) -> resource_pb2.Resource:
        """Replace ``fields`` (name, address, secret_ref, metadata) of ``resource``."""
        request = resource_pb2.UpdateResourceRequest(resource=resource)
        request.update_mask.paths.extend(fields)
        response = await self.call(self.resources.UpdateResource, request)
        return response.resource  # type: ignore[no-any-return]

    async def delete_resource(self, resource_id: str) -> None:
        await self.call(self.resources.DeleteResource, resource_pb2.DeleteResourceRequest(id=resource_id))

    async def put_rdp_secret(
        self, resource_id: str, username: str, password: str, domain: str = ""
    ) -> secret_pb2.SecretInfo:
        response = await self.call(
            self.secrets.PutResourceSecret,
            secret_pb2.PutResourceSecretRequest(
                resource_id=resource_id,
                rdp=credentials_pb2.RdpCredential(username=username, password=password, domain=domain),
            ),
        )
        return response.secret  # type: ignore[no-any-return]

    async def put_vnc_secret(
        self, resource_id: str, password: str, username: str = ""
    ) -> secret_pb2.SecretInfo:
        response = await self.call(
            self.secrets.PutResourceSecret,
            secret_pb2.PutResourceSecretRequest(
                resource_id=resource_id,
                vnc=credentials_pb2.VncCredential(username=username, password=password),
            ),
        )
        return response.secret  # type: ignore[no-any-return]

    async def get_secret_info(self, resource_id: str) -> secret_pb2.SecretInfo:
        """Metadata of a resource's secret; never its value."""
        response = await self.call(
            self.secrets.GetResourceSecret, secret_pb2.GetResourceSecretRequest(resource_id=resource_id)
        )
        return response.secret  # type: ignore[no-any-return]

    async def delete_secret(self, resource_id: str) -> None:
        await self.call(
            self.secrets.DeleteResourceSecret, secret_pb2.DeleteResourceSecretRequest(resource_id=resource_id)
        )

    # -- sessions -----------------------------------------------------------

    async def start_session(self, resource_id: str, channels: Iterable[int] = ()) -> SessionHandle:
        response = await self.call(
            self.sessions.StartSession,
            session_pb2.StartSessionRequest(resource_id=resource_id, channels=list(channels)),  # type: ignore[arg-type]
        )
        return SessionHandle(self, response.session)

    async def get_session(self, session_id: str) -> session_pb2.Session:
        response = await self.call(self.sessions.GetSession, session_pb2.GetSessionRequest(id=session_id))
        return response.session  # type: ignore[no-any-return]

    async def list_sessions(self) -> list[session_pb2.Session]:
        out: list[session_pb2.Session] = []
        token = ""
        while True:
            page = await self.call(
                self.sessions.ListSessions, session_pb2.ListSessionsRequest(page_size=200, page_token=token)
            )
            out.extend(page.sessions)
            token = page.next_page_token
            if not token:
                return out

    async def attach_session(self, session_id: str, *, takeover: bool = False) -> session_pb2.Attachment:
        response = await self.call(
            self.sessions.AttachSession,
            session_pb2.AttachSessionRequest(session_id=session_id, takeover=takeover),
        )
        return response.attachment  # type: ignore[no-any-return]

    async def detach_session(self, session_id: str, attachment_id: str) -> None:
        await self.call(
            self.sessions.DetachSession,
            session_pb2.DetachSessionRequest(session_id=session_id, attachment_id=attachment_id),
        )

    async def terminate_session(self, session_id: str, reason_code: str = "") -> session_pb2.Session:
        response = await self.call(
            self.sessions.TerminateSession,
            session_pb2.TerminateSessionRequest(id=session_id, reason=reason_code),
        )
        return response.session  # type: ignore[no-any-return]

    # -- audit and admin ----------------------------------------------------

    async def audit_events(self, event_type: str = "") -> list[audit_pb2.AuditEvent]:
        out: list[audit_pb2.AuditEvent] = []
        token = ""
        while True:
            page = await self.call(
                self.audit.ListAuditEvents,
                audit_pb2.ListAuditEventsRequest(page_size=200, page_token=token, event_type=event_type),
            )
            out.extend(page.events)
            token = page.next_page_token
            if not token:
                return out

    async def verify_audit_chain(self) -> audit_pb2.VerifyAuditChainResponse:
        return await self.call(self.audit.VerifyAuditChain, audit_pb2.VerifyAuditChainRequest())  # type: ignore[no-any-return]

    async def get_organization(self) -> admin_pb2.Organization:
        response = await self.call(self.admin.GetOrganization, admin_pb2.GetOrganizationRequest())
        return response.organization  # type: ignore[no-any-return]

    async def update_organization_policy(self, policy: dict[str, Any]) -> admin_pb2.Organization:
        value = struct_pb2.Struct()
        value.update(policy)
        response = await self.call(
            self.admin.UpdateOrganizationPolicy, admin_pb2.UpdateOrganizationPolicyRequest(policy=value)
        )
        return response.organization  # type: ignore[no-any-return]

    async def create_user(self, email: str, role: int, display_name: str = "") -> admin_pb2.User:
        response = await self.call(
            self.admin.CreateUser,
            admin_pb2.CreateUserRequest(email=email, role=role, display_name=display_name),  # type: ignore[arg-type]
        )
        return response.user  # type: ignore[no-any-return]

    async def get_user(self, user_id: str) -> admin_pb2.User:
        response = await self.call(self.admin.GetUser, admin_pb2.GetUserRequest(id=user_id))
        return response.user  # type: ignore[no-any-return]

    async def list_users(self) -> list[admin_pb2.User]:
        out: list[admin_pb2.User] = []
        token = ""
        while True:
            page = await self.call(
                self.admin.ListUsers, admin_pb2.ListUsersRequest(page_size=200, page_token=token)
            )
            out.extend(page.users)
            token = page.next_page_token
            if not token:
                return out

    async def update_user(self, request: admin_pb2.UpdateUserRequest) -> admin_pb2.User:
        response = await self.call(self.admin.UpdateUser, request)
        return response.user  # type: ignore[no-any-return]

    async def create_api_token(self, name: str, user_id: str = "") -> tuple[admin_pb2.ApiToken, str]:
        """The token's record and the bearer token itself (shown this once)."""
        response = await self.call(
            self.admin.CreateApiToken, admin_pb2.CreateApiTokenRequest(user_id=user_id, name=name)
        )
        return response.api_token, str(response.token)

    async def list_api_tokens(self, user_id: str = "") -> list[admin_pb2.ApiToken]:
        out: list[admin_pb2.ApiToken] = []
        token = ""
        while True:
            page = await self.call(
                self.admin.ListApiTokens,
                admin_pb2.ListApiTokensRequest(user_id=user_id, page_size=200, page_token=token),
            )
            out.extend(page.api_tokens)
            token = page.next_page_token
            if not token:
                return out

    async def revoke_api_token(self, token_id: str) -> admin_pb2.ApiToken:
        response = await self.call(self.admin.RevokeApiToken, admin_pb2.RevokeApiTokenRequest(id=token_id))
        return response.api_token  # type: ignore[no-any-return]

    async def list_workers(self) -> list[admin_pb2.Worker]:
        out: list[admin_pb2.Worker] = []
        token = ""
        while True:
            page = await self.call(
                self.admin.ListWorkers, admin_pb2.ListWorkersRequest(page_size=200, page_token=token)
            )
            out.extend(page.workers)
            token = page.next_page_token
            if not token:
                return out

    async def revoke_worker(self, worker_id: str) -> admin_pb2.Worker:
        response = await self.call(self.admin.RevokeWorker, admin_pb2.RevokeWorkerRequest(id=worker_id))
        return response.worker  # type: ignore[no-any-return]

    async def list_encryption_keys(self) -> list[admin_pb2.EncryptionKey]:
        response = await self.call(self.admin.ListEncryptionKeys, admin_pb2.ListEncryptionKeysRequest())
        return list(response.keys)

    async def set_active_encryption_key(self, key_id: str) -> admin_pb2.EncryptionKey:
        response = await self.call(
            self.admin.SetActiveEncryptionKey, admin_pb2.SetActiveEncryptionKeyRequest(key_id=key_id)
        )
        return response.key  # type: ignore[no-any-return]

    async def rewrap_secrets(self, batch_size: int = 0) -> AsyncIterator[admin_pb2.RewrapSecretsResponse]:
        """Progress of a rewrap under the active key, batch by batch."""
        async for progress in self.admin.RewrapSecrets(
            admin_pb2.RewrapSecretsRequest(batch_size=batch_size), metadata=self._metadata
        ):
            yield progress

    async def rotate_signing_key(self) -> admin_pb2.RotateSigningKeyResponse:
        return await self.call(self.admin.RotateSigningKey, admin_pb2.RotateSigningKeyRequest())  # type: ignore[no-any-return]

    async def create_worker_enrollment_token(self, worker_name: str, ttl_seconds: int = 0) -> str:
        response = await self.call(
            self.admin.CreateWorkerEnrollmentToken,
            admin_pb2.CreateWorkerEnrollmentTokenRequest(worker_name=worker_name, ttl_seconds=ttl_seconds),
        )
        return str(response.enrollment_token)

    async def jwks(self) -> admin_pb2.GetJwksResponse:
        return await self.call(self.admin.GetJwks, admin_pb2.GetJwksRequest())  # type: ignore[no-any-return]


class SessionHandle:
    """A started session: wait for it, attach, connect."""

    def __init__(self, client: RapClient, session: session_pb2.Session) -> None:
        self._client = client
        self.session = session

    @property
    def id(self) -> str:
        return str(self.session.id)

    async def wait_active(self, within: float = 30.0) -> session_pb2.Session:
        """Poll until the session is active; raise RuntimeError if it ends first."""
        deadline = time.monotonic() + within
        while True:
            self.session = await self._client.get_session(self.id)
            if self.session.state == session_pb2.SESSION_STATE_ACTIVE:
                return self.session
            if self.session.state not in _LIVE:
                raise RuntimeError(
                    f"session {self.id} ended: {session_pb2.SessionState.Name(self.session.state)} "
                    f"({self.session.end_reason})"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"session {self.id} did not become active within {within} s")
            await asyncio.sleep(0.02)  # a session becomes active within tens of milliseconds

    async def connect(self, *, takeover: bool = False) -> DataConnection:
        """Attach and open the data-plane connection on the best verifiable candidate."""
        attachment = await self._client.attach_session(self.id, takeover=takeover)
        return await DataConnection.open(
            attachment,
            production=self._client.production,
            allow_smoke_insecure=self._client.allow_smoke_insecure,
        )
