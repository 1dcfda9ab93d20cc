"""Logging set-up with a redaction filter.

The filter is the last line of defence, not the first: code logs ids,
never messages or values. It masks what looks like a RAP bearer token, a
signed JWT, an ``authorization`` header value, a token subprotocol, or a
PEM private key block, in the message once formatted with its arguments,
in the exception text and traceback, and in the stack, before any handler
writes them.

Two more filters keep a flood of bad input from flooding the log: HTTP
parse errors of the aiohttp servers (a client's garbage, an oversized
header) become one line without a traceback or any byte of the request,
and both they and other noisy lines are rate-limited per logger and
message.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time

from rap_common.secrets import REDACTED

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # RAP API tokens and enrollment tokens: rap_<kind>_<base64url>.
    (re.compile(r"rap_[a-z]{2,4}_[A-Za-z0-9_\-]{16,}"), REDACTED),
    # A token offered as a WebSocket subprotocol.
    (re.compile(r"(?i)(rap\.bearer\.)[A-Za-z0-9._~+/\-]+=*"), r"\g<1>" + REDACTED),
    # A bearer credential in a header dump: keep the scheme, mask the value.
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/\-]+=*"), r"\g<1>" + REDACTED),
    # A signed JWT (data-plane and lease tokens), whole or cut short.
    (re.compile(r"eyJ[A-Za-z0-9_\-]{6,}(?:\.[A-Za-z0-9_\-]*){0,2}"), REDACTED),
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


_EXCEPTION_FORMATTER = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's formatted message, its exception text and its stack.

    It formats the message with its arguments first, because a secret can
    be split between them ("Bearer %s" and the token). The traceback is
    rendered here, redacted, into ``exc_text``, which formatters print
    instead of rendering the exception again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: keep it, but redacted
            message = f"{record.msg} {record.args}"
        record.msg = redact_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = _EXCEPTION_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


class HttpErrorFilter(logging.Filter):
    """One line, no traceback and no request bytes, for a client's malformed HTTP request.

    aiohttp logs a parse error (an oversized header, say) with its
    exception, whose text quotes the start of the offending line: an
    ``Authorization`` header's first bytes. Those bytes are dropped here.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__module__.startswith("aiohttp.http_exceptions"):
            record.msg = "refused a malformed HTTP request (%s)"
            record.args = (type(exc).__name__,)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class RateLimitFilter(logging.Filter):
    """At most ``burst`` records per logger and message template per ``interval`` seconds.

    What is dropped is counted, and the next record let through says how
    many similar lines were suppressed.
    """

    def __init__(self, burst: int = 20, interval: float = 10.0) -> None:
        super().__init__()
        self._burst, self._interval = burst, interval
        self._windows: dict[tuple[str, str], tuple[float, int, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.exc_info is None:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            start, count, dropped = self._windows.get(key, (now, 0, 0))
            if now - start >= self._interval:
                start, count = now, 0
            if count >= self._burst:
                self._windows[key] = (start, count, dropped + 1)
                return False
            self._windows[key] = (start, count + 1, 0)
            if len(self._windows) > 4096:
                self._windows.clear()
        if dropped:
            record.msg = f"{record.msg} [{dropped} similar lines suppressed]"
        return True


# Loggers whose lines a remote client can cause at will.
NOISY_LOGGERS = (
    "aiohttp.server",
    "aiohttp.access",
    "aiohttp.web",
    "rap_worker.dataplane",
    "rap_gateway.relay",
)


def configure_logging(level: str = "INFO") -> None:
    """Send logs to stderr through the redacting filter, once per process; quiet the noisy loggers."""
    root = logging.getLogger()
    if any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    http_errors = HttpErrorFilter()
    for name in NOISY_LOGGERS:
        noisy = logging.getLogger(name)
        noisy.addFilter(http_errors)
        noisy.addFilter(RateLimitFilter())
