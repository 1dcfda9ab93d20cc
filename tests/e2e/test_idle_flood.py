"""Idle and invalid connections cannot exhaust a worker's direct endpoint.

The worker runs with the usual open-file limit of 1,024 (soft and hard, so
it cannot raise it). A thousand connections from other loopback addresses
complete TLS and then say nothing, beside a stream of garbage; a valid
client still binds and runs a command, the idle connections are dropped by
the bind deadline and the caps, and the worker's log stays a few lines
long, without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator

import aiohttp
import pytest

from rap.v1 import session_pb2
from rap_common import frames
from rap_common.identity import CA
from tests.e2e.cluster import Cluster, cluster, states
from tests.support.processes import WorkerProcess
from tests.support.sshd import Sshd

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

IDLE = 1000
SOURCES = [f"127.0.0.{n}" for n in range(2, 10)]


@pytest.fixture(scope="module")
def plane(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(postgres_url, tmp_path_factory.mktemp("idle"), None) as c:
        yield c


@pytest.fixture(scope="module")
def worker(plane: Cluster) -> WorkerProcess:
    return plane.enroll_worker("crowded", nofile=1024)


Idle = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _idle(host: str, port: int, context: ssl.SSLContext, source: str) -> Idle | None:
    """A connection that completes TLS and then says nothing."""
    with contextlib.suppress(OSError, ssl.SSLError, asyncio.TimeoutError):
        return await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=context, local_addr=(source, 0), server_hostname="127.0.0.1"
            ),
            10,
        )
    return None


async def _dropped(connection: Idle) -> bool:
    """Whether the worker closes the connection (end of stream) within a minute."""
    reader, writer = connection
    try:
        return await asyncio.wait_for(reader.read(), 60) == b""
    except (OSError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    finally:
        writer.close()


async def _garbage(host: str, port: int, source: str) -> None:
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=(source, 0)), 5
        )
        writer.write(b"\x16\x03\x01garbage-not-tls" * 10)
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(100), 5)
        writer.close()


def test_a_valid_client_binds_through_a_flood_of_idle_and_invalid_connections(
    plane: Cluster, sshd: Sshd, worker: WorkerProcess
) -> None:
    session = plane.start(plane.ssh_resource(sshd))
    assert plane.wait_state(session.id, states("active", "failed")).state == session_pb2.SESSION_STATE_ACTIVE
    attachment = plane.admin.sessions.AttachSession(
        session_pb2.AttachSessionRequest(session_id=session.id)
    ).attachment
    direct = attachment.candidates[0]
    host, port = direct.url.removeprefix("wss://").split("/")[0].rsplit(":", 1)
    context = ssl.create_default_context(cadata=(worker.state_dir / CA).read_text())

    async def go() -> tuple[str, int, int]:
        """(terminal output, idle connections the worker dropped, idle connections opened)"""
        idle = await asyncio.gather(
            *(_idle(host, int(port), context, SOURCES[i % len(SOURCES)]) for i in range(IDLE))
        )
        garbage = asyncio.gather(*(_garbage(host, int(port), SOURCES[i % len(SOURCES)]) for i in range(200)))
        async with aiohttp.ClientSession() as http:
            ws = await asyncio.wait_for(
                http.ws_connect(
                    direct.url,
                    headers={"Authorization": f"Bearer {attachment.data_plane_token}"},
                    protocols=(frames.SUBPROTOCOL,),
                    ssl=ssl.create_default_context(cadata=direct.ca_bundle_pem),
                ),
                30,
            )
            await ws.send_bytes(frames.terminal(b"echo through-$((6*7))\n"))
            seen = b""
            while b"through-42" not in seen:
                message = await asyncio.wait_for(ws.receive(), 30)
                assert message.type == aiohttp.WSMsgType.BINARY, message
                frame = frames.decode(message.data)
                if frame.HasField("terminal_data"):
                    seen += frame.terminal_data.data
            await ws.close()
        await garbage
        opened = [c for c in idle if c is not None]
        # Every idle connection is dropped by the worker: by a cap at once, or at the deadline.
        dropped = await asyncio.gather(*(_dropped(c) for c in opened))
        return seen.decode(errors="replace"), sum(dropped), len(opened)

    output, dropped, opened = asyncio.run(go())
    assert "through-42" in output
    assert dropped == opened, f"{opened - dropped} idle connections outlived the bind deadline"
    text = worker.log.read_text(errors="replace")
    assert "Traceback" not in text
    assert text.count("\n") < 2000, "the worker's log stays short"
