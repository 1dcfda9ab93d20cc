"""``secret_ref``: rap-secret://org/<organization_id>/resources/<resource_id>/<name>.

Parsed strictly: lower-case canonical UUIDs, a name of 1-64 characters of
``a-z 0-9 _ -`` starting with a letter or digit, nothing else (no query,
fragment, trailing slash or percent-encoding).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from rap_common.errors import InvalidArgument

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_PATTERN = re.compile(rf"rap-secret://org/({_UUID})/resources/({_UUID})/([a-z0-9][a-z0-9_-]{{0,63}})")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True)
class SecretRef:
    organization_id: uuid.UUID
    resource_id: uuid.UUID
    name: str

    @classmethod
    def parse(cls, text: str) -> SecretRef:
        match = _PATTERN.fullmatch(text)
        if match is None:
            raise InvalidArgument(
                "secret_ref must be rap-secret://org/<organization_id>/resources/<resource_id>/<name> "
                "with lower-case UUIDs and a name of a-z, 0-9, '_' or '-'",
                reason="malformed_secret_ref",
            )
        return cls(uuid.UUID(match[1]), uuid.UUID(match[2]), match[3])

    def __str__(self) -> str:
        return f"rap-secret://org/{self.organization_id}/resources/{self.resource_id}/{self.name}"

    def check_belongs_to(self, organization_id: uuid.UUID, resource_id: uuid.UUID) -> None:
        """Refuse a reference to another organization's or another resource's secret."""
        if self.organization_id != organization_id:
            raise InvalidArgument(
                "secret_ref names another organization; it must name the resource's own",
                reason="secret_ref_wrong_organization",
            )
        if self.resource_id != resource_id:
            raise InvalidArgument(
                f"secret_ref names resource {self.resource_id}, not this resource ({resource_id})",
                reason="secret_ref_wrong_resource",
            )
