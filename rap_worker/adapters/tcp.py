"""TCP tunnel adapter: no credentials; the session holds a connection to the target."""

from __future__ import annotations

import asyncio
import contextlib

from rap_worker.adapters import AdapterError, split_address

CONNECT_TIMEOUT = 10.0


class TcpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def connect(address: str) -> TcpConnection:
    host, port = split_address(address)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise AdapterError(
            "target_unreachable", f"cannot reach {host}:{port}: {type(exc).__name__}"
        ) from None
    return TcpConnection(reader, writer)
