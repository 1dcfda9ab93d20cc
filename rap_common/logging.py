"""Logging set-up with a redaction filter.

The filter is the last line of defence, not the first: code logs ids,
never messages or values. It masks what looks like a RAP bearer token, an
``authorization`` header value, or a PEM private key block, in the message
and in its arguments, before any handler formats the record.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from rap_common.secrets import REDACTED

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # RAP API tokens and enrollment tokens: rap_<kind>_<base64url>.
    (re.compile(r"rap_[a-z]{2,4}_[A-Za-z0-9_\-]{16,}"), REDACTED),
    # A bearer credential in a header dump: keep the scheme, mask the value.
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/\-]+=*"), r"\g<1>" + REDACTED),
    # Any PEM private key block, whole (or to the end when it is cut short).
    (
        re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|$)", re.S),
        REDACTED,
    ),
)


def redact_text(text: str) -> str:
    """``text`` with every token-like or private-key-like run masked."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def _redact_arg(arg: Any) -> Any:
    return redact_text(arg) if isinstance(arg, str) else arg


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message and string arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return True


def configure_logging(level: str = "INFO") -> None:
    """Send logs to stderr through the redacting filter, once per process."""
    root = logging.getLogger()
    if any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
