"""The production guard for resources (DESIGN.md, "Production guard").

In production, RDP, VNC and SSH resources must carry a ``secret_ref`` and
their metadata may hold no credential-like key or private-key value.
Development allows both, for smoke tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rap_control.policy.credentials import credential_paths
from rap_control.resources.types import Protocol

# Protocols whose sessions need credentials; TCP tunnels carry none.
CREDENTIALED_PROTOCOLS = frozenset({Protocol.RDP, Protocol.VNC, Protocol.SSH})
_MAX_PATHS_SHOWN = 20


@dataclass(frozen=True)
class GuardVerdict:
    credential_paths: tuple[str, ...] = ()
    missing_secret_ref: bool = False

    @property
    def ok(self) -> bool:
        return not self.credential_paths and not self.missing_secret_ref

    def message(self) -> str:
        parts = []
        if self.credential_paths:
            shown = ", ".join(self.credential_paths[:_MAX_PATHS_SHOWN])
            more = len(self.credential_paths) - _MAX_PATHS_SHOWN
            if more > 0:
                shown += f" and {more} more"
            parts.append(
                f"metadata holds credential-like keys or private-key values at {shown}; "
                "store credentials with SecretService.PutResourceSecret and reference them by secret_ref"
            )
        if self.missing_secret_ref:
            parts.append("RDP, VNC and SSH resources need a secret_ref in production")
        return "; ".join(parts)


@dataclass(frozen=True)
class ProductionGuard:
    """Checks resources against the production rules when ``production`` is set."""

    production: bool

    def check_resource(
        self, protocol: Protocol, secret_ref: str | None, metadata: dict[str, Any]
    ) -> GuardVerdict:
        if not self.production:
            return GuardVerdict()
        return GuardVerdict(
            credential_paths=tuple(credential_paths(metadata)),
            missing_secret_ref=protocol in CREDENTIALED_PROTOCOLS and not secret_ref,
        )
