"""``rap-gateway run``: the WSS edge, with a platform identity from ``rap-worker enroll``.

    RAP_GATEWAY_API_TOKEN=... rap-gateway run --listen 0.0.0.0:8443 \\
        --tls-cert-file gw.pem --tls-key-file gw-key.pem \\
        --state-dir /var/lib/rap-gateway --control 10.0.0.1:50051

The API token (of any user) is used only to read the published signing keys.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from rap.v1 import admin_pb2, admin_pb2_grpc
from rap_common.errors import ConfigError
from rap_common.logging import configure_logging
from rap_gateway.relay import FetchJwks, Gateway
from rap_worker.state import CA, CERT, KEY, StateDir

log = logging.getLogger("rap_gateway")


def _fetcher(target: str, token: str, ca_pem: bytes | None) -> FetchJwks:
    async def fetch() -> dict[str, dict[str, str]]:
        channel = (
            grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca_pem))
            if ca_pem
            else grpc.aio.insecure_channel(target)
        )
        async with channel:
            response = await admin_pb2_grpc.AdminServiceStub(channel).GetJwks(
                admin_pb2.GetJwksRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=15
            )
        return {
            k.kid: {"kid": k.kid, "kty": k.kty, "alg": k.alg, "use": k.use, "n": k.n, "e": k.e}
            for k in response.jwks.keys
        }

    return fetch


def _run(args: argparse.Namespace) -> int:
    token = os.environ.get("RAP_GATEWAY_API_TOKEN", "")
    if not token:
        raise ConfigError("set RAP_GATEWAY_API_TOKEN (an API token; it only reads the signing keys)")
    state = StateDir(Path(args.state_dir))
    state.load()  # a clear error when not enrolled
    upstream = ssl.create_default_context(cafile=str(state.path / CA))
    upstream.load_cert_chain(state.path / CERT, state.path / KEY)
    edge = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    edge.load_cert_chain(args.tls_cert_file, args.tls_key_file)
    host, _, port = args.listen.rpartition(":")
    ca = Path(args.control_tls_ca_file).read_bytes() if args.control_tls_ca_file else None

    async def main() -> None:
        gateway = Gateway(_fetcher(args.control, token, ca), upstream)
        bound = await gateway.start(host, int(port), edge)
        log.info("gateway serving on wss://%s:%d/v1/connect", host, bound)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await gateway.stop()

    asyncio.run(main())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rap-gateway", description="RAP data-plane gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--listen", required=True, help="HOST:PORT for client WSS")
    run.add_argument("--tls-cert-file", required=True)
    run.add_argument("--tls-key-file", required=True)
    run.add_argument("--state-dir", required=True, help="the gateway's platform identity (rap-worker enroll)")
    run.add_argument("--control", required=True, help="the control plane's user-facing HOST:PORT")
    run.add_argument(
        "--control-tls-ca-file", help="CA of the control plane's TLS certificate (plaintext without)"
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


if __name__ == "__main__":
    sys.exit(main())
