"""Servicers of the services whose work comes later: every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

from rap.v1 import resolver_pb2_grpc, session_pb2_grpc, worker_pb2_grpc
from rap_control.api.planned import DATA_PLANE, SESSIONS_AND_WORKERS, planned


class SessionServicer(session_pb2_grpc.SessionServiceServicer):
    SERVICE_NAME = "rap.v1.SessionService"

    StartSession = planned(SESSIONS_AND_WORKERS)
    GetSession = planned(SESSIONS_AND_WORKERS)
    ListSessions = planned(SESSIONS_AND_WORKERS)
    TerminateSession = planned(SESSIONS_AND_WORKERS)
    AttachSession = planned(DATA_PLANE)
    DetachSession = planned(DATA_PLANE)


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    SERVICE_NAME = "rap.v1.WorkerService"

    Enroll = planned(SESSIONS_AND_WORKERS)
    RenewCertificate = planned(SESSIONS_AND_WORKERS)
    Connect = planned(SESSIONS_AND_WORKERS)


class SecretResolverServicer(resolver_pb2_grpc.SecretResolverServicer):
    SERVICE_NAME = "rap.v1.SecretResolver"

    ResolveSecret = planned(SESSIONS_AND_WORKERS)
