"""The hash that links audit rows.

``hash = SHA-256(previous_hash || canonical JSON of the row)``. The
canonical form has sorted keys, no spaces and UTC timestamps with
microseconds, so a row read back from PostgreSQL hashes exactly as it did
when written. Details may hold only JSON strings, whole numbers, booleans,
null, lists and objects: floats do not survive JSONB unchanged.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from rap_control.audit.types import AuditEvent

GENESIS_HASH = b"\x00" * 32


def timestamp_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_row(event: AuditEvent) -> bytes:
    """The bytes hashed for ``event``: every field but the two hashes."""
    row = {
        "id": str(event.id),
        "chain_id": event.chain_id,
        "sequence": event.sequence,
        "organization_id": str(event.organization_id) if event.organization_id else None,
        "event_type": event.event_type,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "request_id": event.request_id,
        "details": event.details,
        "created_at": timestamp_text(event.created_at),
    }
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link(previous_hash: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(previous_hash + canonical).digest()


def check_details(value: Any, path: str = "details") -> None:
    """Refuse detail values whose JSONB round trip would change the hash."""
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_details(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: audit detail keys must be strings")
            check_details(item, f"{path}.{key}")
        return
    raise TypeError(
        f"{path}: audit details take str, int, bool, None, list and dict, not {type(value).__name__}"
    )
