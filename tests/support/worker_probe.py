"""The real worker agent, plus a probe the end-to-end tests read.

It runs ``rap_worker.agent.Agent`` exactly as ``rap-worker run`` does; the
only addition is the agent's ``on_active`` hook, through which the probe
runs one command over each active SSH session (the way the data plane's
terminal will use the same connection) and appends its output to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from rap_common.logging import configure_logging
from rap_worker.adapters import Connection
from rap_worker.adapters.ssh import SshConnection
from rap_worker.agent import Agent, AgentConfig, WorkerRevoked


def _append(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--control-worker", required=True)
    parser.add_argument("--probe-command", default="whoami")
    parser.add_argument("--out", required=True)
    parser.add_argument("--direct-listen", default="")
    args = parser.parse_args()
    configure_logging("DEBUG")
    out = Path(args.out)

    async def on_active(session_id: str, connection: Connection) -> None:
        output = await connection.run(args.probe_command) if isinstance(connection, SshConnection) else ""
        line = json.dumps({"session_id": session_id, "output": output}) + "\n"
        await asyncio.to_thread(_append, out, line)

    async def run() -> None:
        agent = Agent(
            AgentConfig(
                Path(args.state_dir),
                args.control_worker.split(","),
                ["ssh", "tcp"],
                64,
                direct_listen=args.direct_listen,
                refusal_report_seconds=float(os.environ.get("RAP_TEST_REFUSAL_REPORT_SECONDS", "60")),
            ),
            on_active=on_active,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, agent.shutdown)
        await agent.run()

    try:
        asyncio.run(run())
    except WorkerRevoked:
        sys.exit(3)  # as `rap-worker run` does


if __name__ == "__main__":
    main()
