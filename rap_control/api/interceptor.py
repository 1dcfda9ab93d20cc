"""The one server interceptor: request ids, bearer authentication, error mapping.

For every call it

* takes the caller's ``x-request-id`` if it is well formed, or makes one,
  and returns it in the trailing metadata;
* takes ``authorization: Bearer <api token>`` for user-facing services
  (health, reflection and the worker-facing services are exempt: the
  latter authenticate by client certificate) and keeps it for the call;
  the token is checked inside the RPC's own unit of work (api/calls.py);
* turns a request whose protobuf cannot be parsed (bad bytes, a Struct
  nested past the parser's depth limit) into INVALID_ARGUMENT, where grpc
  would answer UNKNOWN with the exception's class and no request id;
* maps a :class:`RapError` to its status, with its ``reason`` in the
  trailing metadata as ``rap-reason``; any other exception becomes INTERNAL
  with the request id, and the server log gets its type and traceback
  frames, never its message (which may quote values).
"""

from __future__ import annotations

import inspect
import logging
import re
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from rap_common.errors import InvalidArgument, RapError, Unauthenticated
from rap_control.api.context import set_call

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")
REQUEST_ID_HEADER = "x-request-id"
REASON_HEADER = "rap-reason"

# Services that do not take bearer tokens: probes, and the worker-facing
# services (mTLS client certificates; they answer UNIMPLEMENTED until built).
UNAUTHENTICATED_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
        "rap.v1.WorkerService",
        "rap.v1.SecretResolver",
    }
)


def _service_of(method: str) -> str:
    return method.lstrip("/").split("/", 1)[0]


def _bearer(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    values = [v for k, v in (metadata or ()) if k == "authorization"]
    if not values:
        raise Unauthenticated(
            "missing credentials: send 'authorization: Bearer <api token>'", reason="missing_token"
        )
    if len(values) > 1:
        raise Unauthenticated("send one authorization header, not several", reason="malformed_token")
    value = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(
            "the authorization header must be 'Bearer <api token>'", reason="malformed_token"
        )
    return token.strip()


class _Unparseable:
    """Stands for a request message that could not be parsed."""


_UNPARSEABLE = _Unparseable()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` that returns a marker instead of raising, so that the call's
    own error path (with its request id) answers, not grpc's UNKNOWN."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, RecursionError: the bytes are the caller's fault
            return _UNPARSEABLE

    return deserialize


def _parse_error() -> InvalidArgument:
    return InvalidArgument(
        "the request message could not be parsed: it is malformed, or nested deeper than 100 levels",
        reason="malformed_request",
    )


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if request is _UNPARSEABLE:
            raise _parse_error()
        yield request


if TYPE_CHECKING:  # the stubs' generics do not exist at run time
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
    Behavior = Callable[[Any, Context], Any]


class RapServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every handler; see the module docstring."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        if handler is None:
            return None
        call = _Call(details)
        if handler.unary_unary or handler.stream_unary:
            unary: Behavior = handler.unary_unary or handler.stream_unary  # type: ignore[assignment]
            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
            behavior: Any = call.wrap_unary(unary)
        else:
            streaming: Behavior = handler.unary_stream or handler.stream_stream  # type: ignore[assignment]
            factory = (
                grpc.unary_stream_rpc_method_handler
                if handler.unary_stream
                else grpc.stream_stream_rpc_method_handler
            )
            behavior = call.wrap_stream(streaming)
        return factory(
            behavior,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


class _Call:
    """One call's request id, authentication and error mapping."""

    def __init__(self, details: grpc.HandlerCallDetails) -> None:
        self.method: str = details.method
        self._metadata = tuple(details.invocation_metadata or ())
        incoming = next((v for k, v in self._metadata if k == REQUEST_ID_HEADER), "")
        self.request_id = (
            incoming if isinstance(incoming, str) and _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        )
        self._needs_auth = _service_of(self.method) not in UNAUTHENTICATED_SERVICES

    async def begin(self, context: Context) -> None:
        context.set_trailing_metadata(((REQUEST_ID_HEADER, self.request_id),))
        # On the worker port the transport has verified the client certificate
        # against the platform CA; the servicer decides what it may do.
        peer = context.auth_context().get("x509_pem_cert") if not self._needs_auth else None
        set_call(
            _bearer(self._metadata) if self._needs_auth else None,
            self.request_id,
            next(iter(peer), None) if peer else None,
        )

    async def fail(self, context: Context, exc: Exception) -> NoReturn:
        rid = self.request_id
        if isinstance(exc, RapError):
            await context.abort(
                grpc.StatusCode[exc.grpc_status],
                exc.message,
                trailing_metadata=((REQUEST_ID_HEADER, rid), (REASON_HEADER, exc.reason)),
            )
        # The type and where it was raised, not the message: a driver error's text
        # can quote values (PostgreSQL echoes a bad literal), and logs keep no values.
        where = "".join(traceback.format_tb(exc.__traceback__))
        log.error("unexpected %s in %s (request id %s)\n%s", type(exc).__name__, self.method, rid, where)
        await context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error; quote request id {rid} to the operator",
            trailing_metadata=((REQUEST_ID_HEADER, rid), (REASON_HEADER, "internal")),
        )
        raise AssertionError("unreachable: abort raises")

    def wrap_unary(self, inner: Behavior) -> Callable[[Any, Context], Awaitable[Any]]:
        async def behavior(request: Any, context: Context) -> Any:
            try:
                await self.begin(context)
                if request is _UNPARSEABLE:
                    raise _parse_error()
                if hasattr(request, "__aiter__"):
                    request = _checked(request)
                return await inner(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self.fail(context, exc)

        return behavior

    def wrap_stream(self, inner: Behavior) -> Callable[[Any, Context], AsyncIterator[Any]]:
        async def behavior(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                await self.begin(context)
                if request is _UNPARSEABLE:
                    raise _parse_error()
                if hasattr(request, "__aiter__"):
                    request = _checked(request)
                result = inner(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:
                    await result  # a handler that writes with context.write(), or raises
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self.fail(context, exc)

        return behavior
