"""Validation of resource names, addresses and metadata limits."""

from __future__ import annotations

import pytest

from rap_common.errors import InvalidArgument
from rap_control.resources.types import Protocol
from rap_control.resources.validation import (
    MAX_METADATA_DEPTH,
    check_metadata_limits,
    normalize_address,
    validate_name,
)


@pytest.mark.parametrize(
    ("protocol", "address", "expected"),
    [
        (Protocol.SSH, "Web-1.Example.org", "web-1.example.org:22"),
        (Protocol.RDP, "10.0.0.5", "10.0.0.5:3389"),
        (Protocol.VNC, "10.0.0.5:5901", "10.0.0.5:5901"),
        (Protocol.SSH, "[::1]:2222", "[::1]:2222"),
        (Protocol.SSH, "::1", "[::1]:22"),
        (Protocol.TCP, "db.internal:5432", "db.internal:5432"),
        (Protocol.SSH, "host.example.", "host.example:22"),
    ],
)
def test_addresses_are_normalized(protocol: Protocol, address: str, expected: str) -> None:
    assert normalize_address(protocol, address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "",
        "bad host",
        "host:0",
        "host:70000",
        "host:x",
        "-lead.example",
        "a..b",
        "[::1",
        "[10.0.0.1]:22",
        "999.1.1.1",
        "h" * 64 + ".example",
        "user@host",
        "host/path",
        "[::1]x",
    ],
)
def test_bad_addresses_are_refused(address: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        normalize_address(Protocol.SSH, address)
    assert "resource.address" in info.value.message


def test_a_tcp_resource_must_name_its_port() -> None:
    with pytest.raises(InvalidArgument, match="TCP resource must give a port"):
        normalize_address(Protocol.TCP, "db.internal")


@pytest.mark.parametrize("name", ["", " padded", "x" * 129, "tab\there", "nul\x00"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_name(name)


def test_metadata_limits() -> None:
    deep: dict = {}  # type: ignore[type-arg]
    node = deep
    for _ in range(MAX_METADATA_DEPTH):
        node["d"] = {}
        node = node["d"]
    with pytest.raises(InvalidArgument, match="deeper than"):
        check_metadata_limits(deep)
    with pytest.raises(InvalidArgument, match="bytes as JSON"):
        check_metadata_limits({"blob": "x" * 20_000})
    with pytest.raises(InvalidArgument, match="entries"):
        check_metadata_limits({f"k{i}": i for i in range(300)})
    with pytest.raises(InvalidArgument, match="longer than 128"):
        check_metadata_limits({"k" * 200: 1})
    with pytest.raises(InvalidArgument, match=r"metadata value at metadata.a\[1\] contains a NUL"):
        check_metadata_limits({"a": ["ok", "nul\x00"]})
    with pytest.raises(InvalidArgument, match="key at metadata contains a NUL"):
        check_metadata_limits({"k\x00": 1})
    check_metadata_limits({"display": {"depth": 24, "modes": ["a", "b"]}})
