"""One replica's services, built once and shared by its two listeners.

The user-facing server and the worker-facing server of a replica share
the same stream hub, coordination bus and sweeper, so a session started
on the user port reaches a worker streaming on the worker port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from rap_control.api.calls import Calls
from rap_control.api.connect import WorkerStreams
from rap_control.api.keys import KeyRpcs
from rap_control.api.signing import SigningKeyRpcs
from rap_control.audit.service import AuditLog
from rap_control.config import Settings
from rap_control.coordination.memory import InProcessCoordination
from rap_control.coordination.redis import RedisCoordination
from rap_control.coordination.types import Coordination
from rap_control.db.engine import Database
from rap_control.health import HealthMonitor
from rap_control.identity.service import IdentityService
from rap_control.keys.provider import KeyProvider
from rap_control.keys.service import KeyService
from rap_control.pki.authority import CertificateAuthority
from rap_control.policy.guard import ProductionGuard
from rap_control.resources.service import ResourceService
from rap_control.secrets.rewrap import Rewrapper
from rap_control.secrets.service import SecretStore
from rap_control.sessions.attachments import Attachments
from rap_control.sessions.leases import LeaseTokens
from rap_control.sessions.resolver import SecretResolution
from rap_control.sessions.revocation import Revocations
from rap_control.sessions.service import SessionService
from rap_control.sessions.streams import WorkerSessions
from rap_control.sessions.sweeper import LeaseSweeper
from rap_control.sessions.types import EndedSession
from rap_control.tokens.keyring import SigningKeyRing
from rap_control.workers.service import WorkerEnrollment

log = logging.getLogger(__name__)


@dataclass
class Plane:
    settings: Settings
    db: Database
    provider: KeyProvider
    coordination: Coordination
    audit: AuditLog
    identity: IdentityService
    calls: Calls
    resources: ResourceService
    keys: KeyService
    store: SecretStore
    authority: CertificateAuthority
    enrollment: WorkerEnrollment
    key_rpcs: KeyRpcs
    signing_rpcs: SigningKeyRpcs
    ring: SigningKeyRing
    sessions: SessionService
    attachments: Attachments
    streams: WorkerStreams
    resolution: SecretResolution
    sweeper: LeaseSweeper
    health: HealthMonitor
    revocations: Revocations
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Consume this replica's coordination inbox, run the lease sweeper, probe health."""
        await self.coordination.start(self.streams.on_event)
        await self.health.check()
        interval = max(0.5, self.settings.session_timing.lease_ttl_seconds / 3)
        self._tasks.append(asyncio.create_task(self.sweeper.run(interval, self._ended), name="rap-sweeper"))
        self._tasks.append(asyncio.create_task(self.streams.run_heartbeats(), name="rap-heartbeats"))
        self._tasks.append(asyncio.create_task(self.health.run(), name="rap-health"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.coordination.close()

    async def _ended(self, ended: EndedSession) -> None:
        await self.streams.end_session(ended.worker_id, ended.session_id, ended.how)


def build_plane(
    settings: Settings, db: Database, provider: KeyProvider, coordination: Coordination | None = None
) -> Plane:
    """Compose a replica's services (touches nothing: no database, no network)."""
    if coordination is None:
        coordination = (
            RedisCoordination(settings.redis_url) if settings.redis_url else InProcessCoordination()
        )
    timing = settings.session_timing
    audit = AuditLog()
    identity = IdentityService(audit)
    keys = KeyService(audit, provider)
    store = SecretStore(audit, provider, keys)
    authority = CertificateAuthority(provider, keys)
    enrollment = WorkerEnrollment(audit, authority)
    ring = SigningKeyRing(provider, keys, audit)
    leases = LeaseTokens(ring, timing.lease_ttl_seconds)
    worker_sessions = WorkerSessions(audit, enrollment, leases, timing)
    return Plane(
        settings=settings,
        db=db,
        provider=provider,
        coordination=coordination,
        audit=audit,
        identity=identity,
        calls=Calls(db, identity),
        resources=ResourceService(audit, ProductionGuard(production=settings.production)),
        keys=keys,
        store=store,
        authority=authority,
        enrollment=enrollment,
        key_rpcs=KeyRpcs(
            Calls(db, identity), keys, Rewrapper(db, provider, keys, audit), settings.operator_organization_id
        ),
        signing_rpcs=SigningKeyRpcs(
            Calls(db, identity),
            ring,
            coordination,
            settings.operator_organization_id,
            settings.signed_token_overlap_seconds,
        ),
        ring=ring,
        sessions=SessionService(audit, timing, production=settings.production),
        attachments=Attachments(audit, ring, settings.data_plane_token_ttl_seconds),
        streams=WorkerStreams(
            db, worker_sessions, ring, coordination, timing, production=settings.production
        ),
        resolution=SecretResolution(audit, enrollment, leases, store),
        sweeper=LeaseSweeper(
            db,
            audit,
            outage_grace_seconds=timing.lease_ttl_seconds + 2 * timing.heartbeat_seconds,
            timing=timing,
        ),
        health=HealthMonitor(db, provider, coordination),
        revocations=Revocations(audit),
    )
