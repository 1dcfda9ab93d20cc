"""The Redis bus, for several replicas.

* ``route:<worker id>`` holds the id of the replica with the worker's
  stream, with a TTL that heartbeats refresh: a replica that dies stops
  receiving its workers' events within ``route_ttl``.
* ``inbox:<replica id>`` is a list the replica pops in a loop. A list,
  not pub/sub: a message sent while the replica reconnects waits for it.
  Inboxes expire too, so a dead replica's does not grow for ever.

Redis only routes: losing it loses no data (PostgreSQL is the source of
truth and a reconnecting worker is re-synced from it). While Redis is
unreachable, ``notify`` raises Unavailable, and the consumer loop retries
with jittered backoff until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rap_common.errors import InternalError, Unavailable
from rap_control.coordination.types import Handler, WorkerEvent

log = logging.getLogger(__name__)
# Jitter from a generator of our own: the global one is shared with the rest of the process.
_JITTER = random.Random()  # noqa: S311 - jitter, not secrecy

ROUTE_TTL_SECONDS = 30
INBOX_TTL_SECONDS = 300
_POP_TIMEOUT = 1.0


# Coordination events one replica handles at once.
CONCURRENT_EVENTS = 64


def _unavailable(exc: Exception) -> Unavailable:
    return Unavailable(
        "the coordination bus (Redis) is unavailable; retry shortly", reason="coordination_unavailable"
    )


class RedisCoordination:
    def __init__(
        self,
        url: str,
        *,
        replica_id: str | None = None,
        prefix: str = "rap",
        route_ttl: int = ROUTE_TTL_SECONDS,
    ) -> None:
        self.replica_id = replica_id or uuid.uuid4().hex
        self._prefix = prefix
        self._route_ttl = route_ttl
        # Short socket timeouts: a dead Redis must fail calls quickly, not hang them.
        self._redis = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=_POP_TIMEOUT + 2)
        self._consumer: asyncio.Task[None] | None = None
        self._closing = False
        self._slots = asyncio.Semaphore(CONCURRENT_EVENTS)
        self._handling: set[asyncio.Task[None]] = set()

    def _route(self, worker_id: uuid.UUID) -> str:
        return f"{self._prefix}:route:{worker_id}"

    def _inbox(self, replica_id: str) -> str:
        return f"{self._prefix}:inbox:{replica_id}"

    async def start(self, handler: Handler) -> None:
        if self._consumer is None:
            self._consumer = asyncio.create_task(self._consume(handler), name=f"rap-inbox-{self.replica_id}")

    async def close(self) -> None:
        """Stop consuming and close the connections; idempotent."""
        self._closing = True
        if self._consumer is not None:
            # redis-py may turn the cancellation of a blocked BLPOP into a connection
            # error; the loop sees _closing and ends either way. Bounded, to be sure.
            self._consumer.cancel()
            await asyncio.wait([self._consumer], timeout=5)
            self._consumer = None
        for task in list(self._handling):
            task.cancel()
        if self._handling:
            await asyncio.wait(list(self._handling), timeout=5)
        await self._redis.aclose()

    async def claim_worker(self, worker_id: uuid.UUID) -> None:
        try:
            await self._redis.set(self._route(worker_id), self.replica_id, ex=self._route_ttl)
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def claim_workers(self, worker_ids: list[uuid.UUID]) -> None:
        if not worker_ids:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for worker_id in worker_ids:
                    pipe.set(self._route(worker_id), self.replica_id, ex=self._route_ttl)
                await pipe.execute()
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def release_worker(self, worker_id: uuid.UUID) -> None:
        # Only our own route: a worker that moved to another replica keeps that one.
        script = (
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
        )
        try:
            await self._redis.eval(script, 1, self._route(worker_id), self.replica_id)
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def notify(self, event: WorkerEvent) -> bool:
        try:
            replica = await self._redis.get(self._route(event.worker_id))
            if replica is None:
                return False
            inbox = self._inbox(replica.decode() if isinstance(replica, bytes) else replica)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(inbox, event.encode())
                pipe.expire(inbox, INBOX_TTL_SECONDS)
                await pipe.execute()
            return True
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def ensure_available(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def healthy(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def _consume(self, handler: Handler) -> None:
        inbox, delay = self._inbox(self.replica_id), 0.1
        while not self._closing:
            try:
                popped = await self._redis.blpop([inbox], timeout=_POP_TIMEOUT)
                delay = 0.1
            except (RedisConnectionError, RedisTimeoutError, OSError):
                if self._closing:
                    return
                log.warning("coordination bus unreachable; retrying in %.1f s", delay)
                await asyncio.sleep(delay * _JITTER.uniform(0.5, 1.5))
                delay = min(delay * 2, 5.0)
                continue
            if popped is None:
                continue
            try:
                event = WorkerEvent.decode(popped[1])
            except InternalError:
                log.error("dropped a malformed coordination message on %s", inbox)
                continue
            # Handled concurrently, a bounded number at once: under load a backlog of
            # notices drained one at a time made binds wait for their attachment.
            await self._slots.acquire()
            task = asyncio.create_task(self._handle(handler, event))
            self._handling.add(task)
            task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._handling.discard(task)
        self._slots.release()

    @staticmethod
    async def _handle(handler: Handler, event: WorkerEvent) -> None:
        try:
            await handler(event)
        except Exception:
            log.exception(
                "coordination handler failed for %s of worker %s", event.kind.value, event.worker_id
            )
