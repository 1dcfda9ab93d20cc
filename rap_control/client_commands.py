"""``rapctl ssh`` and ``rapctl upload``: user commands through the SDK (rap_client).

They call the control plane's API as a user: ``RAP_ADDRESS`` (default
127.0.0.1:50051), ``RAP_TOKEN`` (an API token), ``RAP_TLS_CA_FILE`` when the
API has TLS. The SDK takes no data-plane endpoint it cannot verify, unless
``--smoke-insecure`` asks it to in development (refused with
``APP_ENV=production`` or ``--production``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import termios
import tty
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from rap_client import DataConnection, RapClient
from rap_client.client import SessionHandle, reason


def _client(args: argparse.Namespace) -> RapClient:
    token = os.environ.get("RAP_TOKEN", "")
    if not token:
        raise SystemExit("rapctl: set RAP_TOKEN to your API token")
    ca_file = os.environ.get("RAP_TLS_CA_FILE")
    production = args.production or os.environ.get("APP_ENV", "").lower() == "production"
    if production and args.smoke_insecure:
        raise SystemExit("rapctl: --smoke-insecure is for development; it cannot be used in production")
    return RapClient(
        os.environ.get("RAP_ADDRESS", "127.0.0.1:50051"),
        token,
        tls_ca_pem=Path(ca_file).read_bytes() if ca_file else None,
        production=production,
        allow_smoke_insecure=args.smoke_insecure,
    )


@contextlib.asynccontextmanager
async def _connected(rap: RapClient, resource: str) -> AsyncIterator[tuple[SessionHandle, DataConnection]]:
    found = await rap.find_resource(resource)
    session = await rap.start_session(found.id)
    try:
        await session.wait_active()
        connection = await session.connect()
        try:
            yield session, connection
        finally:
            await connection.close()
    finally:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await rap.terminate_session(session.id, "client_exit")


async def _ssh(args: argparse.Namespace) -> int:
    async with _client(args) as rap, _connected(rap, args.resource) as (_, connection):
        interactive = sys.stdin.isatty()
        saved = termios.tcgetattr(sys.stdin) if interactive else None
        if interactive:
            tty.setraw(sys.stdin.fileno())
            size = shutil.get_terminal_size()
            await connection.resize(size.columns, size.lines)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def keys() -> None:
            while data := await reader.read(4096):
                await connection.write(data)

        typing = asyncio.create_task(keys())
        try:
            while output := await connection.read():
                sys.stdout.buffer.write(output)
                sys.stdout.buffer.flush()
        finally:
            typing.cancel()
            if saved is not None:
                termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)
    return 0


async def _upload(args: argparse.Namespace) -> int:
    path = Path(args.file)
    async with _client(args) as rap, _connected(rap, args.resource) as (_, connection):
        result = await connection.upload(path, args.name)
    if not result.ok:
        print(f"rapctl: the upload was refused: {result.reason}", file=sys.stderr)
        return 1
    print(result.path)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.command == "upload" and not Path(args.file).is_file():
        print(f"rapctl: {args.file} is not a file", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_ssh(args) if args.command == "ssh" else _upload(args))
    except grpc.aio.AioRpcError as exc:
        print(f"rapctl: {exc.code().name}: {exc.details()} ({reason(exc)})", file=sys.stderr)
        return 1
    except (LookupError, RuntimeError, TimeoutError) as exc:
        print(f"rapctl: {exc}", file=sys.stderr)
        return 1


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ssh = sub.add_parser("ssh", help="an interactive terminal on a resource, through RAP")
    ssh.add_argument("resource", help="the resource's name or id")
    ssh.add_argument("--production", action="store_true", help="use only data-plane endpoints that verify")
    ssh.add_argument(
        "--smoke-insecure", action="store_true", help="development: accept an unverified smoke-only endpoint"
    )
    up = sub.add_parser("upload", help="upload a file into RAP_Transfers on a resource")
    up.add_argument("resource", help="the resource's name or id")
    up.add_argument("file")
    up.add_argument("--name", help="the name on the target (default: the file's)")
    up.add_argument("--production", action="store_true", help="use only data-plane endpoints that verify")
    up.add_argument(
        "--smoke-insecure", action="store_true", help="development: accept an unverified smoke-only endpoint"
    )
