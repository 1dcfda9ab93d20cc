"""Bearer token formats and hashing: API tokens and worker enrollment tokens.

A token is a kind prefix (``rap_api_``, ``rap_enr_``) followed by 32 random
bytes in base64url (43 characters). Only its SHA-256 is stored: the token
has 256 bits of entropy, so a fast hash is no guessing oracle (unlike a
password's).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

from rap_common.secrets import SecretStr

API_TOKEN_PREFIX = "rap_api_"
ENROLLMENT_TOKEN_PREFIX = "rap_enr_"
_API_TOKEN = re.compile(r"rap_api_[A-Za-z0-9_-]{43}")
_ENROLLMENT_TOKEN = re.compile(r"rap_enr_[A-Za-z0-9_-]{43}")
PREFIX_SHOWN = 12


def _new(prefix: str) -> tuple[SecretStr, bytes, str]:
    token = prefix + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return SecretStr(token), hash_token(token), token[:PREFIX_SHOWN]


def new_api_token() -> tuple[SecretStr, bytes, str]:
    """A fresh API token, its hash for storage, and its recognisable prefix."""
    return _new(API_TOKEN_PREFIX)


def new_enrollment_token() -> tuple[SecretStr, bytes, str]:
    """A fresh one-time worker enrollment token, its hash, and its prefix."""
    return _new(ENROLLMENT_TOKEN_PREFIX)


def is_enrollment_token(token: str) -> bool:
    return _ENROLLMENT_TOKEN.fullmatch(token) is not None


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def is_well_formed(token: str) -> bool:
    return _API_TOKEN.fullmatch(token) is not None
