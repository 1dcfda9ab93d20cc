"""Anyone who reaches a worker's direct endpoint cannot grow the audit log at line rate.

A flood of anonymous garbage (no token, forged tokens) from one source
leaves a handful of data_plane_bind_rejected rows: the first refusal per
reason, and then one row per reason and interval carrying the count. Past
its burst the source gets HTTP 429. A refusal of a real token is still its
own row, once.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator

import aiohttp
import pytest

from rap.v1 import admin_pb2
from rap_common import frames
from rap_common.identity import CA
from tests.e2e.cluster import Cluster, cluster
from tests.support.processes import WorkerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

FLOOD = 300
INTERVAL = "3"


@pytest.fixture(scope="module")
def plane(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(postgres_url, tmp_path_factory.mktemp("flood"), None) as c:
        yield c


@pytest.fixture(scope="module")
def worker(plane: Cluster) -> WorkerProcess:
    return plane.enroll_worker("flooded", RAP_TEST_REFUSAL_REPORT_SECONDS=INTERVAL)


def _direct_url(plane: Cluster) -> str:
    workers = plane.admin.admin.ListWorkers(admin_pb2.ListWorkersRequest()).workers
    return next(w.direct_url for w in workers if w.name == "flooded")


async def _knock(http: aiohttp.ClientSession, url: str, context: ssl.SSLContext, token: str | None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        ws = await http.ws_connect(url, headers=headers, protocols=(frames.SUBPROTOCOL,), ssl=context)
    except aiohttp.WSServerHandshakeError as exc:
        return str(exc.status)
    message = await ws.receive()
    await ws.close()
    return str(message.extra)


def _count(event: object) -> int:
    details = event.details  # type: ignore[attr-defined]
    return int(details["count"]) if "count" in details else 1


def test_a_flood_of_garbage_binds_leaves_a_few_rows_with_counts(
    plane: Cluster, worker: WorkerProcess
) -> None:
    url = _direct_url(plane)
    context = ssl.create_default_context(cadata=(worker.state_dir / CA).read_text())
    forged = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im5vcGUifQ.eyJzdWIiOiJ4In0.c2ln"

    async def flood() -> list[str]:
        async with aiohttp.ClientSession() as http:
            outcomes = []
            for i in range(FLOOD):
                outcomes.append(await _knock(http, url, context, forged if i % 2 else None))
        await asyncio.sleep(0.25)
        return outcomes

    outcomes = asyncio.run(flood())
    assert {"missing_token", "unknown_kid"} <= set(outcomes)
    assert "429" in outcomes, "past its burst the source is rate-limited"

    def rows() -> list[object]:
        return [
            e for e in plane.audit("data_plane_bind_rejected") if e.details["reason"] != "relay_not_gateway"
        ]

    # The counts arrive at the end of the interval: every refusal is accounted for.
    deadline = time.monotonic() + 30
    while True:
        found = rows()
        total = sum(_count(e) for e in found)
        if total >= FLOOD:
            break
        assert time.monotonic() < deadline, f"{total} of {FLOOD} refusals accounted for in {len(found)} rows"
        time.sleep(0.2)
    assert total == FLOOD
    assert len(found) <= 6, [(e.details["reason"], _count(e)) for e in found]  # type: ignore[attr-defined]
    assert {e.details["source_address"] for e in found} == {"127.0.0.1"}  # type: ignore[attr-defined]
