"""Keyset paging shared by every List RPC.

A page token is opaque to clients: base64url JSON of the sort key of the
last row returned. It selects a position only; the organization scope is
always re-applied by the query, so a forged token reveals nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rap_common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


@dataclass(frozen=True)
class PageRequest:
    size: int
    after: dict[str, Any] | None


def page_request(page_size: int, page_token: str) -> PageRequest:
    """Validate a List request's paging fields."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE_SIZE}", reason="bad_page_size")
    return PageRequest(size=page_size or DEFAULT_PAGE_SIZE, after=decode_token(page_token))


def encode_token(key: dict[str, Any]) -> str:
    raw = json.dumps(key, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidArgument(
            "page_token is not valid: pass back a next_page_token unchanged", reason="bad_page_token"
        ) from None
    if not isinstance(key, dict):
        raise InvalidArgument("page_token is not valid", reason="bad_page_token")
    return key


def key_field(after: dict[str, Any], name: str) -> Any:
    """A field of a decoded page token, or INVALID_ARGUMENT if it is absent."""
    if name not in after:
        raise InvalidArgument("page_token does not belong to this list", reason="bad_page_token")
    return after[name]


T = TypeVar("T")


def after_id(page: PageRequest) -> uuid.UUID | None:
    """The id a page token continues after, for lists ordered by id."""
    if not page.after:
        return None
    try:
        return uuid.UUID(str(key_field(page.after, "id")))
    except ValueError:
        raise InvalidArgument("page_token is not valid", reason="bad_page_token") from None


def split_page(
    rows: list[T], page: PageRequest, key: Callable[[T], dict[str, Any]]
) -> tuple[list[T], dict[str, Any] | None]:
    """Rows fetched with limit ``page.size + 1``: the page, and the next token's key if more remain."""
    if len(rows) <= page.size:
        return rows, None
    rows = rows[: page.size]
    return rows, key(rows[-1])
