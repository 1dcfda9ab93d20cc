"""Parsing of the UUID strings every RPC carries."""

from __future__ import annotations

import uuid

from rap_common.errors import InvalidArgument

_MAX_SHOWN = 64


def parse_id(value: str, field: str, *, required: bool = True) -> uuid.UUID | None:
    """The UUID in ``value``, or None when it is empty and not required.

    Raises InvalidArgument naming ``field`` when the text is not a UUID.
    """
    if not value:
        if required:
            raise InvalidArgument(f"{field} is required", reason="missing_field")
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        shown = value[:_MAX_SHOWN] + ("..." if len(value) > _MAX_SHOWN else "")
        raise InvalidArgument(f"{field} {shown!r} is not a UUID", reason="malformed_id") from None


def require_id(value: str, field: str) -> uuid.UUID:
    """Like :func:`parse_id` for a field that must be present."""
    parsed = parse_id(value, field, required=True)
    assert parsed is not None
    return parsed
