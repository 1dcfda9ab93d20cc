"""The per-call context the interceptor establishes for servicers.

The interceptor keeps the call's bearer token and request id in context
variables of the task that runs the handler; servicers never parse
metadata themselves. Authentication happens inside each RPC's unit of work
(see :mod:`rap_control.api.calls`), so an RPC is one transaction.
"""

from __future__ import annotations

import contextvars

from rap_common.errors import Unauthenticated

_token: contextvars.ContextVar[str | None] = contextvars.ContextVar("rap_bearer_token", default=None)
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("rap_request_id", default="")
_peer_certificate: contextvars.ContextVar[bytes | None] = contextvars.ContextVar(
    "rap_peer_certificate", default=None
)


def set_call(token: str | None, request_id: str, peer_certificate: bytes | None = None) -> None:
    _token.set(token)
    _request_id.set(request_id)
    _peer_certificate.set(peer_certificate)


def current_peer_certificate() -> bytes:
    """The TLS client certificate (PEM) the transport verified; UNAUTHENTICATED without one."""
    certificate = _peer_certificate.get()
    if certificate is None:
        raise Unauthenticated(
            "this method needs the worker's client certificate: call it on the worker port (mTLS)",
            reason="client_certificate_required",
        )
    return certificate


def optional_peer_certificate() -> bytes | None:
    """The verified TLS client certificate (PEM), or None when the call came without one."""
    return _peer_certificate.get()


def current_token() -> str:
    """The bearer token of this call; UNAUTHENTICATED if the method took none."""
    token = _token.get()
    if token is None:
        raise Unauthenticated("this method needs a bearer token", reason="missing_token")
    return token


def current_request_id() -> str:
    return _request_id.get()
