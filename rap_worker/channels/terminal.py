"""The terminal channel: a PTY shell on the session's SSH connection, relayed as frames."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncssh

from rap.v1 import dataplane_pb2
from rap_common import frames
from rap_worker.adapters.ssh import SshConnection
from rap_worker.dataplane import Bound

READ_SIZE = 32 * 1024


class Terminal:
    def __init__(self, bound: Bound) -> None:
        self._bound = bound
        self._process: Any = None
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        connection = self._bound.session.connection
        if not isinstance(connection, SshConnection):
            await self._bound.socket.send_bytes(
                frames.control(dataplane_pb2.CONTROL_KIND_ERROR, "terminal_unavailable", "not an SSH session")
            )
            return
        self._process = await connection.connection.create_process(
            term_type="xterm-256color", term_size=(80, 24), encoding=None
        )
        self._pump = asyncio.create_task(self._relay())

    async def _relay(self) -> None:
        try:
            while True:
                data = await self._process.stdout.read(READ_SIZE)
                if not data:
                    break
                await self._bound.socket.send_bytes(frames.terminal(data))
        except (asyncssh.Error, ConnectionError):
            pass
        await self._bound.socket.send_bytes(
            frames.control(dataplane_pb2.CONTROL_KIND_CLOSE, "terminal_closed")
        )

    async def on_frame(self, frame: dataplane_pb2.DataPlaneFrame) -> None:
        if self._process is None:
            return
        if frame.HasField("terminal_data"):
            self._process.stdin.write(frame.terminal_data.data)
        elif frame.HasField("terminal_resize"):
            size = frame.terminal_resize
            if 0 < size.columns <= 1000 and 0 < size.rows <= 1000:
                self._process.change_terminal_size(size.columns, size.rows)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._process is not None:
            self._process.close()
