"""The one exception hierarchy of RAP.

Every error a caller may see is a :class:`RapError`. Each class knows the
gRPC status it maps to (by name, so that domain code never imports grpc),
the HTTP status and the WebSocket close code it maps to where it crosses
those, and carries a stable ``reason`` code for programs and a ``message``
for people. Messages must never contain a secret value: they name fields,
key paths and ids only.

    RapError
    ├── InvalidArgument        INVALID_ARGUMENT     400  4400
    ├── Unauthenticated        UNAUTHENTICATED      401  4401
    ├── PermissionDenied       PERMISSION_DENIED    403  4403
    ├── NotFound               NOT_FOUND            404  4404
    ├── AlreadyExists          ALREADY_EXISTS       409  4409
    ├── FailedPrecondition     FAILED_PRECONDITION  412  4412
    ├── Unavailable            UNAVAILABLE          503  4503
    ├── NotImplementedYet      UNIMPLEMENTED        501  4501
    ├── DataLoss               DATA_LOSS            500  4500
    └── InternalError          INTERNAL             500  4500

Servicers do not catch these: one interceptor translates them. Anything
else raised becomes INTERNAL with a request id, and its traceback stays in
the server log.
"""

from __future__ import annotations

from typing import ClassVar


class ConfigError(Exception):
    """Start-up configuration is missing or wrong; the message names the
    variable, never its value. Not a RapError: no caller ever sees it, the
    process refuses to start."""


class RapError(Exception):
    """Base of every error RAP reports to a caller.

    ``reason`` is a short snake_case code that programs may match on;
    ``message`` is for people and says what to do about it.
    """

    grpc_status: ClassVar[str] = "UNKNOWN"
    http_status: ClassVar[int] = 500
    ws_close_code: ClassVar[int] = 4500
    default_reason: ClassVar[str] = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class InvalidArgument(RapError):
    """The request is malformed; the message names the field and the rule."""

    grpc_status = "INVALID_ARGUMENT"
    http_status = 400
    ws_close_code = 4400
    default_reason = "invalid_argument"


class Unauthenticated(RapError):
    """No valid credentials were presented."""

    grpc_status = "UNAUTHENTICATED"
    http_status = 401
    ws_close_code = 4401
    default_reason = "unauthenticated"


class PermissionDenied(RapError):
    """The caller is known but may not do this."""

    grpc_status = "PERMISSION_DENIED"
    http_status = 403
    ws_close_code = 4403
    default_reason = "permission_denied"


class NotFound(RapError):
    """No such object in the caller's organization (another organization's
    objects are reported this way too, so that ids cannot be probed)."""

    grpc_status = "NOT_FOUND"
    http_status = 404
    ws_close_code = 4404
    default_reason = "not_found"


class AlreadyExists(RapError):
    """An object with that unique name or id exists already."""

    grpc_status = "ALREADY_EXISTS"
    http_status = 409
    ws_close_code = 4409
    default_reason = "already_exists"


class FailedPrecondition(RapError):
    """The request is well formed but the system is not in a state to do it."""

    grpc_status = "FAILED_PRECONDITION"
    http_status = 412
    ws_close_code = 4412
    default_reason = "failed_precondition"


class Unavailable(RapError):
    """A dependency is down; the call may succeed if retried later."""

    grpc_status = "UNAVAILABLE"
    http_status = 503
    ws_close_code = 4503
    default_reason = "unavailable"


class NotImplementedYet(RapError):
    """Part of the contract that this version does not implement yet."""

    grpc_status = "UNIMPLEMENTED"
    http_status = 501
    ws_close_code = 4501
    default_reason = "not_implemented"


class DataLoss(RapError):
    """Stored data failed its integrity check (a tampered or misplaced ciphertext).

    Never answered with garbage: the data is refused. Operators should
    treat it as an incident; the message names the row, never a value.
    """

    grpc_status = "DATA_LOSS"
    http_status = 500
    ws_close_code = 4500
    default_reason = "integrity_check_failed"


class InternalError(RapError):
    """A fault of ours. The message given to callers carries a request id only."""

    grpc_status = "INTERNAL"
    http_status = 500
    ws_close_code = 4500
    default_reason = "internal"
