"""An organization's policy: data-plane defaults (the clipboard policy and the
upload size cap) and session limits (how long a session may stay without an
attachment, and live at all).

A resource's own metadata keys of the data-plane names override them; the
worker applies the result. The session limits are the control plane's; when
unset, RAP_SESSION_IDLE_TIMEOUT_SECONDS and RAP_SESSION_MAX_SECONDS apply.
Only these keys, with these types, are accepted.
"""

from __future__ import annotations

from typing import Any

from rap_common.errors import InvalidArgument

MAX_CLIPBOARD = 10 * 1024 * 1024
MAX_UPLOAD = 10 * 1024 * 1024 * 1024
IDLE_TIMEOUT_KEY = "rap_session_idle_timeout_seconds"
MAX_SESSION_KEY = "rap_session_max_seconds"
_SESSION_LIMITS = {IDLE_TIMEOUT_KEY: 7 * 86400, MAX_SESSION_KEY: 30 * 86400}
_CLIPBOARD_FLAGS = ("client_to_target", "target_to_client")


def _whole(value: Any, field: str, high: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value != int(value)
        or not 1 <= value <= high
    ):
        raise InvalidArgument(f"policy.{field} must be a whole number from 1 to {high}", reason="bad_policy")
    return int(value)


def check_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy, normalized; INVALID_ARGUMENT naming the first bad field."""
    out: dict[str, Any] = {}
    for key, value in policy.items():
        if key == "rap_clipboard":
            if not isinstance(value, dict):
                raise InvalidArgument("policy.rap_clipboard must be an object", reason="bad_policy")
            clipboard: dict[str, Any] = {}
            for name, setting in value.items():
                if name in _CLIPBOARD_FLAGS:
                    if not isinstance(setting, bool):
                        raise InvalidArgument(
                            f"policy.rap_clipboard.{name} must be true or false", reason="bad_policy"
                        )
                    clipboard[name] = setting
                elif name == "max_bytes":
                    clipboard[name] = _whole(setting, "rap_clipboard.max_bytes", MAX_CLIPBOARD)
                else:
                    raise InvalidArgument(
                        f"policy.rap_clipboard.{name[:40]} is not a known setting", reason="bad_policy"
                    )
            out[key] = clipboard
        elif key == "rap_upload_max_bytes":
            out[key] = _whole(value, key, MAX_UPLOAD)
        elif key in _SESSION_LIMITS:
            out[key] = _whole(value, key, _SESSION_LIMITS[key])
        else:
            raise InvalidArgument(
                f"policy.{key[:40]} is not a known setting (rap_clipboard, rap_upload_max_bytes, "
                f"{IDLE_TIMEOUT_KEY}, {MAX_SESSION_KEY})",
                reason="bad_policy",
            )
    return out
