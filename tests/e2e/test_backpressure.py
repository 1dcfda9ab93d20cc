"""A shell that does not read slows the client; it does not grow the worker's memory.

The client types as fast as it can into a terminal whose shell is busy
(``sleep``, the terminal in raw mode), far more than any buffer on the way holds. With backpressure
the client's own sends stall within a few megabytes, and the worker's
resident memory stays near where it was; without it, the worker held
everything typed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from rap.v1 import session_pb2
from rap_common import frames
from tests.e2e.cluster import Cluster, cluster, states
from tests.support.processes import WorkerProcess
from tests.support.sshd import Sshd

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TYPED = 128 << 20
CHUNK = 32 << 10


@pytest.fixture(scope="module")
def plane(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(postgres_url, tmp_path_factory.mktemp("backpressure"), None) as c:
        yield c


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_typing_into_a_shell_that_does_not_read_slows_the_client_not_the_workers_memory(
    plane: Cluster, sshd: Sshd
) -> None:
    worker: WorkerProcess = plane.enroll_worker("pressed")
    assert worker.process is not None
    session = plane.start(plane.ssh_resource(sshd))
    assert plane.wait_state(session.id, states("active", "failed")).state == session_pb2.SESSION_STATE_ACTIVE
    attachment = plane.admin.sessions.AttachSession(
        session_pb2.AttachSessionRequest(session_id=session.id)
    ).attachment
    direct = attachment.candidates[0]

    async def go() -> tuple[int, float, float]:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(
                direct.url,
                headers={"Authorization": f"Bearer {attachment.data_plane_token}"},
                protocols=(frames.SUBPROTOCOL,),
                ssl=ssl.create_default_context(cadata=direct.ca_bundle_pem),
            )
            # A program that reads nothing, with the terminal in raw mode: in canonical mode
            # the kernel drops what overflows a line, and nothing would ever push back.
            await ws.send_bytes(frames.terminal(b"stty raw -echo; sleep 600\n"))
            before = _rss_mib(worker.process.pid)  # type: ignore[union-attr]
            sent = 0
            chunk = frames.terminal(b"a" * CHUNK)

            async def type_all() -> None:
                nonlocal sent
                while sent < TYPED:
                    await ws.send_bytes(chunk)
                    sent += CHUNK

            # Bounded: with backpressure the sends stall long before all is typed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(type_all(), 20)
            after = _rss_mib(worker.process.pid)  # type: ignore[union-attr]
        await asyncio.sleep(0.25)  # aiohttp's graceful TLS shutdown
        return sent, before, after

    sent, before, after = asyncio.run(go())
    assert sent < TYPED, "the client was never slowed"
    assert after - before < 48, f"the worker grew from {before:.0f} to {after:.0f} MiB"
