"""Validation of resource fields: names, addresses and metadata limits."""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from typing import Any

from rap_common.errors import InvalidArgument
from rap_control.resources.types import DEFAULT_PORTS, Protocol

MAX_NAME_LENGTH = 128
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 8
MAX_METADATA_ENTRIES = 256
MAX_KEY_LENGTH = 128

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def validate_name(name: str) -> str:
    """A resource name: 1-128 printable characters, no surrounding space."""
    if not name:
        raise InvalidArgument("resource.name is required", reason="missing_field")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(
            f"resource.name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}",
            reason="name_too_long",
        )
    if name != name.strip() or any(unicodedata.category(c).startswith("C") for c in name):
        raise InvalidArgument(
            "resource.name may not have control characters or leading or trailing space", reason="bad_name"
        )
    return name


def normalize_address(protocol: Protocol, address: str) -> str:
    """``host:port`` (``[v6]:port``) with a lower-case host and the protocol's default port.

    Raises InvalidArgument when the host is neither a DNS name nor an IP
    address, or the port is out of range, or a TCP resource has no port.
    """
    if not address:
        raise InvalidArgument("resource.address is required", reason="missing_field")
    if len(address) > 300:
        raise InvalidArgument("resource.address is longer than 300 characters", reason="bad_address")
    host, port = _split_host_port(address)
    host = check_host(host)
    if port is None:
        port = DEFAULT_PORTS[protocol]
        if port is None:
            raise InvalidArgument(
                "resource.address of a TCP resource must give a port (host:port)", reason="bad_address"
            )
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}"


def _split_host_port(address: str) -> tuple[str, int | None]:
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise InvalidArgument(
                "resource.address has an unclosed '[' for an IPv6 address", reason="bad_address"
            )
        host, rest = address[1:end], address[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidArgument("resource.address must be [IPv6]:port", reason="bad_address")
        port_text = rest[1:] if rest else None
        if ":" not in host:
            raise InvalidArgument(
                "resource.address: only IPv6 addresses go in brackets", reason="bad_address"
            )
    elif address.count(":") == 1:
        host, port_text = address.split(":")
    elif address.count(":") > 1:
        host, port_text = address, None  # a bare IPv6 address
    else:
        host, port_text = address, None
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidArgument("resource.address port must be a number from 1 to 65535", reason="bad_address")
    return host, int(port_text)


def check_host(host: str) -> str:
    """A DNS name (lower-cased) or an IP address (canonical); INVALID_ARGUMENT otherwise."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise InvalidArgument(
            "resource.address host must be a DNS name or an IP address", reason="bad_address"
        )
    if name.replace(".", "").isdigit():
        raise InvalidArgument("resource.address host is not a valid IP address", reason="bad_address")
    return name


def check_metadata_limits(metadata: dict[str, Any]) -> None:
    """Refuse metadata over the size, depth, entry-count or key-length limits."""
    entries = 0

    def walk(value: Any, depth: int, path: str) -> None:
        nonlocal entries
        if isinstance(value, str) and "\x00" in value:
            # PostgreSQL text and JSONB cannot hold NUL; refuse it by path, not by a driver error.
            raise InvalidArgument(f"metadata value at {path} contains a NUL character", reason="bad_metadata")
        if isinstance(value, dict | list):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidArgument(
                    f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels at {path}",
                    reason="metadata_too_deep",
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                entries += 1
                if isinstance(key, str) and "\x00" in key:
                    raise InvalidArgument(
                        f"a metadata key at {path} contains a NUL character", reason="bad_metadata"
                    )
                if isinstance(key, str) and len(key) > MAX_KEY_LENGTH:
                    raise InvalidArgument(
                        f"metadata key at {path} is longer than {MAX_KEY_LENGTH} characters",
                        reason="metadata_key_too_long",
                    )
                walk(child, depth + 1, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]")

    walk(metadata, 1, "metadata")
    if entries > MAX_METADATA_ENTRIES:
        raise InvalidArgument(
            f"metadata has {entries} entries; the limit is {MAX_METADATA_ENTRIES}",
            reason="metadata_too_large",
        )
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(
            f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}",
            reason="metadata_too_large",
        )
