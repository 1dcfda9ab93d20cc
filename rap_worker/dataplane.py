"""The worker's direct data plane: an aiohttp WSS server on the worker's platform certificate.

A client binds with the data-plane token of its attachment, sent in the
``Authorization`` header or as the WebSocket subprotocol
``rap.bearer.<token>`` (never in the URL). The worker verifies it with the
published public keys only (RS256), then checks it against what the
control plane told it: this worker, a live session of it, the session's
organization and resource, the attachment (waiting a short, bounded time
for an AttachmentUpdate that has not arrived yet), its user, the channels,
and that the token was not used before. A refused bind is closed with the
close code of its error class and the reason code, and reported to the
control plane (audited as data_plane_bind_rejected).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from rap.v1 import dataplane_pb2
from rap_common import frames
from rap_common.admission import RefusalCounter, Report, SourceLimiter
from rap_common.edge import ConnectionGuard, GuardedSite, quiet_loop_errors, raise_file_limit
from rap_common.errors import FailedPrecondition, NotFound, PermissionDenied, RapError, Unauthenticated
from rap_common.identity import ROLE_GATEWAY, identity_of_peercert
from rap_common.tokens import DATA_PLANE_AUDIENCE, ISSUER, TokenRejected, verify

log = logging.getLogger(__name__)

ATTACHMENT_WAIT = 2.0
# How long stop() waits for bound connections to finish their closing handshakes.
CLOSE_WAIT = 5.0
MAX_ATTACHMENTS = 10_000
PATH = "/v1/connect"


@dataclass
class AttachmentInfo:
    attachment_id: str
    session_id: str
    user_id: str
    state: str  # active | detached | superseded
    channels: list[str]


@dataclass
class SessionView:
    """What the data plane needs to know of a running session."""

    session_id: str
    organization_id: str
    resource_id: str
    channels: list[str]
    connection: Any
    metadata: dict[str, Any] = field(default_factory=dict)


class Host(Protocol):
    """The agent, as the data plane sees it."""

    worker_id: str
    jwks: dict[str, dict[str, str]]

    def live_session(self, session_id: str) -> SessionView | None: ...

    def ended_state(self, session_id: str) -> str | None: ...

    async def refresh_jwks(self) -> bool:
        """Fetch the published keys again (rate-limited); True when they were fetched."""
        ...

    async def fetch_attachment(self, attachment_id: str) -> AttachmentInfo | None:
        """Ask the control plane for an attachment of this worker's; None if it has none."""
        ...

    def report_bind_rejected(self, report: Report) -> None: ...


class BindRefused(Exception):
    def __init__(self, error: RapError) -> None:
        super().__init__(error.reason)
        self.error = error


@dataclass
class Bound:
    session: SessionView
    attachment: AttachmentInfo
    claims: dict[str, Any]
    socket: web.WebSocketResponse
    # Objects the channels of one connection share (the terminal's PTY).
    shared: dict[str, Any] = field(default_factory=dict)
    # A close the worker decided on (takeover, detach, session end, stop): the
    # connection's own task performs it once it has stopped reading.
    close_with: tuple[int, str] | None = None
    close_requested: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def request_close(self, code: int, reason: str) -> None:
        if self.close_with is None:
            self.close_with = (code, reason)
        self.close_requested.set()


def _relay_role(request: web.Request) -> str | None:
    """The role of the client certificate, if one was presented (the transport verified
    it against the platform CA); "" for a certificate that names no platform identity."""
    transport = request.transport
    peercert = transport.get_extra_info("peercert") if transport is not None else None
    if not peercert:
        return None
    named = identity_of_peercert(peercert)
    return named[0] if named is not None else ""


def _bearer(request: web.Request) -> tuple[str | None, str | None]:
    """(token, the token subprotocol it came in, if any)."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip(), None
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    for protocol in offered:
        if protocol.startswith(frames.TOKEN_SUBPROTOCOL_PREFIX):
            return protocol[len(frames.TOKEN_SUBPROTOCOL_PREFIX) :], protocol
    return None, None


@dataclass
class DataPlane:
    host: Host
    # What the control plane said of attachments, by id; bounded, pruned as sessions end.
    attachments: OrderedDict[str, AttachmentInfo] = field(default_factory=OrderedDict)
    # jti -> exp, for replay refusal; bounded (tokens are short-lived).
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _bound: dict[str, Bound] = field(default_factory=dict)
    _attachment_arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    channel_factories: dict[str, Callable[[Bound], ChannelHandler]] = field(default_factory=dict)
    limiter: SourceLimiter = field(default_factory=SourceLimiter)
    refusals: RefusalCounter = field(default_factory=RefusalCounter)
    guard: ConnectionGuard = field(default_factory=ConnectionGuard)
    _runner: web.AppRunner | None = None
    _flusher: asyncio.Task[None] | None = None
    port: int = 0

    async def start(self, host: str, port: int, tls: ssl.SSLContext) -> int:
        quiet_loop_errors(asyncio.get_running_loop())
        log.info("open-file limit %d", raise_file_limit())
        app = web.Application()
        app.router.add_get(PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = GuardedSite(self._runner, host, port, tls, self.guard)
        await site.start()
        self.port = site.port
        self._flusher = asyncio.create_task(self._flush_refusals())
        return self.port

    async def _flush_refusals(self) -> None:
        """Report the counts of anonymous refusals, once per interval."""
        while True:
            await asyncio.sleep(max(0.5, self.refusals.interval / 4))
            for report in self.refusals.flush():
                self.host.report_bind_rejected(report)

    async def stop(self, reason: str = "worker_stopping") -> None:
        """Close every bound connection (4412 with ``reason``) and stop serving."""
        bound = list(self._bound.values())
        for each in bound:
            each.request_close(frames.CLOSE_SESSION_ENDED, reason)
        if bound:
            await asyncio.wait([asyncio.ensure_future(b.finished.wait()) for b in bound], timeout=CLOSE_WAIT)
        if self._flusher is not None:
            self._flusher.cancel()
            for report in self.refusals.flush(force=True):
                self.host.report_bind_rejected(report)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what the control plane says --------------------------------------

    def bound_attachment_ids(self) -> list[str]:
        return list(self._bound)

    def _know(self, info: AttachmentInfo) -> None:
        self.attachments[info.attachment_id] = info
        self.attachments.move_to_end(info.attachment_id)
        while len(self.attachments) > MAX_ATTACHMENTS:
            self.attachments.popitem(last=False)

    async def attachment_update(self, info: AttachmentInfo) -> None:
        self._know(info)
        async with self._attachment_arrived:
            self._attachment_arrived.notify_all()
        bound = self._bound.get(info.attachment_id)
        if bound is not None and info.state != "active":
            code = frames.CLOSE_SUPERSEDED if info.state == "superseded" else frames.CLOSE_DETACHED
            bound.request_close(code, info.state)

    async def session_ended(self, session_id: str) -> None:
        for bound in [b for b in self._bound.values() if b.session.session_id == session_id]:
            bound.request_close(frames.CLOSE_SESSION_ENDED, "session_ended")
        # The session's attachments can never bind again: the session check refuses first.
        for attachment_id in [a for a, info in self.attachments.items() if info.session_id == session_id]:
            del self.attachments[attachment_id]

    # -- binding ----------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        source = request.remote or "-"
        relay = _relay_role(request)
        # A gateway relays many clients from one address and limits them itself.
        if relay != ROLE_GATEWAY and not self.limiter.allow(source):
            report = self.refusals.anonymous("rate_limited", source)
            if report is not None:
                log.warning("rate-limiting data-plane connections from %s", source)
                self.host.report_bind_rejected(report)
            return web.Response(status=429, text="too many connections; slow down\n")
        token, token_protocol = _bearer(request)
        protocols = (frames.SUBPROTOCOL, token_protocol) if token_protocol else (frames.SUBPROTOCOL,)
        socket = web.WebSocketResponse(protocols=protocols, max_msg_size=frames.MAX_FRAME, heartbeat=30)
        await socket.prepare(request)
        claims: dict[str, Any] = {}
        try:
            if relay is not None and relay != ROLE_GATEWAY:
                raise BindRefused(
                    PermissionDenied(
                        "only a gateway identity may relay to a worker", reason="relay_not_gateway"
                    )
                )
            claims = await self._verify(token)
            bound = await self._bind(claims, socket)
        except BindRefused as refused:
            error = refused.error
            self._report_refusal(error.reason, source, claims)
            await socket.close(code=error.ws_close_code, message=error.reason.encode())
            return socket
        self._bound[bound.attachment.attachment_id] = bound
        self.guard.bound(request.transport)
        log.info(
            "bound attachment %s of session %s", bound.attachment.attachment_id, bound.session.session_id
        )
        try:
            await self._serve(bound)
        finally:
            if self._bound.get(bound.attachment.attachment_id) is bound:
                del self._bound[bound.attachment.attachment_id]
        return socket

    def _report_refusal(self, reason: str, source: str, claims: dict[str, Any]) -> None:
        """Report a refusal to the control plane (audited), without letting anyone who can
        reach this endpoint grow the audit log at line rate (see rap_common.admission)."""
        if claims:
            exp = claims.get("exp", 0)
            report = self.refusals.named(
                reason,
                source,
                session_id=str(claims.get("sid", ""))[:64],
                attachment_id=str(claims.get("att", ""))[:64],
                jti=str(claims.get("jti", ""))[:64],
                user_id=str(claims.get("sub", ""))[:64],
                expires=float(exp) if isinstance(exp, int | float) else 0.0,
            )
        else:
            report = self.refusals.anonymous(reason, source)
        if report is not None:
            log.warning("refused a data-plane bind: %s", reason)
            self.host.report_bind_rejected(report)

    async def _verify(self, token: str | None) -> dict[str, Any]:
        if not token:
            raise BindRefused(Unauthenticated("send the data-plane token", reason="missing_token"))
        try:
            return verify(token, self.host.jwks, audience=DATA_PLANE_AUDIENCE, issuer=ISSUER)
        except TokenRejected as exc:
            # A key published after our Welcome and updates (or a Welcome that raced the
            # keys' creation): fetch the keys again, rate-limited, and try once more.
            if exc.reason != "unknown_kid" or not await self.host.refresh_jwks():
                raise BindRefused(exc) from None
        try:
            return verify(token, self.host.jwks, audience=DATA_PLANE_AUDIENCE, issuer=ISSUER)
        except TokenRejected as exc:
            raise BindRefused(exc) from None

    async def _bind(self, claims: Mapping[str, Any], socket: web.WebSocketResponse) -> Bound:
        def deny(reason: str, kind: type[RapError] = PermissionDenied) -> BindRefused:
            return BindRefused(kind(f"bind refused: {reason}", reason=reason))

        if claims.get("wrk") != self.host.worker_id:
            raise deny("wrong_worker")
        session_id = str(claims.get("sid", ""))
        session = self.host.live_session(session_id)
        if session is None:
            ended = self.host.ended_state(session_id)
            if ended is not None:
                raise deny(f"session_{ended}", FailedPrecondition)
            raise deny("unknown_session", NotFound)
        if claims.get("org") != session.organization_id:
            raise deny("wrong_organization")
        if claims.get("res") != session.resource_id:
            raise deny("wrong_resource")
        wanted = claims.get("ch")
        if not isinstance(wanted, list) or not set(wanted) <= set(session.channels):
            raise deny("channels_beyond_policy")
        attachment = await self._attachment(str(claims.get("att", "")))
        if attachment is None:
            raise deny("unknown_attachment")
        if attachment.session_id != session_id:
            raise deny("wrong_attachment")
        if attachment.state != "active":
            raise deny("old_attachment")
        if claims.get("sub") != attachment.user_id:
            raise deny("wrong_user")
        if not set(wanted) <= set(attachment.channels):
            raise deny("channels_beyond_policy")
        self._remember(str(claims.get("jti", "")), float(claims.get("exp", 0)))
        return Bound(session, attachment, dict(claims), socket)

    async def _attachment(self, attachment_id: str) -> AttachmentInfo | None:
        """The attachment: known from a notice, else read from the control plane (its
        notice is late or was lost), else the notice waited for a short while."""
        known = self.attachments.get(attachment_id)
        if known is not None:
            return known
        fetched = await self.host.fetch_attachment(attachment_id)
        if fetched is not None:
            self._know(fetched)
            return self.attachments[attachment_id]
        deadline = time.monotonic() + ATTACHMENT_WAIT
        async with self._attachment_arrived:
            while attachment_id not in self.attachments:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    await asyncio.wait_for(self._attachment_arrived.wait(), left)
                except TimeoutError:
                    return None
        return self.attachments[attachment_id]

    def _remember(self, jti: str, exp: float) -> None:
        now = time.time()
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)
        if not jti or jti in self._seen:
            raise BindRefused(PermissionDenied("this token was used already", reason="replayed_jti"))
        self._seen[jti] = exp

    # -- a bound connection ----------------------------------------------

    async def _serve(self, bound: Bound) -> None:
        """Read frames and hand each to its channel, until the client closes or the
        worker asks for a close; then close with a full closing handshake.

        The close is made here, once the reading has stopped: aiohttp closes a
        WebSocket that another task reads from without waiting for the client's
        reply, and the client would then record 1006 instead of the code.
        """
        allowed = set(bound.claims.get("ch", []))
        opened: dict[str, ChannelHandler] = {}
        reader: asyncio.Task[None] | None = None
        closer = asyncio.create_task(bound.close_requested.wait())
        try:
            for name in sorted(allowed):
                factory = self.channel_factories.get(name)
                if factory is not None:
                    opened[name] = factory(bound)
            for channel in {id(c): c for c in opened.values()}.values():
                await channel.start()
            reader = asyncio.create_task(self._read(bound, opened))
            await asyncio.wait({reader, closer}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
        finally:
            for task in (reader, closer):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in (reader, closer) if t is not None), return_exceptions=True)
            for channel in {id(c): c for c in opened.values()}.values():
                await channel.close()
            if not bound.socket.closed:
                code, reason = bound.close_with or (1000, "")
                await bound.socket.close(code=code, message=reason.encode()[:120])
            bound.finished.set()

    async def _read(self, bound: Bound, opened: dict[str, ChannelHandler]) -> None:
        async for message in bound.socket:
            if message.type != WSMsgType.BINARY:
                if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
                continue
            try:
                frame = frames.decode(message.data)
            except RapError as exc:
                await bound.socket.send_bytes(frames.control(dataplane_pb2.CONTROL_KIND_ERROR, exc.reason))
                continue
            reply = ping_reply(frame)
            if reply is not None:
                await bound.socket.send_bytes(reply)
                continue
            kind = frame.WhichOneof("body") or ""
            target = opened.get(CHANNEL_OF.get(kind, ""))
            if target is None:
                await bound.socket.send_bytes(
                    frames.control(dataplane_pb2.CONTROL_KIND_ERROR, "channel_not_allowed", kind)
                )
                continue
            await target.on_frame(frame)


class ChannelHandler(Protocol):
    async def start(self) -> None: ...

    async def on_frame(self, frame: dataplane_pb2.DataPlaneFrame) -> None: ...

    async def close(self) -> None: ...


CHANNEL_OF = {
    "terminal_data": "terminal",
    "terminal_resize": "terminal",
    "clipboard_text": "clipboard",
    "file_upload_begin": "file_upload",
    "file_upload_chunk": "file_upload",
    "file_upload_end": "file_upload",
}


def ping_reply(frame: dataplane_pb2.DataPlaneFrame) -> bytes | None:
    if frame.HasField("control") and frame.control.kind == dataplane_pb2.CONTROL_KIND_PING:
        return frames.control(dataplane_pb2.CONTROL_KIND_PONG)
    return None
