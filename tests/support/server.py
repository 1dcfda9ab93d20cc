"""A control-plane server running in a background thread, for tests.

The server gets its own event loop in its own thread, so tests drive it
with ordinary synchronous gRPC clients over real loopback sockets, which
also lets Hypothesis run property tests against it.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import grpc

from rap_control.config import Settings
from rap_control.db.engine import Database
from rap_control.keys.provider import KeyProvider
from rap_control.plane import Plane, build_plane
from rap_control.server import build_server, build_worker_server, register_keys


@dataclass
class ServerThread:
    settings: Settings
    db: Database
    provider: KeyProvider
    ca_pem: bytes | None = None
    register: bool = True
    # Also run the worker-facing mTLS listener (its port and the platform CA bundle).
    workers: bool = False
    worker_port: int = 0
    platform_ca_pem: str = ""
    port: int = 0
    plane: Plane | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None
    _thread: threading.Thread | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self._thread = threading.Thread(target=self._run, name="rap-test-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the test server did not start within 30 s")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.register:
            await register_keys(self.db, self.provider)
        self.plane = build_plane(self.settings, self.db, self.provider)
        server, self.port = await build_server(self.settings, self.db, self.provider, self.plane)
        servers = [server]
        if self.workers:
            worker_server, self.worker_port, self.platform_ca_pem = await build_worker_server(
                self.settings, self.db, self.provider, self.plane
            )
            servers.append(worker_server)
        await self.plane.start()
        for s in servers:
            await s.start()
        self._ready.set()
        await self._stop.wait()
        await asyncio.gather(*(s.stop(grace=1) for s in servers))
        await self.plane.close()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def channel(self) -> grpc.Channel:
        """A new client channel to this server (TLS when the server has it)."""
        if self.ca_pem is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=self.ca_pem)
            # The certificate names "localhost"; connect by IP, check the name.
            return grpc.secure_channel(
                self.target, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
            )
        return grpc.insecure_channel(self.target)
