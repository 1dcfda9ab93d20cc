"""The worker agent: the Connect stream, sessions, certificate renewal.

``Agent.run()`` keeps one Connect stream to one of the control plane's
replicas, reconnecting with jittered exponential backoff (trying the next
replica each time). On every (re)connect it says which sessions it still
runs; the control plane answers with the sessions it should run. For each
Assignment it resolves the credential just in time, holds it in redacted
holders in memory, reaches the target, and drops the credential when the
session ends. It never touches the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import traceback
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from google.protobuf import json_format

from rap.v1 import resolver_pb2, resolver_pb2_grpc, resource_pb2, session_pb2, worker_pb2, worker_pb2_grpc
from rap_common import identity as platform_identity
from rap_common.admission import RefusalCounter, Report
from rap_common.identity import (
    CERT,
    KEY,
    ROLE_WORKER,
    PlatformIdentity,
    StateDir,
    platform_channel,
    seconds_until_renewal,
)
from rap_common.secrets import SecretBytes
from rap_worker import __version__
from rap_worker.adapters import AdapterError, Connection, ssh, tcp
from rap_worker.channels.terminal import Terminal
from rap_worker.channels.upload import FileUpload
from rap_worker.credentials import Credential, from_development_metadata, from_resolved
from rap_worker.dataplane import PATH as DATAPLANE_PATH
from rap_worker.dataplane import AttachmentInfo, DataPlane, SessionView

log = logging.getLogger(__name__)
# Jitter from a generator of our own: the global one is shared with the rest of the process.
_JITTER = random.Random()  # noqa: S311 - jitter, not secrecy

# grpc.aio.EOF ends a stream read; the stubs do not declare it.
_EOF: Any = getattr(grpc.aio, "EOF")  # noqa: B009

PROTOCOLS = {"ssh": resource_pb2.PROTOCOL_SSH, "tcp": resource_pb2.PROTOCOL_TCP}
BACKOFF_BASE, BACKOFF_CAP = 0.2, 10.0
RESOLVE_TIMEOUT = 15.0
# How long a session waits for its credential through a control-plane outage.
RESOLVE_DEADLINE = 60.0
RESOLVE_BACKOFF_CAP = 4.0
ATTACHMENT_TIMEOUT = 5.0
ATTACHMENT_ATTEMPTS = 4
# A token naming a key we do not know makes us fetch the keys again, this often at most.
JWKS_REFRESH_MIN_INTERVAL = 1.0

OnActive = Callable[[str, Connection], Awaitable[None]]


class WorkerRevoked(Exception):
    """The control plane says this worker was revoked: the agent stops."""


@dataclass(frozen=True)
class AgentConfig:
    state_dir: Path
    # The worker-facing (mTLS) addresses of the control plane's replicas.
    targets: list[str]
    protocols: list[str] = field(default_factory=lambda: ["ssh", "tcp"])
    capacity: int = 16
    direct_url: str = ""
    # HOST:PORT for the direct data plane (WSS on the worker's certificate); empty: none.
    direct_listen: str = ""
    # Anonymous bind refusals past the first per source and reason are reported as one
    # count per this many seconds (see rap_common.admission).
    refusal_report_seconds: float = 60.0


@dataclass(eq=False)
class RunningSession:
    assignment: worker_pb2.Assignment
    task: asyncio.Task[None] | None = None
    connection: Connection | None = None
    active: bool = False


def _request(**kwargs: Any) -> worker_pb2.ConnectRequest:
    return worker_pb2.ConnectRequest(**kwargs)


def _state(
    session_id: str, state: session_pb2.SessionState.ValueType, reason: str = ""
) -> worker_pb2.ConnectRequest:
    return _request(
        session_state_update=worker_pb2.SessionStateUpdate(session_id=session_id, state=state, reason=reason)
    )


def _rpc_reason(error: grpc.aio.AioRpcError) -> str:
    metadata: Any = error.trailing_metadata() or ()
    for key, value in metadata:
        if key == "rap-reason":
            return str(value)
    return error.code().name.lower()


class Agent:
    def __init__(self, config: AgentConfig, *, on_active: OnActive | None = None) -> None:
        self.config = config
        self.sessions: dict[str, RunningSession] = {}
        self.worker_id = ""
        self.connected = asyncio.Event()
        self._state = StateDir(config.state_dir)
        self._on_active = on_active
        self._outbox: asyncio.Queue[worker_pb2.ConnectRequest] = asyncio.Queue()
        self._channel: grpc.aio.Channel | None = None
        self._stopping = asyncio.Event()
        self._heartbeat_seconds = 10.0
        # Public keys of the control plane's data-plane tokens (from Welcome and updates).
        self.jwks: dict[str, dict[str, str]] = {}
        # How sessions that ended here ended, for the data plane's refusals; bounded.
        self._ended: OrderedDict[str, str] = OrderedDict()
        # Reports of sessions this worker ended, kept until a Hello that carried them is
        # answered (the control plane applies them in the same unit); bounded.
        self._unreported: OrderedDict[str, worker_pb2.SessionStateUpdate] = OrderedDict()
        self.dataplane = DataPlane(self, refusals=RefusalCounter(interval=config.refusal_report_seconds))
        self.dataplane.channel_factories["terminal"] = Terminal.of
        self.dataplane.channel_factories["clipboard"] = Terminal.of
        self.dataplane.channel_factories["file_upload"] = FileUpload
        self._tls: ssl.SSLContext | None = None
        self._direct_url = config.direct_url
        self._background: set[asyncio.Task[None]] = set()
        self._jwks_fetched_at = 0.0
        self._jwks_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------

    async def run(self) -> None:
        """Stream assignments until :meth:`shutdown` (or revocation, which raises WorkerRevoked)."""
        attempt, index = 0, 0
        stop_reason = "worker_stopping"
        if self.config.direct_listen:
            await self._start_dataplane()
        try:
            while not self._stopping.is_set():
                target = self.config.targets[index % len(self.config.targets)]
                try:
                    if await self._stream(target):
                        attempt = 0
                except WorkerRevoked:
                    # Every bound client is told why its session ended (4412 worker_revoked).
                    stop_reason = "worker_revoked"
                    raise
                except (grpc.aio.AioRpcError, OSError, ConnectionError) as exc:
                    detail = _rpc_reason(exc) if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
                    if detail == "worker_revoked":
                        # The refusal can come as a read error as well as a stream status.
                        stop_reason = "worker_revoked"
                        raise WorkerRevoked("the control plane revoked this worker") from None
                    log.warning("stream to %s ended: %s", target, detail)
                finally:
                    self.connected.clear()
                if self._stopping.is_set():
                    break
                index += 1
                delay = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt) * _JITTER.uniform(0.5, 1.5)
                attempt = min(attempt + 1, 10)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            for session_id in list(self.sessions):
                self._mark_ended(session_id, "failed")
            await self._end_all()
            await self.dataplane.stop(stop_reason)

    async def _start_dataplane(self) -> None:
        host, _, port = self.config.direct_listen.rpartition(":")
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
        # The gateway presents its platform-CA certificate; direct clients present none.
        self._tls.verify_mode = ssl.CERT_OPTIONAL
        self._tls.load_verify_locations(cadata=self._state.load(ROLE_WORKER).ca_pem.decode())
        self._load_certificate()
        bound_port = await self.dataplane.start(host, int(port), self._tls)
        if not self._direct_url:
            self._direct_url = f"wss://{host}:{bound_port}{DATAPLANE_PATH}"
        log.info("direct data plane on %s", self._direct_url)

    def _load_certificate(self) -> None:
        if self._tls is not None:
            self._tls.load_cert_chain(self._state.path / CERT, self._state.path / KEY)

    # -- what the data plane asks -------------------------------------------

    def live_session(self, session_id: str) -> SessionView | None:
        running = self.sessions.get(session_id)
        if running is None or not running.active:
            return None
        a = running.assignment
        return SessionView(
            a.session_id,
            a.organization_id,
            a.resource_id,
            [session_pb2.Channel.Name(c).removeprefix("CHANNEL_").lower() for c in a.channels],
            running.connection,
            # The organization's defaults, overridden setting by setting by the resource's:
            # a resource that sets one clipboard key keeps the organization's others.
            _policy(a),
        )

    def ended_state(self, session_id: str) -> str | None:
        return self._ended.get(session_id)

    async def fetch_attachment(self, attachment_id: str) -> AttachmentInfo | None:
        """The attachment as PostgreSQL has it (GetAttachment), for a bind whose notice has
        not arrived; None when it is not this worker's. While the stream reconnects (a
        replica went away) it waits for it, and tries again on UNAVAILABLE, briefly."""
        for attempt in range(ATTACHMENT_ATTEMPTS):
            if self._channel is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.connected.wait(), ATTACHMENT_TIMEOUT)
            channel = self._channel
            if channel is None:
                return None
            try:
                response = await worker_pb2_grpc.WorkerServiceStub(channel).GetAttachment(
                    worker_pb2.GetAttachmentRequest(attachment_id=attachment_id), timeout=ATTACHMENT_TIMEOUT
                )
            except grpc.aio.AioRpcError as exc:
                log.info("attachment %s not fetched: %s", attachment_id, _rpc_reason(exc))
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == ATTACHMENT_ATTEMPTS - 1:
                    return None
                await asyncio.sleep(0.25 * 2**attempt)
                continue
            return _attachment_info(response.attachment)
        return None

    async def refresh_jwks(self) -> bool:
        """Fetch the published keys again (a token named a key we do not know: a Welcome
        that raced the keys' creation, or a missed update). Rate-limited; True when the
        keys were fetched."""
        async with self._jwks_lock:
            now = asyncio.get_running_loop().time()
            if self._channel is None or now - self._jwks_fetched_at < JWKS_REFRESH_MIN_INTERVAL:
                return False
            self._jwks_fetched_at = now
            try:
                self.jwks = await platform_identity.fetch_data_plane_keys(self._channel)
            except grpc.aio.AioRpcError as exc:
                log.warning("could not fetch the signing keys: %s", _rpc_reason(exc))
                return False
            log.info("fetched the signing keys again (%d published)", len(self.jwks))
            return True

    def report_bind_rejected(self, report: Report) -> None:
        self._send(
            _request(
                bind_rejected=worker_pb2.BindRejected(
                    session_id=report.session_id,
                    attachment_id=report.attachment_id,
                    jti=report.jti,
                    user_id=report.user_id,
                    reason=report.reason,
                    source_address=report.source[:64],
                    count=report.count,
                )
            )
        )

    def _end(self, session_id: str, state: session_pb2.SessionState.ValueType, reason: str) -> None:
        """This worker ended a session: remember it, report it, and keep the report until
        it is known to be recorded (a report sent while the control plane cannot write
        would otherwise be lost, and a re-sync would start the session again)."""
        self._mark_ended(
            session_id, "terminated" if state == session_pb2.SESSION_STATE_TERMINATED else "failed"
        )
        update = worker_pb2.SessionStateUpdate(session_id=session_id, state=state, reason=reason)
        log.info(
            "session %s ended (%s: %s)",
            session_id,
            session_pb2.SessionState.Name(state).removeprefix("SESSION_STATE_").lower(),
            reason,
        )
        self._unreported[session_id] = update
        while len(self._unreported) > 10_000:
            self._unreported.popitem(last=False)
        self._send(_request(session_state_update=update))

    def _mark_ended(self, session_id: str, how: str) -> None:
        # The first notice of how a session ended is the one that counts.
        self._ended.setdefault(session_id, how)
        while len(self._ended) > 10_000:
            self._ended.popitem(last=False)

    def shutdown(self) -> None:
        self._stopping.set()

    # -- the stream ------------------------------------------------------

    async def _stream(self, target: str) -> bool:
        """One Connect stream; True if it got as far as Welcome."""
        # State files are read off the event loop: a slow disk must not stall live sessions.
        identity = await asyncio.to_thread(self._state.load, ROLE_WORKER)
        async with platform_channel(target, identity) as channel:
            self._channel = channel
            call: Any = worker_pb2_grpc.WorkerServiceStub(channel).Connect()  # type: ignore[call-arg]
            stop = asyncio.create_task(self._stopping.wait())
            try:
                carried = list(self._unreported.values())
                await call.write(
                    _request(
                        hello=worker_pb2.Hello(
                            version=__version__,
                            protocols=[PROTOCOLS[p] for p in self.config.protocols],
                            capacity=self.config.capacity,
                            direct_url=self._direct_url,
                            session_ids=list(self.sessions),
                            ended_sessions=carried,
                        )
                    )
                )
                welcome = await call.read()
                if welcome is _EOF or welcome.WhichOneof("message") != "welcome":
                    await self._raise_status(call)
                    return False
                # Welcome: the Hello's unit committed, the ends it carried are recorded.
                for update in carried:
                    if self._unreported.get(update.session_id) is update:
                        del self._unreported[update.session_id]
                self._welcome(welcome.welcome, target)
                tasks = [
                    asyncio.create_task(self._writer(call)),
                    asyncio.create_task(self._heartbeats()),
                    asyncio.create_task(self._renewals(channel)),
                ]
                for session_id, running in self.sessions.items():
                    if running.active:
                        self._send(_state(session_id, session_pb2.SESSION_STATE_ACTIVE))
                try:
                    while True:
                        read = asyncio.create_task(call.read())
                        done, _ = await asyncio.wait(
                            {read, stop, *tasks}, return_when=asyncio.FIRST_COMPLETED
                        )
                        if read not in done:
                            read.cancel()
                            for task in done:
                                if task is not stop and task.exception() is not None:
                                    raise task.exception()  # type: ignore[misc]
                            return True
                        message = read.result()
                        if message is _EOF:
                            await self._raise_status(call)
                            return True
                        self._dispatch(message)
                finally:
                    for task in tasks:
                        task.cancel()
            finally:
                stop.cancel()
                call.cancel()
                self._channel = None

    async def _raise_status(self, call: Any) -> None:
        code = await call.code()
        if code == grpc.StatusCode.OK:
            return
        reason = ""
        for key, value in await call.trailing_metadata() or ():
            if key == "rap-reason":
                reason = str(value)
        if reason == "worker_revoked":
            raise WorkerRevoked("the control plane revoked this worker")
        log.warning("stream closed by the control plane: %s (%s)", code.name, reason or "no reason")

    def _welcome(self, welcome: worker_pb2.Welcome, target: str) -> None:
        self.worker_id = welcome.worker_id
        self._keys(welcome.jwks)
        self._heartbeat_seconds = max(
            0.5, welcome.heartbeat_interval.seconds + welcome.heartbeat_interval.nanos / 1e9
        )
        self.connected.set()
        env = "production" if welcome.environment == worker_pb2.ENVIRONMENT_PRODUCTION else "development"
        log.info("connected to %s as worker %s (%s)", target, self.worker_id, env)

    async def _writer(self, call: Any) -> None:
        while True:
            message = await self._outbox.get()
            await call.write(message)

    async def _heartbeats(self) -> None:
        while True:
            self._send(
                _request(
                    heartbeat=worker_pb2.Heartbeat(
                        session_ids=list(self.sessions),
                        load=len(self.sessions),
                        bound_attachment_ids=self.dataplane.bound_attachment_ids(),
                    )
                )
            )
            await asyncio.sleep(self._heartbeat_seconds)

    def _keys(self, jwks: Any) -> None:
        self.jwks = platform_identity.jwks_from_proto(jwks)

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _send(self, message: worker_pb2.ConnectRequest) -> None:
        self._outbox.put_nowait(message)

    def _dispatch(self, message: worker_pb2.ConnectResponse) -> None:
        kind = message.WhichOneof("message")
        if kind == "assignment":
            self._assigned(message.assignment)
        elif kind == "signing_keys_update":
            self._keys(message.signing_keys_update.jwks)
        elif kind == "attachment_update":
            self._spawn(self.dataplane.attachment_update(_attachment_info(message.attachment_update)))
        elif kind == "terminate":
            terminate = message.terminate
            self._mark_ended(
                terminate.session_id, "terminated" if terminate.reason == "terminated" else "failed"
            )
            self._spawn(self.dataplane.session_ended(terminate.session_id))
            running = self.sessions.get(message.terminate.session_id)
            if running is not None and running.task is not None:
                log.info(
                    "session %s terminated by the control plane (%s)",
                    message.terminate.session_id,
                    message.terminate.reason,
                )
                running.task.cancel()
        else:
            log.debug("ignored a %s message", kind)

    # -- sessions --------------------------------------------------------

    def _assigned(self, assignment: worker_pb2.Assignment) -> None:
        session_id = assignment.session_id
        known = self.sessions.get(session_id)
        if known is not None:
            known.assignment = assignment  # a re-send after a reconnect: a fresh lease token
            return
        if session_id in self._ended:
            # This worker ended it; its report was lost. Never start it again: report again.
            log.warning("session %s was re-sent after it ended here; reporting its end again", session_id)
            report = self._unreported.get(session_id)
            if report is None:
                how = self._ended[session_id]
                state = (
                    session_pb2.SESSION_STATE_TERMINATED
                    if how == "terminated"
                    else session_pb2.SESSION_STATE_FAILED
                )
                report = worker_pb2.SessionStateUpdate(
                    session_id=session_id, state=state, reason="ended_on_worker"
                )
                self._unreported[session_id] = report
            self._send(_request(session_state_update=report))
            return
        protocol = resource_pb2.Protocol.Name(assignment.protocol).removeprefix("PROTOCOL_").lower()
        if protocol not in self.config.protocols or len(self.sessions) >= self.config.capacity:
            reason = "protocol_unsupported" if protocol not in self.config.protocols else "at_capacity"
            self._send(
                _request(
                    assignment_ack=worker_pb2.AssignmentAck(
                        session_id=session_id, accepted=False, reason=reason
                    )
                )
            )
            return
        running = RunningSession(assignment)
        self.sessions[session_id] = running
        self._send(_request(assignment_ack=worker_pb2.AssignmentAck(session_id=session_id, accepted=True)))
        running.task = asyncio.create_task(self._run_session(running), name=f"session-{session_id}")

    async def _run_session(self, running: RunningSession) -> None:
        assignment = running.assignment
        session_id = assignment.session_id
        credential: Credential | None = None
        try:
            metadata = json_format.MessageToDict(assignment.resource_metadata)
            credential = await self._credential(assignment, metadata)
            running.connection = await self._connect(assignment, credential, metadata)
            running.active = True
            self._send(_state(session_id, session_pb2.SESSION_STATE_ACTIVE))
            log.info("session %s is active", session_id)
            if self._on_active is not None:
                await self._on_active(session_id, running.connection)
            await self._until_closed(running.connection)
            self._end(session_id, session_pb2.SESSION_STATE_TERMINATED, "target_closed")
        except AdapterError as exc:
            log.warning("session %s failed: %s", session_id, exc.reason)
            self._end(session_id, session_pb2.SESSION_STATE_FAILED, exc.reason)
        except grpc.aio.AioRpcError as exc:
            reason = _rpc_reason(exc)
            log.warning("session %s failed: the secret was not resolved (%s)", session_id, reason)
            self._end(session_id, session_pb2.SESSION_STATE_FAILED, f"resolve_{reason}"[:64])
        except Exception as exc:  # every failure reaches the control plane, not just the expected ones
            # The type and where it was raised, never the message: a library's text can
            # quote what it was handed, and this session held a credential.
            log.error(
                "session %s failed unexpectedly: %s\n%s",
                session_id,
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            self._end(
                session_id,
                session_pb2.SESSION_STATE_FAILED,
                f"worker_error_{type(exc).__name__}"[:64].lower(),
            )
        finally:
            if credential is not None:
                credential.drop()
            if running.connection is not None:
                with contextlib.suppress(Exception):
                    await running.connection.close()
            self.sessions.pop(session_id, None)

    async def _credential(
        self, assignment: worker_pb2.Assignment, metadata: dict[str, Any]
    ) -> Credential | None:
        if assignment.protocol == resource_pb2.PROTOCOL_TCP:
            return None
        if assignment.secret_ref:
            return await self._resolve(assignment)
        credential = from_development_metadata(assignment, metadata)
        if credential is None:
            raise AdapterError(
                "no_credentials", "the resource has no secret_ref and no usable development credentials"
            )
        return credential

    async def _resolve(self, assignment: worker_pb2.Assignment) -> Credential:
        """The session's credential, retried through a control-plane outage.

        UNAVAILABLE (the database or the replica is away), no stream (it is
        reconnecting) and ``lease_expired`` (the lease lapsed only because its
        heartbeats could not be recorded; the first heartbeat recorded after the
        outage revives it) are retried with backoff until RESOLVE_DEADLINE; every
        other refusal fails the session. A
        lease that lapsed for real fails the session meanwhile, and its Terminate
        cancels this. The running assignment is read again on each try: a
        reconnect re-sends it with a fresh lease token.
        """
        session_id = assignment.session_id
        deadline = asyncio.get_running_loop().time() + RESOLVE_DEADLINE
        attempt = 0
        while True:
            attempt += 1
            left = deadline - asyncio.get_running_loop().time()
            running = self.sessions.get(session_id)
            current = running.assignment if running is not None else assignment
            if self._channel is None and left > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.connected.wait(), left)
            channel = self._channel
            if channel is None:
                raise AdapterError(
                    "not_connected", "no stream to the control plane to resolve the secret through"
                )
            try:
                response = await resolver_pb2_grpc.SecretResolverStub(channel).ResolveSecret(
                    resolver_pb2.ResolveSecretRequest(
                        organization_id=current.organization_id,
                        resource_id=current.resource_id,
                        worker_id=self.worker_id,
                        session_id=session_id,
                        secret_ref=current.secret_ref,
                        lease_token=current.lease_token,
                    ),
                    timeout=RESOLVE_TIMEOUT,
                )
            except grpc.aio.AioRpcError as exc:
                transient = exc.code() == grpc.StatusCode.UNAVAILABLE or _rpc_reason(exc) == "lease_expired"
                if not transient or asyncio.get_running_loop().time() >= deadline:
                    raise
                log.info("resolving session %s again: %s", session_id, _rpc_reason(exc))
                pause = min(RESOLVE_BACKOFF_CAP, 0.25 * 2 ** min(attempt, 8)) * _JITTER.uniform(0.8, 1.2)
                await asyncio.sleep(pause)
                continue
            try:
                return from_resolved(response)
            finally:
                response.Clear()

    @staticmethod
    async def _connect(
        assignment: worker_pb2.Assignment, credential: Credential | None, metadata: dict[str, Any]
    ) -> Connection:
        if assignment.protocol == resource_pb2.PROTOCOL_SSH:
            assert credential is not None
            return await ssh.connect(assignment.address, credential, metadata)
        return await tcp.connect(assignment.address)

    @staticmethod
    async def _until_closed(connection: Connection) -> None:
        if isinstance(connection, ssh.SshConnection):
            await connection.connection.wait_closed()
        else:
            await asyncio.Event().wait()  # a tunnel lives until terminated

    async def _end_all(self) -> None:
        tasks = [r.task for r in self.sessions.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- certificate renewal ------------------------------------------------

    async def _renewals(self, channel: grpc.aio.Channel) -> None:
        while True:
            identity = await asyncio.to_thread(self._state.load, ROLE_WORKER)
            wait = seconds_until_renewal(identity, datetime.now(UTC))
            if wait > 0:
                await asyncio.sleep(min(wait, 3600))
                continue
            await self.renew(channel)

    async def renew(self, channel: grpc.aio.Channel) -> None:
        """A fresh key and certificate from the platform CA, written to the state directory."""
        identity = await asyncio.to_thread(self._state.load, ROLE_WORKER)
        renewed = await platform_identity.renew(channel, identity)
        await asyncio.to_thread(self._state.save, renewed)
        await asyncio.to_thread(self._load_certificate)  # new direct connections get the new one
        log.info(
            "renewed the worker certificate; it expires %s",
            renewed.certificate().not_valid_after_utc.isoformat(),
        )


def _attachment_info(update: worker_pb2.AttachmentUpdate) -> AttachmentInfo:
    return AttachmentInfo(
        update.attachment_id,
        update.session_id,
        update.user_id,
        session_pb2.AttachmentState.Name(update.state).removeprefix("ATTACHMENT_STATE_").lower(),
        [session_pb2.Channel.Name(c).removeprefix("CHANNEL_").lower() for c in update.channels],
    )


def _policy(assignment: worker_pb2.Assignment) -> dict[str, Any]:
    """The organization's data-plane defaults, overridden setting by setting by the resource's."""
    defaults = json_format.MessageToDict(assignment.organization_policy)
    metadata = json_format.MessageToDict(assignment.resource_metadata)
    merged = {**defaults, **metadata}
    if isinstance(defaults.get("rap_clipboard"), dict) and isinstance(metadata.get("rap_clipboard"), dict):
        merged["rap_clipboard"] = {**defaults["rap_clipboard"], **metadata["rap_clipboard"]}
    return merged


def key_matches(identity: PlatformIdentity) -> bool:
    """Whether the stored key belongs to the stored certificate."""
    key = serialization.load_pem_private_key(identity.key_pem.reveal(), None)
    return bool(key.public_key() == identity.certificate().public_key())


__all__ = ["Agent", "AgentConfig", "SecretBytes", "WorkerRevoked", "seconds_until_renewal"]
