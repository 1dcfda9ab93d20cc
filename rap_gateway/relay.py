"""The gateway: an aiohttp WSS edge for clients that cannot reach a worker directly.

For each client connection it verifies the data-plane token (RS256, the
control plane's published keys, fetched with the gateway's own identity
(WorkerService.GetDataPlaneKeys) and again on an unknown kid) and its audience, issuer and times; then it opens a WSS
connection to the worker named by the token (the signed ``wurl`` claim),
with the gateway's own platform-CA client certificate, verifying the
worker's certificate against the platform CA, and forwards the same token.
The worker makes every other check (attachment, user, channels, jti);
frames and the worker's close code and reason are relayed unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from rap_common import frames
from rap_common.admission import SourceLimiter
from rap_common.edge import ConnectionGuard, GuardedSite, quiet_loop_errors, raise_file_limit
from rap_common.errors import Unauthenticated
from rap_common.tokens import DATA_PLANE_AUDIENCE, ISSUER, TokenRejected, verify

log = logging.getLogger(__name__)

PATH = "/v1/connect"
REFRESH_MIN_INTERVAL = 1.0
# Codes a peer may never send in a close frame (RFC 6455, 7.4.1): they say the
# connection died. The client is told 1011 and why instead.
_RESERVED_CODES = frozenset({1005, 1006, 1015})
CLOSE_WORKER_LOST = 1011

FetchJwks = Callable[[], Awaitable[dict[str, dict[str, str]]]]


def _bearer(request: web.Request) -> tuple[str | None, str | None]:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip(), None
    for protocol in (p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")):
        if protocol.startswith(frames.TOKEN_SUBPROTOCOL_PREFIX):
            return protocol[len(frames.TOKEN_SUBPROTOCOL_PREFIX) :], protocol
    return None, None


@dataclass
class Gateway:
    fetch_jwks: FetchJwks
    upstream_tls: ssl.SSLContext  # the gateway's platform certificate, trusting the platform CA
    jwks: dict[str, dict[str, str]] = field(default_factory=dict)
    limiter: SourceLimiter = field(default_factory=SourceLimiter)
    guard: ConnectionGuard = field(default_factory=ConnectionGuard)
    _fetched_at: float = 0.0
    _runner: web.AppRunner | None = None
    _http: aiohttp.ClientSession | None = None
    port: int = 0

    async def start(self, host: str, port: int, tls: ssl.SSLContext) -> int:
        quiet_loop_errors(asyncio.get_running_loop())
        log.info("open-file limit %d", raise_file_limit())
        self.jwks = await self.fetch_jwks()
        self._fetched_at = time.monotonic()
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get(PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = GuardedSite(self._runner, host, port, tls, self.guard)
        await site.start()
        self.port = site.port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _claims(self, token: str) -> dict[str, Any]:
        try:
            return verify(token, self.jwks, audience=DATA_PLANE_AUDIENCE, issuer=ISSUER)
        except TokenRejected as exc:
            # A key published after our last fetch: fetch again (not more often than every few seconds).
            if exc.reason != "unknown_kid" or time.monotonic() - self._fetched_at < REFRESH_MIN_INTERVAL:
                raise
            self.jwks = await self.fetch_jwks()
            self._fetched_at = time.monotonic()
            return verify(token, self.jwks, audience=DATA_PLANE_AUDIENCE, issuer=ISSUER)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self.limiter.allow(request.remote or "-"):
            log.warning("rate-limiting connections from %s", request.remote)
            return web.Response(status=429, text="too many connections; slow down\n")
        token, token_protocol = _bearer(request)
        protocols = (frames.SUBPROTOCOL, token_protocol) if token_protocol else (frames.SUBPROTOCOL,)
        client = web.WebSocketResponse(protocols=protocols, max_msg_size=frames.MAX_FRAME, heartbeat=30)
        await client.prepare(request)
        try:
            if not token:
                raise Unauthenticated("send the data-plane token", reason="missing_token")
            claims = await self._claims(token)
            url = claims.get("wurl")
            if not isinstance(url, str) or not url.startswith("wss://"):
                raise Unauthenticated("the token names no worker endpoint", reason="no_worker_url")
        except (TokenRejected, Unauthenticated) as refused:
            log.warning("gateway refused a connection: %s", refused.reason)
            await client.close(code=refused.ws_close_code, message=refused.reason.encode())
            return client
        assert self._http is not None
        try:
            upstream = await self._http.ws_connect(
                url,
                headers={"Authorization": f"Bearer {token}"},
                protocols=(frames.SUBPROTOCOL,),
                ssl=self.upstream_tls,
                max_msg_size=frames.MAX_FRAME,
            )
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("gateway could not reach the worker: %s", type(exc).__name__)
            await client.close(code=4503, message=b"worker_unreachable")
            return client
        self.guard.bound(request.transport)
        await self._relay(client, upstream)
        return client

    async def _relay(self, client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
        """Relay frames both ways until one side closes, then close the other side with a
        full closing handshake, so that the client gets the worker's code and reason.

        The client's side is closed only once nothing else reads from it: aiohttp
        closes a WebSocket that another task is reading from without waiting for
        the peer's reply, and the client then records 1006 (its reply fails).
        """

        async def down() -> tuple[int, str] | None:
            """Worker to client; the worker's close code and reason, or None when the client went."""
            while True:
                message = await upstream.receive()
                if message.type == WSMsgType.BINARY:
                    try:
                        await client.send_bytes(message.data)
                    except (ConnectionError, RuntimeError):
                        return None
                elif message.type == WSMsgType.CLOSE:
                    code, reason = int(message.data), str(message.extra or "")
                    break
                elif message.type in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                    code, reason = upstream.close_code or CLOSE_WORKER_LOST, ""
                    break
            if code in _RESERVED_CODES:
                code, reason = CLOSE_WORKER_LOST, "worker_connection_lost"
            return code, reason

        async def up() -> None:
            """Client to worker, until the client closes."""
            async for message in client:
                if message.type == WSMsgType.BINARY:
                    try:
                        await upstream.send_bytes(message.data)
                    except (ConnectionError, RuntimeError):
                        break

        downstream, upstream_task = asyncio.create_task(down()), asyncio.create_task(up())
        await asyncio.wait({downstream, upstream_task}, return_when=asyncio.FIRST_COMPLETED)
        worker_closed = downstream.result() if downstream.done() and not downstream.exception() else None
        # Stop reading from the client before closing it (see above).
        for task in (upstream_task, downstream):
            task.cancel()
        await asyncio.gather(upstream_task, downstream, return_exceptions=True)
        if not upstream.closed:
            await upstream.close()
        if not client.closed:
            code, reason = worker_closed or (CLOSE_WORKER_LOST, "relay_ended")
            await client.close(code=code, message=reason.encode()[:120])
