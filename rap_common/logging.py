"""Logging set-up with a redaction filter.

The filter is the last line of defence, not the first: code logs ids,
never messages or values. It masks what looks like a RAP bearer token, an
``authorization`` header value, or a PEM private key block, in the message
once formatted with its arguments, before any handler writes it.
"""

from __future__ import annotations

import logging
import re
import sys

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


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's formatted message.

    It formats the message with its arguments first, because a secret can
    be split between them ("Bearer %s" and the token).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: keep it, but redacted
            message = f"{record.msg} {record.args}"
        record.msg = redact_text(message)
        record.args = None
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
