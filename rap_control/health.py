"""Health that tells the truth: ``grpc.health.v1`` follows the replica's dependencies.

A replica is SERVING only while it can reach what its RPCs need: the
database always, the coordination bus when one is configured (Redis), and
the key provider (a wrap and unwrap of a throwaway key under the primary
KEK: for PKCS#11 that is a round trip to the token). A probe runs every
``interval`` seconds, each dependency with a deadline; the moment one
fails, every service on every listener of the replica reports
NOT_SERVING, and SERVING again once all answer, without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2
from sqlalchemy import text

from rap_common.errors import RapError
from rap_common.secrets import SecretBytes
from rap_control.coordination.types import Coordination
from rap_control.db.engine import Database
from rap_control.keys.provider import KeyProvider

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 3.0
_PROBE_AAD = b"rap-health-probe"

Probe = Callable[[], Awaitable[None]]


class HealthMonitor:
    """Probes the dependencies and sets the status of every registered health servicer."""

    def __init__(
        self,
        db: Database,
        provider: KeyProvider,
        coordination: Coordination,
        *,
        interval: float = 1.0,
    ) -> None:
        self._probes: dict[str, Probe] = {
            "database": self._database,
            "key_provider": self._keys,
            "coordination": self._bus,
        }
        self._db, self._provider, self._coordination = db, provider, coordination
        self._interval = interval
        self._servicers: list[tuple[health_aio.HealthServicer, Sequence[str]]] = []
        self.failing: tuple[str, ...] | None = None

    async def register(self, servicer: health_aio.HealthServicer, services: Sequence[str]) -> None:
        """Report for ``services`` (and the server as a whole, "") on ``servicer``."""
        self._servicers.append((servicer, ("", *services)))
        # Before the first probe, SERVING (Plane.start probes before any listener starts).
        await self._publish(servicer, ("", *services), not self.failing)

    async def run(self) -> None:
        """Probe until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(self._interval)

    async def check(self) -> tuple[str, ...]:
        """Probe once and publish; returns the names of the failing dependencies."""
        results = await asyncio.gather(*(self._probe(n, p) for n, p in self._probes.items()))
        failing = tuple(name for name, ok in zip(self._probes, results, strict=True) if not ok)
        if failing != self.failing:
            if failing:
                log.warning("NOT_SERVING: unreachable %s", ", ".join(failing))
            elif self.failing is not None:
                log.info("SERVING again: every dependency answers")
            self.failing = failing
            for servicer, services in self._servicers:
                await self._publish(servicer, services, not failing)
        return failing

    @staticmethod
    async def _publish(servicer: health_aio.HealthServicer, services: Sequence[str], ok: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in services:
            await servicer.set(name, status)

    @staticmethod
    async def _probe(name: str, probe: Probe) -> bool:
        try:
            await asyncio.wait_for(probe(), PROBE_TIMEOUT)
            return True
        except (TimeoutError, RapError, OSError):
            return False
        except Exception as exc:  # a probe must never kill the monitor
            log.warning("health probe %s failed: %s", name, type(exc).__name__)
            return False

    async def _database(self) -> None:
        await self._db.run_system(lambda uow: uow.session.execute(text("SELECT 1")))

    async def _bus(self) -> None:
        if not await self._coordination.healthy():
            raise OSError("the coordination bus does not answer")

    async def _keys(self) -> None:
        def round_trip() -> None:
            key_id = self._provider.primary_key_id
            probe = SecretBytes(os.urandom(32))
            try:
                back = self._provider.unwrap(
                    key_id, self._provider.wrap(key_id, probe, _PROBE_AAD), _PROBE_AAD
                )
                back.wipe()
            finally:
                probe.wipe()

        await asyncio.to_thread(round_trip)
