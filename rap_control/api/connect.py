"""WorkerService.Connect: the worker's assignment stream, and this replica's hub of streams.

The hub holds the streams connected to this replica. The coordination bus
delivers events (ids only) for those workers here; the hub reads what it
needs from PostgreSQL and writes the message on the worker's stream. Each
incoming message is one unit of work; the stream itself holds no database
session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import duration_pb2

from rap.v1 import worker_pb2
from rap_common.errors import InvalidArgument, PermissionDenied, RapError, Unavailable
from rap_control.api import convert, session_convert
from rap_control.api.context import current_peer_certificate, current_request_id
from rap_control.coordination.types import Coordination, EventKind, WorkerEvent
from rap_control.db.engine import Database
from rap_control.resources.types import Protocol
from rap_control.sessions.attachments import Attachments
from rap_control.sessions.lifecycle import SessionTiming
from rap_control.sessions.streams import WorkerSessions
from rap_control.sessions.types import Assignment, Beat, SessionState, WorkerHello
from rap_control.tokens.keyring import SigningKeyRing

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0
MAX_SESSION_IDS = 10_000


@dataclass(eq=False)
class WorkerStream:
    """One connected worker's outgoing queue."""

    worker_id: uuid.UUID
    organization_id: uuid.UUID
    _queue: asyncio.Queue[worker_pb2.ConnectResponse | RapError | None] = field(default_factory=asyncio.Queue)

    def send(self, message: worker_pb2.ConnectResponse) -> None:
        self._queue.put_nowait(message)

    def close(self, error: RapError | None = None) -> None:
        """End the stream: cleanly, or with ``error`` as its status."""
        self._queue.put_nowait(error)

    async def next(self) -> worker_pb2.ConnectResponse | RapError | None:
        return await self._queue.get()


class StreamHub:
    """The worker streams connected to this replica, by worker id."""

    def __init__(self) -> None:
        self._streams: dict[uuid.UUID, WorkerStream] = {}

    def open(self, worker_id: uuid.UUID, organization_id: uuid.UUID) -> WorkerStream:
        old = self._streams.get(worker_id)
        if old is not None:
            # A worker runs one stream: the newer connection wins.
            old.close(Unavailable("superseded by a newer stream of this worker", reason="stream_superseded"))
        stream = WorkerStream(worker_id, organization_id)
        self._streams[worker_id] = stream
        return stream

    def remove(self, stream: WorkerStream) -> bool:
        """Forget ``stream``; False when a newer stream of the worker replaced it."""
        if self._streams.get(stream.worker_id) is stream:
            del self._streams[stream.worker_id]
            return True
        return False

    def get(self, worker_id: uuid.UUID) -> WorkerStream | None:
        return self._streams.get(worker_id)

    def __len__(self) -> int:
        return len(self._streams)


_Beat = tuple[list[uuid.UUID], list[uuid.UUID], "WorkerStream"]


def _terminate(session_id: uuid.UUID, reason: str) -> worker_pb2.ConnectResponse:
    """A Terminate; the reason is "terminated" for a terminated session, anything else
    (failed, lease_expired, unknown) for one that failed."""
    return worker_pb2.ConnectResponse(
        terminate=worker_pb2.Terminate(session_id=str(session_id), reason=reason)
    )


def _ids(values: Any, field: str) -> list[uuid.UUID]:
    if len(values) > MAX_SESSION_IDS:
        raise InvalidArgument(f"{field} lists more than {MAX_SESSION_IDS} ids", reason="too_many")
    out = []
    for value in values:
        try:
            out.append(uuid.UUID(value))
        except ValueError:
            raise InvalidArgument(f"{field} holds a malformed id", reason="bad_id") from None
    return out


class WorkerStreams:
    """Connect streams and coordination events of one replica."""

    def __init__(
        self,
        db: Database,
        sessions: WorkerSessions,
        ring: SigningKeyRing,
        coordination: Coordination,
        timing: SessionTiming,
        *,
        production: bool,
    ) -> None:
        self._db = db
        self._sessions = sessions
        self._ring = ring
        self._coordination = coordination
        self._timing = timing
        self._production = production
        self.hub = StreamHub()
        # worker id -> (the sessions it runs, its bound attachments, its stream)
        self._beats: dict[uuid.UUID, _Beat] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._flush_interval = min(1.0, timing.heartbeat_seconds / 4)

    async def run_heartbeats(self) -> None:
        """Flush the heartbeats received since the last flush, until cancelled."""
        while True:
            await asyncio.sleep(self._flush_interval)
            if not self._beats:
                continue
            batch, self._beats = self._beats, {}
            try:
                await self._flush(batch)
            except RapError as exc:
                # Kept for the next flush (newer beats win): at recovery they renew the
                # leases of the workers that stayed alive through the outage.
                self._beats = {**self._still_alive(batch), **self._beats}
                log.warning("%d heartbeats not recorded yet: %s", len(batch), exc.reason)
            except Exception:
                log.exception("heartbeat flush failed")

    def _still_alive(self, batch: dict[uuid.UUID, _Beat]) -> dict[uuid.UUID, _Beat]:
        """The beats of a failed flush whose stream is still connected here (a worker that
        went away meanwhile has its own leases lapse)."""
        return {w: beat for w, beat in batch.items() if self.hub.get(w) is beat[2]}

    async def _flush(self, batch: dict[uuid.UUID, _Beat]) -> None:
        beats = [Beat(worker_id, ids, bound) for worker_id, (ids, bound, _) in batch.items()]
        # Leases that lapsed while this replica could not write are revived by live beats.
        outage = self._db.unavailable_within(
            self._timing.lease_ttl_seconds + 2 * self._timing.heartbeat_seconds
        )
        result = await self._db.run_system(
            lambda uow: self._sessions.heartbeats(uow, beats, after_outage=outage)
        )
        for worker_id in result.revoked:
            batch[worker_id][2].close(PermissionDenied("this worker was revoked", reason="worker_revoked"))
        for worker_id, ended in result.ended.items():
            for session_id, how in ended:
                batch[worker_id][2].send(_terminate(session_id, how))
        for worker_id, session_ids in result.undelivered.items():
            for session_id in session_ids:
                # In the background: the next flush must not wait for deliveries.
                self._spawn(self._deliver(worker_id, session_id))
        for worker_id, attachments in result.ended_attachments.items():
            for attachment in attachments:
                batch[worker_id][2].send(session_convert.attachment_update(attachment))
        alive = [w for w in batch if w not in result.revoked]
        try:
            await self._coordination.claim_workers(alive)
        except Unavailable:
            log.warning("could not refresh %d worker routes: the coordination bus is unavailable", len(alive))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._logged(work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except RapError as exc:
            log.warning("a delivery failed: %s", exc.reason)
        except Exception as exc:
            log.error("a delivery failed: %s", type(exc).__name__)

    async def _deliver(self, worker_id: uuid.UUID, session_id: uuid.UUID) -> None:
        stream = self.hub.get(worker_id)
        if stream is None:
            return
        assignment = await self._db.run(lambda uow: self._sessions.deliver(uow, worker_id, session_id))
        if assignment is not None:
            stream.send(self._assignment(assignment))

    # -- events from the coordination bus ------------------------------

    async def on_event(self, event: WorkerEvent) -> None:
        stream = self.hub.get(event.worker_id)
        if stream is None:
            log.info("no stream here for worker %s (%s)", event.worker_id, event.kind.value)
            return
        if event.kind is EventKind.SESSION_ASSIGNED and event.session_id is not None:
            session_id = event.session_id
            assignment = await self._db.run(
                lambda uow: self._sessions.deliver(uow, event.worker_id, session_id)
            )
            if assignment is not None:
                stream.send(self._assignment(assignment))
        elif event.kind is EventKind.SESSION_TERMINATED and event.session_id is not None:
            stream.send(_terminate(event.session_id, "terminated"))
        elif event.kind is EventKind.ATTACHMENT_UPDATED and event.attachment_id is not None:
            attachment_id = event.attachment_id
            attachment = await self._db.run(lambda uow: Attachments.get(uow, attachment_id))
            if attachment is not None:
                stream.send(session_convert.attachment_update(attachment))
        elif event.kind is EventKind.SIGNING_KEYS_UPDATED:
            jwks = await self._db.run(self._ring.jwks)
            stream.send(
                worker_pb2.ConnectResponse(
                    signing_keys_update=worker_pb2.SigningKeysUpdate(jwks=session_convert.jwks_to_proto(jwks))
                )
            )
        elif event.kind is EventKind.WORKER_REVOKED:
            stream.close(PermissionDenied("this worker was revoked", reason="worker_revoked"))

    async def end_session(self, worker_id: uuid.UUID | None, session_id: uuid.UUID, reason: str) -> None:
        """Tell a session's worker, wherever its stream is, that the session is over."""
        if worker_id is None:
            return
        stream = self.hub.get(worker_id)
        if stream is not None:
            stream.send(_terminate(session_id, reason))
            return
        with contextlib.suppress(Unavailable):
            await self._coordination.notify(WorkerEvent(EventKind.SESSION_TERMINATED, worker_id, session_id))

    # -- the stream ----------------------------------------------------

    async def connect(self, requests: AsyncIterator[Any]) -> AsyncIterator[worker_pb2.ConnectResponse]:
        peer, request_id = current_peer_certificate(), current_request_id()
        try:
            first = await asyncio.wait_for(anext(requests), HELLO_TIMEOUT)
        except (TimeoutError, StopAsyncIteration):
            raise InvalidArgument("send Hello first, within 10 s", reason="hello_required") from None
        if first.WhichOneof("message") != "hello":
            raise InvalidArgument("the first message on Connect must be Hello", reason="hello_required")
        hello = self._hello(first.hello)
        sync = await self._db.run(lambda uow: self._sessions.hello(uow, peer, hello, request_id))
        jwks = await self._db.run(self._ring.jwks)
        stream = self.hub.open(sync.worker_id, sync.organization_id)
        await self._claim(sync.worker_id)
        log.info("worker %s connected (%d live sessions re-sent)", sync.worker_id, len(sync.assignments))
        reader = asyncio.create_task(self._read(requests, stream, request_id))
        try:
            yield worker_pb2.ConnectResponse(
                welcome=worker_pb2.Welcome(
                    worker_id=str(sync.worker_id),
                    jwks=session_convert.jwks_to_proto(jwks),
                    heartbeat_interval=duration_pb2.Duration(seconds=self._timing.heartbeat_seconds),
                    lease_ttl=duration_pb2.Duration(seconds=self._timing.lease_ttl_seconds),
                    environment=session_convert.environment(self._production),
                )
            )
            for assignment in sync.assignments:
                yield self._assignment(assignment)
            for session_id, how in sync.ended:
                yield _terminate(session_id, how)
            for attachment in sync.attachments:
                yield session_convert.attachment_update(attachment)
            while True:
                item = await stream.next()
                if item is None:
                    return
                if isinstance(item, RapError):
                    raise item
                yield item
        finally:
            reader.cancel()
            if self.hub.remove(stream):
                await asyncio.shield(self._gone(sync.worker_id))

    async def _read(self, requests: AsyncIterator[Any], stream: WorkerStream, request_id: str) -> None:
        try:
            async for message in requests:
                await self._handle(message, stream, request_id)
            stream.close()
        except asyncio.CancelledError:
            raise
        except RapError as exc:
            stream.close(exc)
        except Exception as exc:  # the stream's error path logs it
            log.error("worker %s stream reader failed: %s", stream.worker_id, type(exc).__name__)
            stream.close(Unavailable("the stream failed; reconnect", reason="stream_failed"))

    async def _handle(self, message: Any, stream: WorkerStream, request_id: str) -> None:
        kind = message.WhichOneof("message")
        worker_id, org = stream.worker_id, stream.organization_id
        if kind == "heartbeat":
            # Batched: a replica with thousands of idle workers spends a few
            # statements per flush on their heartbeats, not a transaction each.
            self._beats[worker_id] = (
                _ids(message.heartbeat.session_ids, "heartbeat.session_ids"),
                _ids(message.heartbeat.bound_attachment_ids, "heartbeat.bound_attachment_ids"),
                stream,
            )
        elif kind == "assignment_ack":
            ack = message.assignment_ack
            session_id = _ids([ack.session_id], "assignment_ack.session_id")[0]
            await self._db.run(
                lambda uow: self._sessions.acknowledge(
                    uow, worker_id, org, session_id, ack.accepted, ack.reason, request_id
                )
            )
        elif kind == "session_state_update":
            update = message.session_state_update
            session_id = _ids([update.session_id], "session_state_update.session_id")[0]
            state = session_convert.state(update.state, "session_state_update.state", required=True)
            assert state is not None
            await self._db.run(
                lambda uow: self._sessions.update_state(
                    uow, worker_id, org, session_id, state, update.reason, request_id
                )
            )
        elif kind == "bind_rejected":
            rejected = message.bind_rejected
            await self._db.run(
                lambda uow: self._sessions.bind_rejected(
                    uow,
                    worker_id,
                    org,
                    rejected.session_id,
                    rejected.attachment_id,
                    rejected.jti,
                    rejected.user_id,
                    rejected.reason,
                    request_id,
                    rejected.source_address,
                    max(1, rejected.count),
                )
            )
        elif kind == "hello":
            raise InvalidArgument("Hello comes once, first, on Connect", reason="bad_message")
        else:
            # A kind this replica does not know (a newer worker's): ignored, not a reason to
            # tear the stream down, so that the stream can grow without breaking workers.
            log.info("ignored a message of a kind this replica does not know from worker %s", worker_id)

    def _hello(self, hello: Any) -> WorkerHello:
        protocols = []
        for value in hello.protocols:
            parsed = convert.protocol(value, "hello.protocols")
            assert parsed is not None
            protocols.append(Protocol(parsed))
        if hello.capacity < 0:
            raise InvalidArgument("hello.capacity must not be negative", reason="bad_capacity")
        ended: list[tuple[uuid.UUID, SessionState, str]] = []
        for update in hello.ended_sessions[:MAX_SESSION_IDS]:
            session_id = _ids([update.session_id], "hello.ended_sessions.session_id")[0]
            state = session_convert.state(update.state, "hello.ended_sessions.state", required=True)
            if state not in (SessionState.TERMINATED, SessionState.FAILED):
                raise InvalidArgument(
                    "hello.ended_sessions holds only terminated or failed sessions", reason="bad_state"
                )
            ended.append((session_id, state, update.reason))
        return WorkerHello(
            version=hello.version[:64],
            protocols=protocols,
            capacity=hello.capacity,
            direct_url=hello.direct_url[:300],
            session_ids=_ids(hello.session_ids, "hello.session_ids"),
            ended=ended,
        )

    def _assignment(self, assignment: Assignment) -> worker_pb2.ConnectResponse:
        return session_convert.assignment_to_proto(assignment, production=self._production)

    async def _claim(self, worker_id: uuid.UUID) -> None:
        try:
            await self._coordination.claim_worker(worker_id)
        except Unavailable:
            # Events for this worker cannot reach us until the bus is back; its
            # heartbeats still deliver its sessions from PostgreSQL meanwhile.
            log.warning("could not route worker %s here: the coordination bus is unavailable", worker_id)

    async def _gone(self, worker_id: uuid.UUID) -> None:
        log.info("worker %s disconnected", worker_id)
        with contextlib.suppress(Unavailable):
            await self._coordination.release_worker(worker_id)
        try:
            await self._db.run(lambda uow: self._sessions.disconnected(uow, worker_id))
        except RapError as exc:
            log.warning("could not mark worker %s offline: %s", worker_id, exc.reason)
