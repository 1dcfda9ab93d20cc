"""Values the resource service exchanges."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Protocol(StrEnum):
    RDP = "rdp"
    VNC = "vnc"
    SSH = "ssh"
    TCP = "tcp"


DEFAULT_PORTS: dict[Protocol, int | None] = {
    Protocol.RDP: 3389,
    Protocol.VNC: 5900,
    Protocol.SSH: 22,
    Protocol.TCP: None,  # a TCP tunnel must name its port
}


@dataclass(frozen=True)
class ResourceSpec:
    """What a caller gives to create a resource (validated by the service)."""

    name: str
    protocol: Protocol
    address: str
    secret_ref: str | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ResourcePatch:
    """Fields to replace on update; None means "leave as it is"."""

    name: str | None = None
    address: str | None = None
    secret_ref: str | None = None
    clear_secret_ref: bool = False
    metadata: dict[str, Any] | None = None

    def changed_fields(self) -> list[str]:
        fields = [f for f in ("name", "address", "metadata") if getattr(self, f) is not None]
        if self.secret_ref is not None or self.clear_secret_ref:
            fields.append("secret_ref")
        return sorted(fields)


@dataclass(frozen=True)
class Resource:
    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    protocol: Protocol
    address: str
    secret_ref: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
