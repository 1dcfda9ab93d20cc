"""Admission on a data-plane edge: the per-source rate limit and the refusal counter."""

from __future__ import annotations

import time

from rap_common.admission import RefusalCounter, SourceLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_source_gets_its_burst_then_its_rate_and_others_are_unaffected() -> None:
    clock = Clock()
    limiter = SourceLimiter(rate=10, burst=5, clock=clock)
    assert [limiter.allow("a") for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow("b")
    clock.now += 0.1  # one token back
    assert limiter.allow("a") and not limiter.allow("a")


def test_anonymous_refusals_are_one_report_then_one_count_per_interval() -> None:
    clock = Clock()
    counter = RefusalCounter(interval=60, clock=clock)
    first = counter.anonymous("bad_signature", "10.0.0.9")
    assert first is not None and first.count == 1
    assert all(counter.anonymous("bad_signature", "10.0.0.9") is None for _ in range(999))
    assert counter.anonymous("missing_token", "10.0.0.9") is not None, "another reason is reported"
    assert counter.flush() == [], "not before the interval ends"
    clock.now += 60
    (summary,) = counter.flush()
    assert (summary.reason, summary.source, summary.count) == ("bad_signature", "10.0.0.9", 999)
    assert counter.anonymous("bad_signature", "10.0.0.9") is not None, "a new interval reports again"


def test_a_named_token_is_reported_once_per_reason() -> None:
    counter = RefusalCounter()
    exp = time.time() + 60
    kwargs = {"session_id": "s", "attachment_id": "a", "jti": "j1", "user_id": "u", "expires": exp}
    assert counter.named("replayed_jti", "1.2.3.4", **kwargs) is not None
    assert all(counter.named("replayed_jti", "1.2.3.4", **kwargs) is None for _ in range(100))
    assert counter.named("wrong_user", "1.2.3.4", **kwargs) is not None
    assert counter.named("replayed_jti", "1.2.3.4", **{**kwargs, "jti": "j2"}) is not None
