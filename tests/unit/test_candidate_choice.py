"""The SDK's choice of data-plane endpoint: direct only when it can be verified."""

from __future__ import annotations

import pytest

from rap.v1 import session_pb2
from rap_client.connection import choose_candidate
from rap_common.errors import FailedPrecondition

DIRECT, GATEWAY = session_pb2.CANDIDATE_KIND_DIRECT_WORKER, session_pb2.CANDIDATE_KIND_GATEWAY
PEM = "-----BEGIN CERTIFICATE-----\n"


def _attachment(*candidates: session_pb2.Candidate) -> session_pb2.Attachment:
    return session_pb2.Attachment(candidates=list(candidates))


SMOKE = session_pb2.Candidate(
    kind=DIRECT, url="wss://w:1/v1/connect", trust_mode=session_pb2.TRUST_MODE_SMOKE_INSECURE, smoke_only=True
)
GW = session_pb2.Candidate(
    kind=GATEWAY, url="wss://gw/v1/connect", trust_mode=session_pb2.TRUST_MODE_PUBLIC_CA
)
NO_BUNDLE = session_pb2.Candidate(
    kind=DIRECT, url="wss://w:1/v1/connect", trust_mode=session_pb2.TRUST_MODE_PLATFORM_CA
)


def test_production_skips_a_smoke_only_direct_candidate_for_the_gateway() -> None:
    chosen = choose_candidate(_attachment(SMOKE, GW), production=True)
    assert (chosen.kind, chosen.url) == ("gateway", GW.url)
    # Even when asked: production never switches certificate checks off.
    chosen = choose_candidate(_attachment(SMOKE, GW), production=True, allow_smoke_insecure=True)
    assert chosen.kind == "gateway"


def test_development_skips_the_smoke_only_candidate_unless_asked() -> None:
    assert choose_candidate(_attachment(SMOKE, GW), production=False).kind == "gateway"
    with pytest.raises(FailedPrecondition):
        choose_candidate(_attachment(SMOKE), production=False)


def test_development_takes_the_smoke_only_candidate_when_asked_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chosen = choose_candidate(_attachment(SMOKE, GW), production=False, allow_smoke_insecure=True)
    assert (chosen.kind, chosen.url) == ("direct_smoke_only", SMOKE.url)
    assert "WITHOUT verifying" in caplog.text


def test_a_client_cannot_be_both_production_and_smoke() -> None:
    from rap_client import RapClient

    with pytest.raises(ValueError, match="development"):
        RapClient("127.0.0.1:1", "t", production=True, allow_smoke_insecure=True)


def test_a_platform_ca_candidate_without_a_bundle_is_unverifiable_and_skipped() -> None:
    assert choose_candidate(_attachment(NO_BUNDLE, GW), production=True).kind == "gateway"


def test_nothing_verifiable_is_a_clear_refusal() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        choose_candidate(_attachment(SMOKE, NO_BUNDLE), production=True)
    assert refused.value.reason == "no_candidate"
