"""Servicers of the services whose work comes later: every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

from rap.v1 import resolver_pb2_grpc, session_pb2_grpc
from rap_control.api.planned import DATA_PLANE, SESSIONS_AND_WORKERS, planned


class SessionServicer(session_pb2_grpc.SessionServiceServicer):
    SERVICE_NAME = "rap.v1.SessionService"

    StartSession = planned(SESSIONS_AND_WORKERS)
    GetSession = planned(SESSIONS_AND_WORKERS)
    ListSessions = planned(SESSIONS_AND_WORKERS)
    TerminateSession = planned(SESSIONS_AND_WORKERS)
    AttachSession = planned(DATA_PLANE)
    DetachSession = planned(DATA_PLANE)


class SecretResolverServicer(resolver_pb2_grpc.SecretResolverServicer):
    SERVICE_NAME = "rap.v1.SecretResolver"

    ResolveSecret = planned(SESSIONS_AND_WORKERS)
