"""Protocol adapters: reach a session's target with the session's credential."""

from __future__ import annotations

from typing import Protocol


class AdapterError(Exception):
    """The target could not be reached; ``reason`` is a code for the control plane."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Connection(Protocol):
    """A live connection to a session's target."""

    async def close(self) -> None: ...


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (the control plane always sends a port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
