"""Admission on a data-plane edge: a rate limit per source, and refusals counted, not echoed.

Anyone who can reach a worker's direct endpoint or the gateway can open
WebSocket upgrades at line rate. Two things keep that from costing more
than the connection itself:

* :class:`SourceLimiter`, a token bucket per source address: past its
  burst, a source gets HTTP 429 before any TLS-protected work is spent on it.
* :class:`RefusalCounter`, which decides which refusals become audit rows:
  a refusal that names a real token (its signature verified) is reported
  once per token and reason; anonymous garbage (no token, a forged or
  expired one, a rate-limited source) is reported once per source and
  reason per interval, and everything past that as one count at the end of
  the interval.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_SOURCES = 10_000


@dataclass
class SourceLimiter:
    """``rate`` attempts per second per source, with a burst of ``burst``."""

    rate: float = 20.0
    burst: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    def allow(self, source: str) -> bool:
        now = self.clock()
        tokens, stamp = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > MAX_SOURCES:
            self._buckets.popitem(last=False)
        return allowed


@dataclass(frozen=True)
class Report:
    """One refusal report: the fields of a BindRejected message."""

    reason: str
    source: str
    count: int = 1
    session_id: str = ""
    attachment_id: str = ""
    jti: str = ""
    user_id: str = ""


@dataclass
class RefusalCounter:
    """Which refusals to report; see the module docstring."""

    interval: float = 60.0
    clock: Callable[[], float] = time.monotonic
    # (jti, reason) -> when the token expires (wall clock), for tokens already reported.
    _named: OrderedDict[tuple[str, str], float] = field(default_factory=OrderedDict)
    # (source, reason) -> refusals since the first one reported in this interval.
    _pending: dict[tuple[str, str], int] = field(default_factory=dict)
    _window_start: float = -1.0

    def named(
        self,
        reason: str,
        source: str,
        *,
        session_id: str,
        attachment_id: str,
        jti: str,
        user_id: str,
        expires: float,
    ) -> Report | None:
        """A refusal of a verified token: reported the first time only (a replay flood of
        one token is one row)."""
        now = time.time()
        while self._named and next(iter(self._named.values())) < now:
            self._named.popitem(last=False)
        key = (jti, reason)
        if key in self._named:
            return None
        self._named[key] = expires
        while len(self._named) > MAX_SOURCES:
            self._named.popitem(last=False)
        return Report(reason, source, 1, session_id, attachment_id, jti, user_id)

    def anonymous(self, reason: str, source: str) -> Report | None:
        """A refusal that names nothing real: the first per source and reason in an
        interval is reported now, the rest are counted for :meth:`flush`."""
        self._roll()
        key = (source, reason)
        if key in self._pending:
            self._pending[key] += 1
            return None
        if len(self._pending) >= MAX_SOURCES:
            # Too many distinct sources to track one by one: count them together.
            key = ("*", reason)
            self._pending[key] = self._pending.get(key, 0) + 1
            return None
        self._pending[key] = 0
        return Report(reason, source)

    def flush(self, force: bool = False) -> list[Report]:
        """The counts of the interval that ended (or of the current one, with ``force``)."""
        if not force and self.clock() - self._window_start < self.interval:
            return []
        pending, self._pending = self._pending, {}
        self._window_start = self.clock()
        return [Report(reason, source, count) for (source, reason), count in pending.items() if count > 0]

    def _roll(self) -> None:
        if self._window_start < 0:
            self._window_start = self.clock()
