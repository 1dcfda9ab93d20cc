"""``rap-worker enroll`` and ``rap-worker run``.

The enrollment token is read from ``RAP_ENROLLMENT_TOKEN`` or a file, never
from the command line, where every user of the host could read it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from rap_common.errors import ConfigError
from rap_common.identity import ROLE_WORKER, StateDir, enroll_state_dir
from rap_common.logging import configure_logging
from rap_worker.agent import PROTOCOLS, Agent, AgentConfig, WorkerRevoked

log = logging.getLogger("rap_worker")


def _enroll(args: argparse.Namespace) -> int:
    identity = enroll_state_dir(
        Path(args.state_dir),
        control=args.control,
        token_file=args.token_file,
        tls_ca_file=args.tls_ca_file,
        name=args.name,
        host_names=args.direct_host or [],
        role=ROLE_WORKER,
        force=args.force,
    )
    print(f"enrolled worker {identity.identity_id}; key and certificate are in {args.state_dir}")
    return 0


def _run(args: argparse.Namespace) -> int:
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise ConfigError(f"--protocols takes a comma-separated list of {', '.join(PROTOCOLS)}")
    config = AgentConfig(
        state_dir=Path(args.state_dir),
        targets=[t.strip() for t in args.control_worker.split(",") if t.strip()],
        protocols=protocols,
        capacity=args.capacity,
        direct_url=args.direct_url,
        direct_listen=args.direct_listen,
    )
    StateDir(config.state_dir).load(ROLE_WORKER)  # fail now, clearly, if not enrolled as a worker

    async def main() -> None:
        agent = Agent(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, agent.shutdown)
        await agent.run()

    try:
        asyncio.run(main())
    except WorkerRevoked:
        log.error("this worker was revoked; enroll it again with a new token")
        return 3
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rap-worker", description="RAP worker agent")
    parser.add_argument("--log-level", default=os.environ.get("RAP_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("enroll", help="enroll with a one-time token (RAP_ENROLLMENT_TOKEN)")
    p.add_argument("--control", required=True, help="the control plane's user-facing HOST:PORT")
    p.add_argument(
        "--tls-ca-file", help="CA bundle of the control plane's TLS certificate (plaintext without)"
    )
    p.add_argument("--token-file", help="a file holding the enrollment token")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--name", default="")
    p.add_argument("--direct-host", action="append", help="a host name or IP clients use for direct WSS")
    p.add_argument("--force", action="store_true")
    p.set_defaults(fn=_enroll)
    r = sub.add_parser("run", help="stream assignments and run sessions")
    r.add_argument(
        "--control-worker", required=True, help="worker-port HOST:PORT of each replica, comma-separated"
    )
    r.add_argument("--state-dir", required=True)
    r.add_argument("--protocols", default="ssh,tcp")
    r.add_argument("--capacity", type=int, default=16)
    r.add_argument(
        "--direct-listen", default="", help="HOST:PORT of the direct data plane (WSS); none without"
    )
    r.add_argument(
        "--direct-url", default="", help="the wss:// URL clients use (default: from --direct-listen)"
    )
    r.set_defaults(fn=_run)
    args = parser.parse_args(argv)
    configure_logging(args.log_level.upper())
    try:
        code: int = args.fn(args)
        return code
    except ConfigError as exc:
        print(f"rap-worker: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        print(f"rap-worker: the control plane refused: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
