"""Coordination between replicas over a real Redis, and the in-process bus."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from rap_common.errors import Unavailable
from rap_control.coordination.memory import InProcessCoordination
from rap_control.coordination.redis import RedisCoordination
from rap_control.coordination.types import EventKind, WorkerEvent
from tests.support.redis_server import PrivateRedis

pytestmark = pytest.mark.integration


@pytest.fixture
async def pair(
    redis_url: str,
) -> AsyncIterator[tuple[RedisCoordination, RedisCoordination, asyncio.Queue[WorkerEvent]]]:
    prefix = f"rap-test-{uuid.uuid4().hex[:8]}"
    a = RedisCoordination(redis_url, replica_id="replica-a", prefix=prefix)
    b = RedisCoordination(redis_url, replica_id="replica-b", prefix=prefix)
    received: asyncio.Queue[WorkerEvent] = asyncio.Queue()
    await a.start(received.put)
    yield a, b, received
    await a.close()
    await b.close()


async def test_an_event_sent_from_one_replica_reaches_the_one_holding_the_worker(pair) -> None:  # type: ignore[no-untyped-def]
    a, b, received = pair
    worker, session = uuid.uuid4(), uuid.uuid4()
    assert await b.notify(WorkerEvent(EventKind.SESSION_ASSIGNED, worker, session)) is False, "no route yet"
    await a.claim_worker(worker)
    assert await b.notify(WorkerEvent(EventKind.SESSION_ASSIGNED, worker, session)) is True
    event = await asyncio.wait_for(received.get(), 5)
    assert event == WorkerEvent(EventKind.SESSION_ASSIGNED, worker, session)
    await b.release_worker(worker)  # not b's route: left alone
    assert await b.notify(WorkerEvent(EventKind.SESSION_TERMINATED, worker, session)) is True
    await asyncio.wait_for(received.get(), 5)
    await a.release_worker(worker)
    assert await b.notify(WorkerEvent(EventKind.SESSION_TERMINATED, worker, session)) is False


async def test_messages_carry_ids_and_kinds_only(redis_url: str) -> None:
    prefix = f"rap-test-{uuid.uuid4().hex[:8]}"
    holder = RedisCoordination(
        redis_url, replica_id="holder", prefix=prefix
    )  # never started: its inbox fills
    sender = RedisCoordination(redis_url, replica_id="sender", prefix=prefix)
    worker = uuid.uuid4()
    try:
        await holder.claim_worker(worker)
        await sender.notify(WorkerEvent(EventKind.ATTACHMENT_UPDATED, worker, uuid.uuid4(), uuid.uuid4()))
        client = redis.Redis.from_url(redis_url)
        keys = sorted(k.decode() for k in client.keys(f"{prefix}:*"))
        assert keys == [f"{prefix}:inbox:holder", f"{prefix}:route:{worker}"]
        (raw,) = client.lrange(f"{prefix}:inbox:holder", 0, -1)
        message = json.loads(raw)
        assert set(message) == {"k", "w", "s", "a"}
        assert all(uuid.UUID(message[k]) for k in ("w", "s", "a"))
        assert 0 < client.ttl(f"{prefix}:inbox:holder") <= 300
        client.close()
    finally:
        await holder.close()
        await sender.close()


async def test_a_route_lapses_when_its_replica_stops_refreshing_it(redis_url: str) -> None:
    prefix = f"rap-test-{uuid.uuid4().hex[:8]}"
    a = RedisCoordination(redis_url, replica_id="a", prefix=prefix, route_ttl=1)
    worker = uuid.uuid4()
    try:
        await a.claim_worker(worker)
        assert await a.notify(WorkerEvent(EventKind.WORKER_REVOKED, worker)) is True
        await asyncio.sleep(1.5)
        assert await a.notify(WorkerEvent(EventKind.WORKER_REVOKED, worker)) is False
    finally:
        await a.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_losing_redis_answers_unavailable_and_recovers_by_itself(private_redis: PrivateRedis) -> None:
    a = RedisCoordination(private_redis.url, replica_id="a")
    b = RedisCoordination(private_redis.url, replica_id="b")
    received: asyncio.Queue[WorkerEvent] = asyncio.Queue()
    await a.start(received.put)
    worker = uuid.uuid4()
    try:
        await a.claim_worker(worker)
        await asyncio.to_thread(private_redis.stop)  # off the loop: the replicas keep running
        with pytest.raises(Unavailable) as info:
            await b.notify(WorkerEvent(EventKind.SESSION_ASSIGNED, worker, uuid.uuid4()))
        assert info.value.reason == "coordination_unavailable"
        assert "redis://" not in info.value.message
        await asyncio.to_thread(private_redis.start)  # same port, empty: heartbeats re-establish routes
        await asyncio.wait_for(a.claim_worker(worker), 10)
        session = uuid.uuid4()
        assert await b.notify(WorkerEvent(EventKind.SESSION_ASSIGNED, worker, session)) is True
        event = await asyncio.wait_for(received.get(), 15)
        assert event.session_id == session
    finally:
        await a.close()
        await b.close()


async def test_the_in_process_bus_delivers_to_claimed_workers_only() -> None:
    bus = InProcessCoordination()
    got: list[WorkerEvent] = []

    async def handler(event: WorkerEvent) -> None:
        got.append(event)

    await bus.start(handler)
    worker = uuid.uuid4()
    assert await bus.notify(WorkerEvent(EventKind.SESSION_ASSIGNED, worker)) is False
    await bus.claim_worker(worker)
    assert await bus.notify(WorkerEvent(EventKind.SESSION_ASSIGNED, worker)) is True
    await bus.release_worker(worker)
    assert await bus.notify(WorkerEvent(EventKind.SESSION_ASSIGNED, worker)) is False
    assert got == [WorkerEvent(EventKind.SESSION_ASSIGNED, worker)]


def test_a_message_with_anything_but_ids_is_refused() -> None:
    from rap_common.errors import InternalError

    for bad in (
        '{"k":"session_assigned","w":"x","s":null,"a":null}',
        f'{{"k":"session_assigned","w":"{uuid.uuid4()}","s":null,"a":null,"password":"p"}}',
        "not json",
    ):
        with pytest.raises(InternalError):
            WorkerEvent.decode(bad)
