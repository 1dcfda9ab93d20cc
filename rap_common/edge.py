"""A TLS listener that survives floods of idle and invalid connections.

The worker's direct endpoint and the gateway accept connections from
anyone who can reach them. A connection that completes TLS and then does
nothing used to be kept forever: about a thousand of them exhausted the
usual open-file limit and every later bind hung. Here each connection is
*unbound* until the handler says it has bound (a verified token, a
WebSocket in use), and unbound connections are bounded three ways:

* a deadline: the TLS handshake within ``handshake_timeout`` and the bind
  within ``bind_deadline`` of the handshake, or the connection is dropped;
* a cap per source address (a new connection over it is dropped at once);
* a global cap (the oldest unbound connection is dropped to admit a new
  one, so that many sources cannot lock everybody out).

Bound connections are not counted. :func:`raise_file_limit` lifts the soft
open-file limit to the hard one at start, and :func:`quiet_loop_errors`
makes the event loop log one rate-limited line per error instead of a
traceback per failed accept or handshake.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

log = logging.getLogger("rap.edge")


@dataclass
class EdgeLimits:
    handshake_timeout: float = 10.0
    bind_deadline: float = 10.0
    max_unbound: int = 512
    max_unbound_per_source: int = 64


@dataclass(eq=False)
class _Connection:
    source: str
    transport: asyncio.BaseTransport
    timer: asyncio.TimerHandle | None = None


@dataclass
class ConnectionGuard:
    """Tracks unbound connections and enforces :class:`EdgeLimits` on them."""

    limits: EdgeLimits = field(default_factory=EdgeLimits)
    dropped: int = 0
    _unbound: OrderedDict[int, _Connection] = field(default_factory=OrderedDict)
    _per_source: dict[str, int] = field(default_factory=dict)

    @property
    def unbound(self) -> int:
        return len(self._unbound)

    def opened(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else "-"
        if self._per_source.get(source, 0) >= self.limits.max_unbound_per_source:
            self._drop(transport, "too many unbound connections from one source")
            return
        while len(self._unbound) >= self.limits.max_unbound:
            _, oldest = self._unbound.popitem(last=False)
            self._forget(oldest)
            self._drop(oldest.transport, "the unbound connection cap was reached")
        connection = _Connection(source, transport)
        connection.timer = asyncio.get_running_loop().call_later(
            self.limits.bind_deadline, self._expired, transport
        )
        self._unbound[id(transport)] = connection
        self._per_source[source] = self._per_source.get(source, 0) + 1

    def bound(self, transport: asyncio.BaseTransport | None) -> None:
        """The connection bound: it is no longer limited as an unbound one."""
        if transport is None:
            return
        connection = self._unbound.pop(id(transport), None)
        if connection is not None:
            self._forget(connection)

    def closed(self, transport: asyncio.BaseTransport) -> None:
        connection = self._unbound.pop(id(transport), None)
        if connection is not None:
            self._forget(connection)

    def _expired(self, transport: asyncio.BaseTransport) -> None:
        connection = self._unbound.pop(id(transport), None)
        if connection is not None:
            self._forget(connection)
            self._drop(transport, "no bind before the deadline")

    def _forget(self, connection: _Connection) -> None:
        if connection.timer is not None:
            connection.timer.cancel()
        left = self._per_source.get(connection.source, 1) - 1
        if left > 0:
            self._per_source[connection.source] = left
        else:
            self._per_source.pop(connection.source, None)

    def _drop(self, transport: asyncio.BaseTransport, why: str) -> None:
        self.dropped += 1
        log.warning("dropped a connection: %s", why)
        transport.abort()  # type: ignore[attr-defined]


class _Guarded(asyncio.Protocol):
    """Hands every event to aiohttp's protocol, telling the guard of opens and closes."""

    def __init__(self, inner: Any, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._inner.connection_made(transport)
        self._guard.opened(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._guard.closed(self._transport)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedSite(web.BaseSite):
    """aiohttp's TCP site, with TLS, a handshake timeout and a :class:`ConnectionGuard`."""

    __slots__ = ("_bound_port", "_guard", "_host", "_port")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, ssl_context: Any, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=1024)
        self._host, self._port, self._guard = host, port, guard
        self._bound_port = port

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._bound_port}"

    @property
    def port(self) -> int:
        return self._bound_port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            lambda: _Guarded(server(), self._guard),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=self._guard.limits.handshake_timeout,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]


def raise_file_limit() -> int:
    """Lift the soft open-file limit to the hard one, where allowed; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("could not raise the open-file limit from %d", soft)
    return soft


def quiet_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log loop errors (a failed accept, a broken handshake) as one line, no traceback."""
    loop_log = logging.getLogger("rap.loop")

    def handler(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        loop_log.warning(
            "%s%s", context.get("message", "event loop error"), f" ({type(exc).__name__})" if exc else ""
        )

    loop.set_exception_handler(handler)
