"""Which data-plane endpoints a client is offered (DESIGN.md, "Trust modes").

* ``platform_ca``: the worker's direct URL, with the platform CA bundle to verify it.
* ``public_ca``: the worker's direct URL, verified with the system's trust store.
* ``smoke_insecure``: in development, the direct URL flagged smoke-only (it cannot be
  verified); in production, never: the gateway is offered instead.

The gateway, when configured, is always offered after any direct candidate;
its certificate is the operator's, verified with the system's trust store.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rap_common.errors import FailedPrecondition


class Kind(StrEnum):
    DIRECT_WORKER = "direct_worker"
    GATEWAY = "gateway"


@dataclass(frozen=True)
class Candidate:
    kind: Kind
    url: str
    trust_mode: str
    ca_bundle_pem: str = ""
    smoke_only: bool = False


def candidates(
    *,
    trust_mode: str,
    production: bool,
    direct_url: str | None,
    platform_ca_pem: str,
    gateway_url: str | None,
    gateway_ca_pem: str = "",
) -> list[Candidate]:
    out: list[Candidate] = []
    if direct_url:
        if trust_mode == "platform_ca":
            out.append(Candidate(Kind.DIRECT_WORKER, direct_url, trust_mode, ca_bundle_pem=platform_ca_pem))
        elif trust_mode == "public_ca":
            out.append(Candidate(Kind.DIRECT_WORKER, direct_url, trust_mode))
        elif trust_mode == "smoke_insecure" and not production:
            out.append(Candidate(Kind.DIRECT_WORKER, direct_url, trust_mode, smoke_only=True))
    if gateway_url:
        # The gateway's own certificate is the operator's: from a public CA, or from
        # the CA the operator configured (RAP_GATEWAY_CA_FILE), sent along to verify it.
        if gateway_ca_pem:
            out.append(Candidate(Kind.GATEWAY, gateway_url, "platform_ca", ca_bundle_pem=gateway_ca_pem))
        else:
            out.append(Candidate(Kind.GATEWAY, gateway_url, "public_ca"))
    if not out:
        raise FailedPrecondition(
            "no data-plane endpoint can be offered for this session: the worker has no direct URL this "
            "trust mode allows, and no gateway is configured (RAP_GATEWAY_URL)",
            reason="no_data_plane_route",
        )
    return out
