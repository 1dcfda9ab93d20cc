"""Small conveniences for calling the control plane as a user would."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from rap.v1 import (
    admin_pb2_grpc,
    audit_pb2_grpc,
    resource_pb2_grpc,
    secret_pb2_grpc,
    session_pb2_grpc,
)


class _Authed:
    """A stub whose every call sends the bearer token and a timeout."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("metadata", self._metadata)
            kwargs.setdefault("timeout", 15)
            return method(request, **kwargs)

        return call


@dataclass
class Client:
    channel: grpc.Channel
    token: str

    def __post_init__(self) -> None:
        md = (("authorization", f"Bearer {self.token}"),)
        self.resources = _Authed(resource_pb2_grpc.ResourceServiceStub(self.channel), md)
        self.admin = _Authed(admin_pb2_grpc.AdminServiceStub(self.channel), md)
        self.audit = _Authed(audit_pb2_grpc.AuditServiceStub(self.channel), md)
        self.secrets = _Authed(secret_pb2_grpc.SecretServiceStub(self.channel), md)
        self.sessions = _Authed(session_pb2_grpc.SessionServiceStub(self.channel), md)


def rpc_error(call: Callable[..., Any], *args: Any, **kwargs: Any) -> grpc.RpcError:
    """The RpcError ``call`` raises; fails the test if it succeeds."""
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def trailer(error: grpc.RpcError, key: str) -> str:
    return dict(error.trailing_metadata() or ()).get(key, "")  # type: ignore[attr-defined, no-any-return]


def paginate(method: Callable[[Any], Any], request: Any, field: str) -> tuple[list[Any], int]:
    """Every item of a List RPC, following next_page_token; and how many pages it took."""
    items: list[Any] = []
    pages = 0
    while True:
        page = method(request)
        pages += 1
        items.extend(getattr(page, field))
        if not page.next_page_token:
            return items, pages
        request.page_token = page.next_page_token
