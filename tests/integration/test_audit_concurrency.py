"""Concurrent audit writers: chains stay whole, and organizations do not wait on each other."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest

from rap_control.audit.service import AuditLog
from rap_control.audit.types import EventType, chain_id_for
from rap_control.db.engine import Database
from rap_control.principal import Actor
from tests.conftest import Org

pytestmark = pytest.mark.integration


def _append(db: Database, org_id: uuid.UUID, count: int, hold: float = 0.0) -> None:
    audit = AuditLog()
    actor = Actor("user", "concurrency-test", org_id, "req")
    for i in range(count):

        def unit(uow, i=i):  # type: ignore[no-untyped-def]
            audit.record(uow, actor, EventType.RESOURCE_UPDATED, target_type="resource", target_id=f"r{i}")
            time.sleep(hold)  # keep the chain head locked a while, as a slow transaction would

        db.run_sync(unit)


def test_concurrent_appends_to_one_chain_keep_it_whole(db: Database, make_org: Callable[[], Org]) -> None:
    org_id = uuid.UUID(make_org().id)
    threads = [threading.Thread(target=_append, args=(db, org_id, 40)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = db.run_sync(lambda uow: AuditLog().verify(uow, [chain_id_for(org_id)]))
    assert result.ok, result.describe()
    assert result.checked_events == 3 + 6 * 40  # bootstrap's three events, then ours


def test_a_busy_chain_does_not_hold_up_another_organization(
    db: Database, make_org: Callable[[], Org]
) -> None:
    busy, other = uuid.UUID(make_org().id), uuid.UUID(make_org().id)
    slow = threading.Thread(target=_append, args=(db, busy, 3, 0.5))  # holds busy's head ~1.5 s in all
    slow.start()
    time.sleep(0.1)
    started = time.perf_counter()
    _append(db, other, 5)
    elapsed = time.perf_counter() - started
    slow.join()
    assert elapsed < 1.0, f"appends to another organization waited {elapsed:.2f} s on a busy chain"
    for org_id in (busy, other):
        assert db.run_sync(lambda uow, o=org_id: AuditLog().verify(uow, [chain_id_for(o)])).ok
