"""Many secrets at once, written the way the store writes them, for rotation tests and benchmarks."""

from __future__ import annotations

import uuid

from sqlalchemy import insert

from rap_common.secrets import SecretStr
from rap_control.db import models as m
from rap_control.db.engine import Database
from rap_control.keys.provider import KeyProvider
from rap_control.secrets import envelope, payload
from rap_control.secrets.envelope import ALGORITHM
from rap_control.secrets.payload import PAYLOAD_VERSION
from rap_control.secrets.types import SshCredential


def password_of(index: int) -> str:
    return f"bulk-pw-{index:07d}"


def bulk_secrets(
    db: Database,
    provider: KeyProvider,
    key_id: str,
    organization_id: uuid.UUID,
    count: int,
    *,
    chunk: int = 2000,
) -> None:
    """``count`` SSH resources, each with a sealed secret whose password is ``password_of(i)``."""
    for start in range(0, count, chunk):
        resources, secrets = [], []
        for i in range(start, min(start + chunk, count)):
            resource_id = uuid.uuid4()
            ref = f"rap-secret://org/{organization_id}/resources/{resource_id}/default"
            binding = envelope.Binding(ref, organization_id, resource_id, 1)
            encoded = payload.encode(
                SshCredential(f"user{i}", SecretStr(password_of(i)), SecretStr(""), SecretStr(""))
            )
            sealed = envelope.seal(provider, key_id, binding, encoded)
            resources.append(
                {
                    "id": resource_id,
                    "organization_id": organization_id,
                    "name": f"bulk-{i}",
                    "protocol": "ssh",
                    "address": "10.0.0.1:22",
                    "secret_ref": ref,
                    "metadata_": {},
                }
            )
            secrets.append(
                {
                    "id": uuid.uuid4(),
                    "organization_id": organization_id,
                    "resource_id": resource_id,
                    "secret_ref": ref,
                    "name": "default",
                    "rotation_version": 1,
                    "payload_version": PAYLOAD_VERSION,
                    "algorithm": ALGORITHM,
                    "key_id": sealed.key_id,
                    "wrapped_dek": sealed.wrapped_dek,
                    "nonce": sealed.nonce,
                    "ciphertext": sealed.ciphertext,
                    "payload_sha256": sealed.payload_sha256,
                    "safe_metadata": {},
                }
            )

        def write(uow, resources=resources, secrets=secrets):  # type: ignore[no-untyped-def]
            uow.session.execute(insert(m.Resource), resources)
            uow.session.execute(insert(m.ResourceSecret), secrets)

        db.run_sync(write)
