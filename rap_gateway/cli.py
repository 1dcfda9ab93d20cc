"""``rap-gateway enroll`` and ``rap-gateway run``: the WSS edge, with a gateway identity.

    RAP_ENROLLMENT_TOKEN=$(rapctl gateways token --organization ORG --name gw1) \\
        rap-gateway enroll --control 10.0.0.1:50051 --state-dir /var/lib/rap-gateway
    rap-gateway run --listen 0.0.0.0:8443 \\
        --tls-cert-file gw.pem --tls-key-file gw-key.pem \\
        --state-dir /var/lib/rap-gateway --control-worker 10.0.0.1:50052

The gateway's identity is of the gateway role (``rap://gateway/<id>``): it
reads the published signing keys and presents itself to workers' direct
endpoints, and nothing else. The control plane refuses it a Connect stream,
a session and a secret. It needs no API token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import grpc

from rap_common.errors import ConfigError
from rap_common.identity import (
    CA,
    CERT,
    KEY,
    ROLE_GATEWAY,
    StateDir,
    enroll_state_dir,
    fetch_data_plane_keys,
    platform_channel,
    renew,
    seconds_until_renewal,
)
from rap_common.logging import configure_logging
from rap_gateway.relay import FetchJwks, Gateway

log = logging.getLogger("rap_gateway")


def _enroll(args: argparse.Namespace) -> int:
    identity = enroll_state_dir(
        Path(args.state_dir),
        control=args.control,
        token_file=args.token_file,
        tls_ca_file=args.tls_ca_file,
        name=args.name,
        host_names=[],
        role=ROLE_GATEWAY,
        force=args.force,
    )
    print(f"enrolled gateway {identity.identity_id}; key and certificate are in {args.state_dir}")
    return 0


class _ControlPlane:
    """The gateway's mTLS link to the control plane's worker port: keys and renewal."""

    def __init__(self, targets: list[str], state: StateDir) -> None:
        self._targets = targets
        self._state = state
        self._next = 0

    async def fetch_jwks(self) -> dict[str, dict[str, str]]:
        """The published keys, from the first replica that answers."""
        last: grpc.aio.AioRpcError | None = None
        for _ in range(len(self._targets)):
            target = self._targets[self._next % len(self._targets)]
            identity = await asyncio.to_thread(self._state.load, ROLE_GATEWAY)
            try:
                async with platform_channel(target, identity) as channel:
                    return await fetch_data_plane_keys(channel)
            except grpc.aio.AioRpcError as exc:
                last = exc
                self._next += 1
        assert last is not None
        raise last

    async def renew_forever(self, upstream: ssl.SSLContext) -> None:
        """Renew the certificate when a third of its life is left; new relays use the new one."""
        while True:
            identity = await asyncio.to_thread(self._state.load, ROLE_GATEWAY)
            wait = seconds_until_renewal(identity, datetime.now(UTC))
            if wait > 0:
                await asyncio.sleep(min(wait, 3600))
                continue
            target = self._targets[self._next % len(self._targets)]
            try:
                async with platform_channel(target, identity) as channel:
                    renewed = await renew(channel, identity)
            except grpc.aio.AioRpcError as exc:
                log.warning("certificate renewal failed (%s); retrying in 30 s", exc.code().name)
                self._next += 1
                await asyncio.sleep(30)
                continue
            await asyncio.to_thread(self._state.save, renewed)
            await asyncio.to_thread(upstream.load_cert_chain, self._state.path / CERT, self._state.path / KEY)
            log.info("renewed the gateway certificate")


def _run(args: argparse.Namespace) -> int:
    state = StateDir(Path(args.state_dir))
    state.load(ROLE_GATEWAY)  # a clear error when not enrolled as a gateway
    upstream = ssl.create_default_context(cafile=str(state.path / CA))
    upstream.load_cert_chain(state.path / CERT, state.path / KEY)
    edge = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    edge.load_cert_chain(args.tls_cert_file, args.tls_key_file)
    host, _, port = args.listen.rpartition(":")
    targets = [t.strip() for t in args.control_worker.split(",") if t.strip()]
    if not targets:
        raise ConfigError("--control-worker takes the worker port HOST:PORT of each replica, comma-separated")
    control = _ControlPlane(targets, state)
    fetch: FetchJwks = control.fetch_jwks

    async def main() -> None:
        gateway = Gateway(fetch, upstream)
        bound = await gateway.start(host, int(port), edge)
        log.info("gateway serving on wss://%s:%d/v1/connect", host, bound)
        renewals = asyncio.create_task(control.renew_forever(upstream))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        renewals.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewals
        await gateway.stop()

    asyncio.run(main())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rap-gateway", description="RAP data-plane gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("enroll", help="enroll with a one-time gateway token (RAP_ENROLLMENT_TOKEN)")
    e.add_argument("--control", required=True, help="the control plane's user-facing HOST:PORT")
    e.add_argument(
        "--tls-ca-file", help="CA bundle of the control plane's TLS certificate (plaintext without)"
    )
    e.add_argument("--token-file", help="a file holding the enrollment token")
    e.add_argument("--state-dir", required=True)
    e.add_argument("--name", default="")
    e.add_argument("--force", action="store_true")
    e.set_defaults(fn=_enroll)
    run = sub.add_parser("run", help="serve client WSS and relay to workers")
    run.add_argument("--listen", required=True, help="HOST:PORT for client WSS")
    run.add_argument("--tls-cert-file", required=True)
    run.add_argument("--tls-key-file", required=True)
    run.add_argument("--state-dir", required=True, help="the gateway's identity (rap-gateway enroll)")
    run.add_argument(
        "--control-worker",
        required=True,
        help="worker-port (mTLS) HOST:PORT of each control-plane replica, comma-separated",
    )
    run.set_defaults(fn=_run)
    args = parser.parse_args(argv)
    configure_logging(os.environ.get("RAP_LOG_LEVEL", "INFO").upper())
    try:
        code: int = args.fn(args)
        return code
    except ConfigError as exc:
        print(f"rap-gateway: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        print(f"rap-gateway: the control plane refused: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
