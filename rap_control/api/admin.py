"""AdminService: organization, users and API tokens now; workers and keys later."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from rap.v1 import admin_pb2, admin_pb2_grpc
from rap_common.identity import PROTO_TO_ROLE, ROLE_WORKER
from rap_control.api import convert
from rap_control.api.calls import Calls
from rap_control.api.keys import KeyRpcs
from rap_control.api.signing import SigningKeyRpcs
from rap_control.coordination.types import Coordination, EventKind, WorkerEvent, notify_best_effort
from rap_control.db.engine import UnitOfWork
from rap_control.identity.service import IdentityService
from rap_control.identity.types import User, UserPatch
from rap_control.ids import parse_id, require_id
from rap_control.paging import page_request
from rap_control.principal import CallContext
from rap_control.sessions.revocation import Revocations, Revoked
from rap_control.workers.service import WorkerEnrollment
from rap_control.workers.types import Worker


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    SERVICE_NAME = "rap.v1.AdminService"

    def __init__(
        self,
        calls: Calls,
        identity: IdentityService,
        keys: KeyRpcs,
        enrollment: WorkerEnrollment,
        coordination: Coordination,
        signing: SigningKeyRpcs,
        revocations: Revocations,
    ) -> None:
        self._coordination = coordination
        self._revocations = revocations
        self._signing = signing
        self._calls = calls
        self._identity = identity
        self._keys = keys
        self._enrollment = enrollment

    async def GetOrganization(self, request: Any, context: Any) -> admin_pb2.GetOrganizationResponse:
        org_id = parse_id(request.id, "id", required=False)
        org = await self._calls.run(lambda uow, call: self._identity.get_organization(uow, call, org_id))
        return admin_pb2.GetOrganizationResponse(organization=convert.organization_to_proto(org))

    async def UpdateOrganizationPolicy(
        self, request: Any, context: Any
    ) -> admin_pb2.UpdateOrganizationPolicyResponse:
        policy = convert.struct_to_dict(request.policy)
        org = await self._calls.run(lambda uow, call: self._identity.update_policy(uow, call, policy))
        return admin_pb2.UpdateOrganizationPolicyResponse(organization=convert.organization_to_proto(org))

    async def CreateUser(self, request: Any, context: Any) -> admin_pb2.CreateUserResponse:
        role = convert.role(request.role, required=True)
        assert role is not None
        user = await self._calls.run(
            lambda uow, call: self._identity.create_user(uow, call, request.email, request.display_name, role)
        )
        return admin_pb2.CreateUserResponse(user=convert.user_to_proto(user))

    async def GetUser(self, request: Any, context: Any) -> admin_pb2.GetUserResponse:
        user_id = require_id(request.id, "id")
        user = await self._calls.run(lambda uow, call: self._identity.get_user(uow, call, user_id))
        return admin_pb2.GetUserResponse(user=convert.user_to_proto(user))

    async def ListUsers(self, request: Any, context: Any) -> admin_pb2.ListUsersResponse:
        page = page_request(request.page_size, request.page_token)
        rows, next_key = await self._calls.run(lambda uow, call: self._identity.list_users(uow, call, page))
        return admin_pb2.ListUsersResponse(
            users=[convert.user_to_proto(u) for u in rows], next_page_token=convert.next_page_token(next_key)
        )

    async def UpdateUser(self, request: Any, context: Any) -> admin_pb2.UpdateUserResponse:
        user_id = require_id(request.id, "id")
        patch = UserPatch(
            role=convert.role(request.role, required=False),
            disabled=request.disabled if request.HasField("disabled") else None,
            display_name=request.display_name or None,
        )

        def unit(uow: UnitOfWork, call: CallContext) -> tuple[User, Revoked]:
            user = self._identity.update_user(uow, call, user_id, patch)
            # A disabled user's live sessions end in the same transaction, audited.
            if user.disabled:
                return user, self._revocations.end_for_user(uow, call.organization_id, user.id, call.actor)
            return user, Revoked()

        user, revoked = await self._calls.run(unit)
        await self._tell(revoked)
        return admin_pb2.UpdateUserResponse(user=convert.user_to_proto(user))

    async def _tell(self, revoked: Revoked) -> None:
        """Tell the workers what a revocation ended: they close the bound connections."""
        events = [
            WorkerEvent(EventKind.SESSION_TERMINATED, s.worker_id, s.id)
            for s in revoked.sessions
            if s.worker_id
        ]
        events += [
            WorkerEvent(EventKind.ATTACHMENT_UPDATED, a.worker_id, a.session_id, a.attachment_id)
            for a in revoked.attachments
            if a.worker_id
        ]
        for event in events:
            await notify_best_effort(self._coordination, event)

    async def CreateApiToken(self, request: Any, context: Any) -> admin_pb2.CreateApiTokenResponse:
        user_id = parse_id(request.user_id, "user_id", required=False)
        expires_at = convert.from_timestamp(request, "expire_time")
        issued = await self._calls.run(
            lambda uow, call: self._identity.create_token(uow, call, user_id, request.name, expires_at)
        )
        # The one place the token is revealed: the response to its owner.
        return admin_pb2.CreateApiTokenResponse(
            api_token=convert.api_token_to_proto(issued.info), token=issued.token.reveal()
        )

    async def ListApiTokens(self, request: Any, context: Any) -> admin_pb2.ListApiTokensResponse:
        user_id = parse_id(request.user_id, "user_id", required=False)
        page = page_request(request.page_size, request.page_token)
        rows, next_key = await self._calls.run(
            lambda uow, call: self._identity.list_tokens(uow, call, user_id, page)
        )
        return admin_pb2.ListApiTokensResponse(
            api_tokens=[convert.api_token_to_proto(t) for t in rows],
            next_page_token=convert.next_page_token(next_key),
        )

    async def RevokeApiToken(self, request: Any, context: Any) -> admin_pb2.RevokeApiTokenResponse:
        token_id = require_id(request.id, "id")
        token = await self._calls.run(lambda uow, call: self._identity.revoke_token(uow, call, token_id))
        return admin_pb2.RevokeApiTokenResponse(api_token=convert.api_token_to_proto(token))

    async def CreateWorkerEnrollmentToken(
        self, request: Any, context: Any
    ) -> admin_pb2.CreateWorkerEnrollmentTokenResponse:
        role = PROTO_TO_ROLE.get(request.role, ROLE_WORKER)
        issued = await self._calls.run(
            lambda uow, call: self._enrollment.create_token(
                uow, call, request.worker_name, request.ttl_seconds, role
            )
        )
        # The one place the token is revealed: the response to the admin who asked.
        return admin_pb2.CreateWorkerEnrollmentTokenResponse(
            enrollment_token=issued.token.reveal(), expire_time=convert.timestamp(issued.expires_at)
        )

    async def ListWorkers(self, request: Any, context: Any) -> admin_pb2.ListWorkersResponse:
        page = page_request(request.page_size, request.page_token)
        rows, next_key = await self._calls.run(
            lambda uow, call: self._enrollment.list_workers(uow, call, page)
        )
        return admin_pb2.ListWorkersResponse(
            workers=[convert.worker_to_proto(w) for w in rows],
            next_page_token=convert.next_page_token(next_key),
        )

    async def RevokeWorker(self, request: Any, context: Any) -> admin_pb2.RevokeWorkerResponse:
        worker_id = require_id(request.id, "id")

        def unit(uow: UnitOfWork, call: CallContext) -> Worker:
            worker = self._enrollment.revoke(uow, call, worker_id)
            # Its live sessions fail now, audited (worker_revoked); its leases go with them.
            self._revocations.end_for_worker(uow, worker.id, call.actor)
            return worker

        worker = await self._calls.run(unit)
        # Close its stream now, wherever it is (its next heartbeat would anyway); the
        # worker then closes every bound connection (4412, worker_revoked).
        await notify_best_effort(self._coordination, WorkerEvent(EventKind.WORKER_REVOKED, worker_id))
        return admin_pb2.RevokeWorkerResponse(worker=convert.worker_to_proto(worker))

    async def ListEncryptionKeys(self, request: Any, context: Any) -> admin_pb2.ListEncryptionKeysResponse:
        return await self._keys.list_keys()

    async def SetActiveEncryptionKey(
        self, request: Any, context: Any
    ) -> admin_pb2.SetActiveEncryptionKeyResponse:
        return await self._keys.set_active(request)

    def RewrapSecrets(self, request: Any, context: Any) -> AsyncIterator[admin_pb2.RewrapSecretsResponse]:
        return self._keys.rewrap(request)

    async def GetJwks(self, request: Any, context: Any) -> admin_pb2.GetJwksResponse:
        return await self._signing.get_jwks()

    async def RotateSigningKey(self, request: Any, context: Any) -> admin_pb2.RotateSigningKeyResponse:
        return await self._signing.rotate()
