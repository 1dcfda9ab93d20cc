"""The per-call context the interceptor establishes for servicers.

The interceptor sets it in the task that runs the handler, so servicers
read it with :func:`current_call` and never parse metadata themselves.
"""

from __future__ import annotations

import contextvars

from rap_common.errors import Unauthenticated
from rap_control.principal import CallContext

_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("rap_call", default=None)
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("rap_request_id", default="")


def set_call(call: CallContext | None, request_id: str) -> None:
    _call.set(call)
    _request_id.set(request_id)


def current_call() -> CallContext:
    """The authenticated call; UNAUTHENTICATED if the method was not authenticated."""
    call = _call.get()
    if call is None:
        raise Unauthenticated("this method needs a bearer token", reason="missing_token")
    return call


def current_request_id() -> str:
    return _request_id.get()
