"""Session rules with no I/O: channel policy, reason codes, lease claims."""

from __future__ import annotations

import pytest

from rap_common.errors import InvalidArgument
from rap_control.policy.channels import allowed_channels, session_channels
from rap_control.resources.types import Protocol
from rap_control.sessions.lifecycle import reason_code
from rap_control.sessions.types import Channel


def test_protocol_defaults_and_the_metadata_policy() -> None:
    assert allowed_channels(Protocol.SSH, {}) == (Channel.TERMINAL, Channel.CLIPBOARD, Channel.FILE_UPLOAD)
    assert allowed_channels(Protocol.TCP, {}) == ()
    assert allowed_channels(Protocol.SSH, {"rap_channels": ["clipboard", "nonsense"]}) == (Channel.CLIPBOARD,)
    # A policy can narrow what the protocol allows, never widen it.
    assert allowed_channels(Protocol.RDP, {"rap_channels": ["terminal"]}) == ()
    with pytest.raises(InvalidArgument):
        allowed_channels(Protocol.SSH, {"rap_channels": "terminal"})


def test_requested_channels_are_cut_to_the_policy() -> None:
    policy = {"rap_channels": ["terminal", "clipboard"]}
    assert session_channels(Protocol.SSH, policy, [Channel.FILE_UPLOAD, Channel.TERMINAL]) == [
        Channel.TERMINAL
    ]
    assert session_channels(Protocol.SSH, policy, []) == [Channel.TERMINAL, Channel.CLIPBOARD]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("operator_request", "operator_request"),
        ("Target_Closed", "target_closed"),
        ("p@ss word", "dflt"),
        ("", "dflt"),
    ],
)
def test_reason_codes_are_identifiers_never_free_text(raw: str, expected: str) -> None:
    assert reason_code(raw, "dflt") == expected
