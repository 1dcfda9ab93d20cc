"""Detection of credentials placed in resource metadata.

A key is credential-like when, with case, separators and camelCase humps
folded away, it contains one of the credential terms: ``dbPassword``,
``X-API-Key``, ``ssh_private_key_2`` and ``Credentials`` all do, while
``certificate_verification_mode`` and ``render_quality_profile`` do not.
Containment rather than equality is what catches prefixed and suffixed
variants; a security product prefers refusing ``tokenizer`` to storing a
password. A string value holding a PEM private key is refused whatever its
key. Only key paths are reported, never values.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

CREDENTIAL_TERMS: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "username",
    "domain",
    "token",
    "privatekey",
    "clientsecret",
    "credential",
    "secret",
    "apikey",
)

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_PEM_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")


def fold_key(key: str) -> str:
    """``key`` lower-cased with every separator removed (camelCase folds too)."""
    return _NOT_ALNUM.sub("", key.lower())


def is_credential_key(key: str) -> bool:
    folded = fold_key(key)
    return any(term in folded for term in CREDENTIAL_TERMS)


def is_private_key_value(value: str) -> bool:
    return _PEM_PRIVATE_KEY.search(value) is not None


def _child_path(path: str, key: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}"
    # Quote keys that would make the path ambiguous; cap them.
    return f"{path}[{key[:64]!r}]"


def credential_paths(value: Any, path: str = "metadata") -> Iterator[str]:
    """Yield the path of every credential-like key and private-key value, depth first."""
    if isinstance(value, dict):
        for key, child in value.items():
            child_path = _child_path(path, str(key))
            if is_credential_key(str(key)):
                yield child_path
            else:
                yield from credential_paths(child, child_path)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from credential_paths(child, f"{path}[{index}]")
    elif isinstance(value, str) and is_private_key_value(value):
        yield path
