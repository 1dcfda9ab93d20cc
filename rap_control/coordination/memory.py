"""The in-process bus: one replica, no Redis."""

from __future__ import annotations

import uuid

from rap_control.coordination.types import Handler, WorkerEvent


class InProcessCoordination:
    def __init__(self, replica_id: str = "local") -> None:
        self.replica_id = replica_id
        self._workers: set[uuid.UUID] = set()
        self._handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        self._handler = handler

    async def close(self) -> None:
        self._handler = None

    async def ensure_available(self) -> None:
        return None

    async def healthy(self) -> bool:
        return True

    async def claim_worker(self, worker_id: uuid.UUID) -> None:
        self._workers.add(worker_id)

    async def claim_workers(self, worker_ids: list[uuid.UUID]) -> None:
        self._workers.update(worker_ids)

    async def release_worker(self, worker_id: uuid.UUID) -> None:
        self._workers.discard(worker_id)

    async def notify(self, event: WorkerEvent) -> bool:
        if event.worker_id not in self._workers or self._handler is None:
            return False
        await self._handler(event)
        return True
