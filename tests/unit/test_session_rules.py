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


def test_tokens_in_session_values_never_print() -> None:
    import uuid
    from datetime import UTC, datetime

    from rap_control.sessions.attachments import Attached, Attachment
    from rap_control.sessions.types import Assignment, Session, SessionState

    now = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in range(5)]
    session = Session(
        ids[0], ids[1], ids[2], ids[3], ids[4], SessionState.ACTIVE, [Channel.TERMINAL], None, now, now
    )
    assignment = Assignment(
        session, Protocol.SSH, "h:22", "rap-secret://x", {}, ids[0], "lease-canary-token", now
    )
    attached = Attached(
        Attachment(ids[0], ids[1], ids[0], ids[3], "active", [], now), session, "dp-canary-token", None, None
    )
    assert "lease-canary-token" not in repr(assignment) and "lease-canary-token" not in f"{assignment}"
    assert "dp-canary-token" not in repr(attached)
