"""The terminal and clipboard channels: a PTY shell on the session's SSH connection.

Clipboard text from the client is pasted into the terminal (bracketed
paste); text the target puts on the clipboard (an OSC 52 sequence in its
output) goes to the client as a ClipboardText frame. Each direction is
allowed by the resource's policy (metadata ``rap_clipboard``:
``client_to_target``, ``target_to_client``, ``max_bytes``), and an OSC 52
sequence is always cut out of the terminal stream, so that a client's
terminal emulator cannot be used to get around that policy.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
from dataclasses import dataclass
from typing import Any

import asyncssh

from rap.v1 import dataplane_pb2
from rap_common import frames
from rap_worker.adapters.ssh import SshConnection
from rap_worker.dataplane import Bound

READ_SIZE = 32 * 1024
_OSC52 = re.compile(rb"\x1b\]52;[a-z0-9]*;([A-Za-z0-9+/=]*)(?:\x07|\x1b\\\\)")
# A started OSC sequence at the end of a chunk is held back until it completes.
_PARTIAL = re.compile(rb"\x1b(\](5(2(;[a-z0-9]*(;[A-Za-z0-9+/=]*)?)?)?)?)?$")
_MAX_HELD = 1 << 20


@dataclass(frozen=True)
class ClipboardPolicy:
    client_to_target: bool = True
    target_to_client: bool = True
    max_bytes: int = 64 * 1024

    @classmethod
    def of(cls, metadata: dict[str, Any]) -> ClipboardPolicy:
        raw = metadata.get("rap_clipboard")
        if not isinstance(raw, dict):
            return cls()
        size = raw.get("max_bytes", cls.max_bytes)
        return cls(
            client_to_target=raw.get("client_to_target", True) is True,
            target_to_client=raw.get("target_to_client", True) is True,
            max_bytes=int(size)
            if isinstance(size, int | float) and 0 < size <= 10 * 1024 * 1024
            else cls.max_bytes,
        )


def _error(reason: str, message: str) -> bytes:
    return frames.control(dataplane_pb2.CONTROL_KIND_ERROR, reason, message)


class Terminal:
    """One PTY per bound connection, serving the terminal and clipboard frames."""

    @classmethod
    def of(cls, bound: Bound) -> Terminal:
        terminal: Terminal = bound.shared.setdefault("terminal", cls(bound))
        return terminal

    def __init__(self, bound: Bound) -> None:
        self._bound = bound
        self._process: Any = None
        self._pump: asyncio.Task[None] | None = None
        self._policy = ClipboardPolicy.of(bound.session.metadata)
        self._allowed = set(bound.claims.get("ch", []))
        self._held = b""

    async def start(self) -> None:
        connection = self._bound.session.connection
        if not isinstance(connection, SshConnection):
            await self._bound.socket.send_bytes(_error("terminal_unavailable", "not an SSH session"))
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
                await self._output(data)
        except (asyncssh.Error, ConnectionError):
            pass
        await self._bound.socket.send_bytes(
            frames.control(dataplane_pb2.CONTROL_KIND_CLOSE, "terminal_closed")
        )

    async def _output(self, data: bytes) -> None:
        data = self._held + data
        partial = _PARTIAL.search(data)
        self._held = b""
        if partial and partial.start() < len(data) and len(data) - partial.start() < _MAX_HELD:
            data, self._held = data[: partial.start()], data[partial.start() :]
        out = bytearray()
        position = 0
        for match in _OSC52.finditer(data):
            out += data[position : match.start()]
            position = match.end()
            await self._copied(match.group(1))
        out += data[position:]
        if out and "terminal" in self._allowed:
            await self._bound.socket.send_bytes(frames.terminal(bytes(out)))

    async def _copied(self, encoded: bytes) -> None:
        """The target put text on the clipboard."""
        if "clipboard" not in self._allowed or not self._policy.target_to_client:
            await self._bound.socket.send_bytes(
                _error("clipboard_direction_forbidden", "copying from the target is not allowed here")
            )
            return
        try:
            text = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return
        if len(text) > self._policy.max_bytes:
            await self._bound.socket.send_bytes(
                _error("clipboard_too_large", f"clipboard text over {self._policy.max_bytes} bytes")
            )
            return
        await self._bound.socket.send_bytes(
            frames.encode(
                dataplane_pb2.DataPlaneFrame(
                    clipboard_text=dataplane_pb2.ClipboardText(
                        direction=dataplane_pb2.CLIPBOARD_DIRECTION_TARGET_TO_CLIENT,
                        text=text.decode(errors="replace"),
                    )
                )
            )
        )

    async def on_frame(self, frame: dataplane_pb2.DataPlaneFrame) -> None:
        if self._process is None:
            return
        if frame.HasField("terminal_data"):
            self._process.stdin.write(frame.terminal_data.data)
            # Backpressure: while the target does not read, this waits, the connection's
            # reader stops reading the client, and the client is slowed, instead of the
            # worker buffering what it types without bound.
            await self._process.stdin.drain()
        elif frame.HasField("terminal_resize"):
            size = frame.terminal_resize
            if 0 < size.columns <= 1000 and 0 < size.rows <= 1000:
                self._process.change_terminal_size(size.columns, size.rows)
        elif frame.HasField("clipboard_text"):
            await self._paste(frame.clipboard_text)

    async def _paste(self, clip: dataplane_pb2.ClipboardText) -> None:
        if (
            clip.direction != dataplane_pb2.CLIPBOARD_DIRECTION_CLIENT_TO_TARGET
            or not self._policy.client_to_target
        ):
            await self._bound.socket.send_bytes(
                _error("clipboard_direction_forbidden", "pasting into the target is not allowed here")
            )
            return
        data = clip.text.encode()
        if len(data) > self._policy.max_bytes:
            await self._bound.socket.send_bytes(
                _error("clipboard_too_large", f"clipboard text over {self._policy.max_bytes} bytes")
            )
            return
        # Bracketed paste: the shell takes it as pasted text, not typed keys.
        self._process.stdin.write(b"\x1b[200~" + data.replace(b"\x1b", b"") + b"\x1b[201~")
        await self._process.stdin.drain()

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._process is not None:
            self._process.close()
