"""Which data channels a session may open (DESIGN.md, "Data plane").

A resource may narrow its channels with the metadata key ``rap_channels``
(a list of channel names); otherwise the protocol's defaults apply. A
request for channels beyond the policy gets only those the policy allows.
"""

from __future__ import annotations

from typing import Any

from rap_common.errors import InvalidArgument
from rap_control.resources.types import Protocol
from rap_control.sessions.types import Channel

POLICY_KEY = "rap_channels"

_DEFAULTS: dict[Protocol, tuple[Channel, ...]] = {
    Protocol.SSH: (Channel.TERMINAL, Channel.CLIPBOARD, Channel.FILE_UPLOAD),
    Protocol.RDP: (Channel.CLIPBOARD,),
    Protocol.VNC: (Channel.CLIPBOARD,),
    Protocol.TCP: (),
}


def allowed_channels(protocol: Protocol, metadata: dict[str, Any]) -> tuple[Channel, ...]:
    """The channels the resource's policy allows, in a stable order."""
    defaults = _DEFAULTS[protocol]
    raw = metadata.get(POLICY_KEY)
    if raw is None:
        return defaults
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise InvalidArgument(f"metadata.{POLICY_KEY} must be a list of channel names", reason="bad_policy")
    named = set(raw)
    return tuple(c for c in defaults if c.value in named)


def session_channels(protocol: Protocol, metadata: dict[str, Any], requested: list[Channel]) -> list[Channel]:
    """The requested channels the policy allows; all the allowed ones when none are asked for."""
    allowed = allowed_channels(protocol, metadata)
    if not requested:
        return list(allowed)
    wanted = set(requested)
    return [c for c in allowed if c in wanted]
