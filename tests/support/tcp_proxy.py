"""A TCP proxy in front of a real server, that a test can cut and restore.

Cutting closes every proxied connection and the listening socket (new
connections are refused), which is how an unreachable database looks to a
client; restoring listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url


@dataclass
class Upstream:
    host: str | None = None
    port: int | None = None
    unix_path: str | None = None

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.unix_path:
            return await asyncio.open_unix_connection(self.unix_path)
        return await asyncio.open_connection(self.host, self.port)


def postgres_upstream(url: str) -> Upstream:
    """Where a PostgreSQL URL points: a TCP address, or a unix socket (host=/dir in the query)."""
    parsed = make_url(url)
    socket_dir = parsed.query.get("host")
    if isinstance(socket_dir, tuple):
        socket_dir = socket_dir[0]
    port = parsed.port or 5432
    if socket_dir and str(socket_dir).startswith("/"):
        return Upstream(unix_path=f"{socket_dir}/.s.PGSQL.{port}")
    return Upstream(host=parsed.host or "127.0.0.1", port=port)


def proxied_postgres_url(url: str, port: int) -> str:
    parsed = make_url(url)
    query = {k: v for k, v in parsed.query.items() if k != "host"}
    return parsed.set(host="127.0.0.1", port=port, query=query).render_as_string(hide_password=False)


@dataclass
class TcpProxy:
    upstream: Upstream
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _thread: threading.Thread | None = None

    def start(self) -> TcpProxy:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._listen())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="tcp-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self.upstream.open()
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        self._writers -= {writer, up_writer}

    def _call(self, coro_fn: object) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro_fn, self._loop).result(10)  # type: ignore[arg-type]

    def cut(self) -> None:
        """Refuse new connections and drop every open one."""

        async def cut() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._call(cut())

    async def _drain(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def restore(self) -> None:
        self._call(self._listen())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.cut()
        with contextlib.suppress(Exception):
            self._call(self._drain())
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
