"""The file-upload channel: client to target only, into ``RAP_Transfers`` over SFTP.

A file lands as ``~/RAP_Transfers/<name>`` on the target, nowhere else:
the name is one plain file name (no separators, no ``..``, no NUL or control
characters, not absolute), the folder itself must not be a symlink, an
existing entry of that name is never followed or replaced, the size is
capped (metadata ``rap_upload_max_bytes``, default 100 MiB), and the data
is written to a temporary name first and renamed only when its size and
SHA-256 match what the client announced.

A temporary file is a hidden ``.<name>.<upload id>.part``, never a complete
name. One left behind by a worker that died mid-upload is removed the next
time a session uploads to the same folder, once it is older than
``STALE_PART_SECONDS`` (a younger one may be another session's upload in
progress: its writes keep it young).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import stat
import time
import unicodedata
from typing import Any

import asyncssh

from rap.v1 import dataplane_pb2
from rap_common import frames
from rap_worker.adapters.ssh import SshConnection
from rap_worker.dataplane import Bound

log = logging.getLogger(__name__)

FOLDER = "RAP_Transfers"
DEFAULT_MAX = 100 * 1024 * 1024
WRITE_WINDOW = 16
STALE_PART_SECONDS = 300
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PART = re.compile(r"\..+\.[0-9A-Za-z_-]{1,16}\.part")


class UploadRefused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def safe_name(raw: str) -> str:
    """The file name, if it is one plain name; UploadRefused otherwise."""
    name = unicodedata.normalize("NFC", raw)
    if not name or len(name.encode()) > 255:
        raise UploadRefused("bad_file_name", "the file name must be 1 to 255 bytes")
    if "\x00" in name or any(unicodedata.category(c).startswith("C") for c in name):
        raise UploadRefused("bad_file_name", "the file name holds NUL or control characters")
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith(".."):
        raise UploadRefused("bad_file_name", "the file name must not name a path (no separators, no ..)")
    return name


class FileUpload:
    def __init__(self, bound: Bound) -> None:
        self._bound = bound
        raw = bound.session.metadata.get("rap_upload_max_bytes", DEFAULT_MAX)
        self._max = int(raw) if isinstance(raw, int | float) and raw > 0 else DEFAULT_MAX
        self._sftp: Any = None
        self._file: Any = None
        self._upload: dataplane_pb2.FileUploadBegin | None = None
        self._digest = hashlib.sha256()
        self._written = 0
        self._temp = ""
        self._final = ""
        self._refused: set[str] = set()
        self._pending: list[asyncio.Future[int]] = []
        self._swept = False

    async def start(self) -> None:
        return None

    async def on_frame(self, frame: dataplane_pb2.DataPlaneFrame) -> None:
        upload_id = ""
        kind = frame.WhichOneof("body")
        # The rest of an upload already refused: its one result was sent.
        if (
            kind in ("file_upload_chunk", "file_upload_end")
            and getattr(frame, kind).upload_id in self._refused
        ):
            return
        try:
            if frame.HasField("file_upload_begin"):
                upload_id = frame.file_upload_begin.upload_id
                await self._begin(frame.file_upload_begin)
            elif frame.HasField("file_upload_chunk"):
                upload_id = frame.file_upload_chunk.upload_id
                await self._chunk(frame.file_upload_chunk)
            elif frame.HasField("file_upload_end"):
                upload_id = frame.file_upload_end.upload_id
                await self._end(frame.file_upload_end)
        except UploadRefused as refused:
            await self._refuse(upload_id, refused.reason)
        except (asyncssh.Error, OSError) as exc:
            log.warning("upload %s failed on the target: %s", upload_id[:16], type(exc).__name__)
            await self._refuse(upload_id, "target_write_failed")

    async def _refuse(self, upload_id: str, reason: str) -> None:
        await self._abort()
        self._refused.add(upload_id)
        if len(self._refused) > 1000:
            self._refused.pop()
        await self._result(upload_id, False, reason)

    async def _begin(self, begin: dataplane_pb2.FileUploadBegin) -> None:
        if self._upload is not None:
            raise UploadRefused("upload_in_progress", "one upload at a time")
        name = safe_name(begin.file_name)
        if begin.size > self._max:
            raise UploadRefused("file_too_large", f"the file is over {self._max} bytes")
        connection = self._bound.session.connection
        if not isinstance(connection, SshConnection):
            raise UploadRefused("upload_unavailable", "uploads need an SSH session")
        if self._sftp is None:
            self._sftp = await connection.connection.start_sftp_client()
        await self._folder()
        self._final = f"{FOLDER}/{name}"
        if await self._exists(self._final):
            raise UploadRefused(
                "file_exists", f"{self._final} exists already (or is a link); it is never replaced"
            )
        self._temp = f"{FOLDER}/.{name}.{begin.upload_id[:16] or 'upload'}.part"
        if await self._exists(self._temp):
            raise UploadRefused("file_exists", "a partial upload of that name exists")
        flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
        self._file = await self._sftp.open(
            self._temp, flags, asyncssh.SFTPAttrs(permissions=0o600), encoding=None
        )
        self._upload, self._digest, self._written = begin, hashlib.sha256(), 0

    async def _folder(self) -> None:
        try:
            attrs = await self._sftp.lstat(FOLDER)
        except asyncssh.SFTPNoSuchFile:
            await self._sftp.mkdir(FOLDER, asyncssh.SFTPAttrs(permissions=0o700))
            return
        if attrs.permissions is None or not stat.S_ISDIR(attrs.permissions):
            raise UploadRefused(
                "bad_transfer_folder", f"{FOLDER} on the target is not a plain folder (a link?)"
            )
        if not self._swept:
            self._swept = True
            await self._sweep_stale_parts()

    async def _sweep_stale_parts(self) -> None:
        """Remove the partial files of uploads that died with their worker."""
        now = time.time()
        for entry in await self._sftp.readdir(FOLDER):
            attrs = entry.attrs
            if (
                _PART.fullmatch(entry.filename)
                and attrs.permissions is not None
                and stat.S_ISREG(attrs.permissions)  # readdir does not follow links: a link is left alone
                and attrs.mtime is not None
                and now - attrs.mtime > STALE_PART_SECONDS
            ):
                with contextlib.suppress(asyncssh.Error, OSError):
                    await self._sftp.remove(f"{FOLDER}/{entry.filename}")
                    log.info("removed a stale partial upload from %s", FOLDER)

    async def _exists(self, path: str) -> bool:
        try:
            await self._sftp.lstat(path)
        except asyncssh.SFTPNoSuchFile:
            return False
        return True

    async def _chunk(self, chunk: dataplane_pb2.FileUploadChunk) -> None:
        if self._upload is None or chunk.upload_id != self._upload.upload_id:
            raise UploadRefused("no_such_upload", "begin the upload first")
        offset = self._written
        self._written += len(chunk.data)
        if self._written > self._upload.size or self._written > self._max:
            raise UploadRefused("file_too_large", "more data than announced")
        self._digest.update(chunk.data)
        # Writes at explicit offsets, a window of them in flight: SFTP round trips
        # overlap instead of adding up.
        self._pending.append(asyncio.ensure_future(self._file.write(chunk.data, offset)))
        if len(self._pending) >= WRITE_WINDOW:
            await self._pending.pop(0)

    async def _end(self, end: dataplane_pb2.FileUploadEnd) -> None:
        if self._upload is None or end.upload_id != self._upload.upload_id:
            raise UploadRefused("no_such_upload", "begin the upload first")
        await self._drain()
        if self._written != self._upload.size:
            raise UploadRefused("size_mismatch", f"announced {self._upload.size} bytes, got {self._written}")
        if not _HEX64.fullmatch(end.sha256.lower()) or self._digest.hexdigest() != end.sha256.lower():
            raise UploadRefused("sha256_mismatch", "the data does not match the announced SHA-256")
        await self._file.close()
        self._file = None
        await self._sftp.rename(self._temp, self._final)
        upload_id, self._upload = end.upload_id, None
        await self._result(upload_id, True, "", self._final)

    async def _drain(self) -> None:
        pending, self._pending = self._pending, []
        for write in pending:
            await write

    async def _abort(self) -> None:
        for write in self._pending:
            write.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        self._pending = []
        if self._file is not None:
            await self._file.close()
            self._file = None
        if self._upload is not None and self._sftp is not None and self._temp:
            with contextlib.suppress(asyncssh.Error, OSError):
                await self._sftp.remove(self._temp)
        self._upload = None

    async def _result(self, upload_id: str, ok: bool, reason: str, path: str = "") -> None:
        await self._bound.socket.send_bytes(
            frames.encode(
                dataplane_pb2.DataPlaneFrame(
                    file_upload_result=dataplane_pb2.FileUploadResult(
                        upload_id=upload_id, ok=ok, reason=reason, path=path
                    )
                )
            )
        )

    async def close(self) -> None:
        await self._abort()
        if self._sftp is not None:
            self._sftp.exit()
