"""The data-plane connection of an attachment, and the choice of endpoint.

``choose_candidate`` takes a direct worker endpoint only when it can verify
it: with the platform CA bundle the candidate carries, or with the system's
trust store for ``public_ca``. A smoke-only candidate (development, no
verification at all) is taken only when the caller asked for it
(``allow_smoke_insecure``) and is not in production mode, and it says so in
the log; otherwise the gateway is used. The token travels in the Authorization
header, never in the URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from rap.v1 import dataplane_pb2, session_pb2
from rap_common import frames
from rap_common.errors import FailedPrecondition

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # well under frames.MAX_FRAME; fewer frames and SFTP writes


@dataclass(frozen=True)
class Chosen:
    url: str
    ssl: ssl.SSLContext | bool
    kind: str


def choose_candidate(
    attachment: session_pb2.Attachment, *, production: bool, allow_smoke_insecure: bool = False
) -> Chosen:
    """The first candidate this client can verify (see the module docstring)."""
    for candidate in attachment.candidates:
        if candidate.kind == session_pb2.CANDIDATE_KIND_DIRECT_WORKER:
            if candidate.smoke_only or candidate.trust_mode == session_pb2.TRUST_MODE_SMOKE_INSECURE:
                if production or not allow_smoke_insecure:
                    continue
                # Development smoke tests only, asked for by name: no verification at all.
                log.warning("connecting to %s WITHOUT verifying its certificate (smoke mode)", candidate.url)
                insecure = ssl.create_default_context()
                insecure.check_hostname = False
                insecure.verify_mode = ssl.CERT_NONE
                return Chosen(candidate.url, insecure, "direct_smoke_only")
            if candidate.trust_mode == session_pb2.TRUST_MODE_PLATFORM_CA:
                if not candidate.ca_bundle_pem:
                    continue  # nothing to verify it with
                return Chosen(
                    candidate.url, ssl.create_default_context(cadata=candidate.ca_bundle_pem), "direct"
                )
            if candidate.trust_mode == session_pb2.TRUST_MODE_PUBLIC_CA:
                return Chosen(candidate.url, ssl.create_default_context(), "direct")
        elif candidate.kind == session_pb2.CANDIDATE_KIND_GATEWAY:
            context = (
                ssl.create_default_context(cadata=candidate.ca_bundle_pem)
                if candidate.ca_bundle_pem
                else ssl.create_default_context()
            )
            return Chosen(candidate.url, context, "gateway")
    raise FailedPrecondition(
        "no data-plane endpoint this client can verify was offered", reason="no_candidate"
    )


class DataConnection:
    """One bound WSS connection: terminal, clipboard and upload over protobuf frames."""

    def __init__(
        self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, chosen: Chosen
    ) -> None:
        self._http = http
        self._ws = ws
        self.chosen = chosen
        self._terminal: asyncio.Queue[bytes] = asyncio.Queue()
        self._clipboard: asyncio.Queue[str] = asyncio.Queue()
        self._results: asyncio.Queue[dataplane_pb2.FileUploadResult] = asyncio.Queue()
        self._errors: asyncio.Queue[dataplane_pb2.ControlMessage] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())
        self.close_code: int | None = None

    @classmethod
    async def open(
        cls, attachment: session_pb2.Attachment, *, production: bool, allow_smoke_insecure: bool = False
    ) -> DataConnection:
        chosen = choose_candidate(
            attachment, production=production, allow_smoke_insecure=allow_smoke_insecure
        )
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(
                chosen.url,
                headers={"Authorization": f"Bearer {attachment.data_plane_token}"},
                protocols=(frames.SUBPROTOCOL,),
                ssl=chosen.ssl,
                max_msg_size=frames.MAX_FRAME,
            )
        except BaseException:
            await http.close()
            raise
        return cls(http, ws, chosen)

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                continue
            frame = frames.decode(message.data)
            body = frame.WhichOneof("body")
            if body == "terminal_data":
                self._terminal.put_nowait(frame.terminal_data.data)
            elif body == "clipboard_text":
                self._clipboard.put_nowait(frame.clipboard_text.text)
            elif body == "file_upload_result":
                self._results.put_nowait(frame.file_upload_result)
            elif body == "control" and frame.control.kind == dataplane_pb2.CONTROL_KIND_ERROR:
                self._errors.put_nowait(frame.control)
            elif body == "control" and frame.control.kind == dataplane_pb2.CONTROL_KIND_CLOSE:
                self._terminal.put_nowait(b"")  # the shell on the target ended
        self.close_code = self._ws.close_code
        self._terminal.put_nowait(b"")

    async def write(self, data: bytes) -> None:
        """Keystrokes to the terminal."""
        await self._ws.send_bytes(frames.terminal(data))

    async def read(self) -> bytes:
        """Terminal output; b"" once the shell or the connection has ended."""
        return await self._terminal.get()

    async def resize(self, columns: int, rows: int) -> None:
        await self._ws.send_bytes(
            frames.encode(
                dataplane_pb2.DataPlaneFrame(
                    terminal_resize=dataplane_pb2.TerminalResize(columns=columns, rows=rows)
                )
            )
        )

    async def send_clipboard(self, text: str) -> None:
        await self._ws.send_bytes(
            frames.encode(
                dataplane_pb2.DataPlaneFrame(
                    clipboard_text=dataplane_pb2.ClipboardText(
                        direction=dataplane_pb2.CLIPBOARD_DIRECTION_CLIENT_TO_TARGET, text=text
                    )
                )
            )
        )

    async def receive_clipboard(self) -> str:
        return await self._clipboard.get()

    async def next_error(self) -> dataplane_pb2.ControlMessage:
        """The next refusal the worker reported on this connection."""
        return await self._errors.get()

    async def upload(self, path: Path, name: str | None = None) -> dataplane_pb2.FileUploadResult:
        """Send a file into RAP_Transfers on the target; the result says where it landed."""
        upload_id = uuid.uuid4().hex
        size = (await asyncio.to_thread(path.stat)).st_size
        digest = hashlib.sha256()
        await self._ws.send_bytes(
            frames.encode(
                dataplane_pb2.DataPlaneFrame(
                    file_upload_begin=dataplane_pb2.FileUploadBegin(
                        upload_id=upload_id, file_name=name or path.name, size=size
                    )
                )
            )
        )
        f = await asyncio.to_thread(path.open, "rb")
        try:
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                digest.update(chunk)
                await self._ws.send_bytes(
                    frames.encode(
                        dataplane_pb2.DataPlaneFrame(
                            file_upload_chunk=dataplane_pb2.FileUploadChunk(upload_id=upload_id, data=chunk)
                        )
                    )
                )
        finally:
            f.close()
        await self._ws.send_bytes(
            frames.encode(
                dataplane_pb2.DataPlaneFrame(
                    file_upload_end=dataplane_pb2.FileUploadEnd(
                        upload_id=upload_id, sha256=digest.hexdigest()
                    )
                )
            )
        )
        while True:
            result = await self._results.get()
            if result.upload_id == upload_id:
                return result

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        await self._http.close()
        await asyncio.sleep(0.25)  # aiohttp: let TLS transports close
