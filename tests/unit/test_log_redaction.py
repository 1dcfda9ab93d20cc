"""Redaction reaches exception text and tracebacks, and client garbage logs one quiet line."""

from __future__ import annotations

import io
import logging

import pytest

from rap_common.logging import HttpErrorFilter, RateLimitFilter, RedactingFilter

JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLWNhbmFyeQ"
API_TOKEN = "rap_api_Zq81CanaryCanaryCanaryCanary"


def _emit(logger_name: str, fn: object, *filters: logging.Filter) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    for f in filters:
        logger.addFilter(f)
    logger.propagate = False
    try:
        fn(logger)  # type: ignore[operator]
    finally:
        logger.removeHandler(handler)
        for f in filters:
            logger.removeFilter(f)
    return out.getvalue()


def test_a_token_inside_an_exception_and_its_traceback_is_masked() -> None:
    def boom(logger: logging.Logger) -> None:
        try:
            raise ValueError(f"bad header: Bearer {JWT} and {API_TOKEN} and rap.bearer.{JWT}")
        except ValueError:
            logger.exception("request failed")

    text = _emit("test.redact.exc", boom)
    assert "Traceback" in text and "ValueError" in text
    assert JWT not in text and API_TOKEN not in text
    assert "eyJhbGci" not in text


def test_a_cut_short_jwt_in_a_stack_is_masked() -> None:
    text = _emit("test.redact.stack", lambda lg: lg.warning("seen %s", JWT[:40], stack_info=True))
    assert JWT[:40] not in text


def test_an_aiohttp_parse_error_becomes_one_line_without_request_bytes() -> None:
    from aiohttp.http_exceptions import LineTooLong

    def parse_error(logger: logging.Logger) -> None:
        try:
            raise LineTooLong(f"Bearer {JWT}" * 300, "8190")
        except LineTooLong:
            logger.exception("Error handling request from %s", "127.0.0.1")

    text = _emit("test.redact.aiohttp", parse_error, HttpErrorFilter())
    assert text.strip() == "WARNING refused a malformed HTTP request (LineTooLong)"


def test_repeated_lines_are_rate_limited_and_counted() -> None:
    limiter = RateLimitFilter(burst=3, interval=3600)
    text = _emit("test.redact.rate", lambda lg: [lg.warning("refused: %s", i) for i in range(50)], limiter)
    assert text.count("refused:") == 3


@pytest.mark.parametrize("value", [JWT, API_TOKEN])
def test_the_message_itself_is_still_masked(value: str) -> None:
    assert value not in _emit("test.redact.msg", lambda lg: lg.info("token %s", value))
