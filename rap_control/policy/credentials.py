"""Detection of credentials placed in resource metadata.

A key is credential-like when, once *normalized*, it contains one of the
long credential terms (``password``, ``token``, ``secret``...) or has a
word that is one of the short ones (``pwd``, ``pin``, ``otp``, ``auth``...).
Containment rather than equality is what catches prefixed and suffixed
variants of the long terms (``dbPassword``, ``X-API-Key``); the short terms
must be whole words, or ``ping`` and ``compass`` would be refused.

Normalization defeats look-alike spellings before any matching:

1. NFKC, which folds fullwidth forms, mathematical alphanumerics, the long s
   and other compatibility characters into their plain letters;
2. the Unicode TR39 confusables data (from the ``confusable-homoglyphs``
   package, which ships Unicode's own table) maps each remaining non-ASCII
   character that looks like an ASCII letter or digit to that letter: the
   Cyrillic a (U+0430), the Greek capital rho (U+03A1), the dotless i (U+0131);
3. camelCase humps and separators split words, and everything is lower-cased.

A key that mixes scripts (Latin with Cyrillic or Greek letters, say) is
refused whatever it spells: no honest metadata key needs that.

Values are checked too: a private key in any armour (PEM in any case, PGP,
PuTTY, OpenSSH), the same base64-encoded, a URL with a password in its
userinfo, and a connection string with ``Password=`` or ``Pwd=``. Only key
paths are reported, never values.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from confusable_homoglyphs import categories, confusables

# Found anywhere in the folded key (prefix and suffix variants included).
CREDENTIAL_TERMS: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "passcode",
    "username",
    "domain",
    "token",
    "privatekey",
    "privkey",
    "clientsecret",
    "credential",
    "secret",
    "apikey",
    "accesskey",
    "sessionkey",
    "authkey",
    "cookie",
    "bearer",
    "pincode",
)

# Short terms, refused only as whole words ("pin" but not "ping", "pass" but
# not "compass"), and the pairs of words that make a key one ("session key").
SHORT_TERMS = frozenset({"pwd", "pw", "pswd", "pass", "pin", "otp", "totp", "hotp", "auth", "mfa"})
WORD_PAIRS = frozenset({("session", "key"), ("api", "key"), ("access", "key"), ("auth", "key")})
# A key beside a password-like sibling that names whom it logs in as.
LOGIN_WORDS = frozenset({"login", "user", "userid", "uid", "account", "principal"})

# Digits, punctuation and combining marks belong to no script in particular.
_NEUTRAL_SCRIPTS = {"COMMON", "INHERITED"}
# The mixes TR39's "highly restrictive" profile allows: how Japanese, Chinese
# and Korean are written, with Latin.
_ALLOWED_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)

_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")

# Private keys, in any case: PEM "PRIVATE KEY" of any kind, PGP private key
# blocks, PuTTY key files, and the magic of OpenSSH's own key format.
_PRIVATE_KEY_MARKERS = re.compile(
    r"-----\s*BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?\s*-----"
    r"|PuTTY-User-Key-File-\d+\s*:"
    r"|openssh-key-v1",
    re.IGNORECASE,
)
# Runs long enough to be an encoded key; shorter ones are ordinary strings.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_\-]{40,}={0,2}")
# scheme://user:password@host (a password in the userinfo; user@host alone is fine).
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@?#]*:[^/\s@?#]+@")
# Password=..., Pwd=... in ADO/ODBC/JDBC connection strings and libpq DSNs.
_CONNECTION_PASSWORD = re.compile(
    r"(?:^|[;\s,&?{])\s*(?:password|passwd|pwd|pass)\s*=\s*[^;\s]", re.IGNORECASE
)
_MAX_DECODE_DEPTH = 2


@functools.lru_cache(maxsize=4096)
def _ascii_lookalike(char: str) -> str:
    """The ASCII letter or digit that ``char`` is confusable with (TR39), else ``char``."""
    if char.isascii():
        return char
    for glyph in confusables.confusables_data.get(char, ()):
        candidate = str(glyph["c"])
        if len(candidate) == 1 and candidate.isascii() and candidate.isalnum():
            return candidate
    return char


def skeleton(key: str) -> str:
    """``key`` with compatibility forms folded (NFKC) and look-alike letters mapped to ASCII."""
    normalized = unicodedata.normalize("NFKC", key)
    return "".join(_ascii_lookalike(c) for c in normalized)


def key_words(key: str) -> list[str]:
    """The lower-case words of ``key``: split at separators, camelCase humps and digits."""
    return [w.lower() for w in _WORDS.findall(skeleton(key))]


def fold_key(key: str) -> str:
    """``key`` normalized (see the module docstring), lower-cased, every separator removed."""
    return _NOT_ALNUM.sub("", skeleton(key).casefold())


def mixes_scripts(key: str) -> bool:
    """True when the letters of ``key`` (after NFKC) come from more than one script."""
    normalized = unicodedata.normalize("NFKC", key)
    scripts = {categories.alias(c) for c in normalized if c.isalpha()} - _NEUTRAL_SCRIPTS
    return len(scripts) > 1 and not any(scripts <= allowed for allowed in _ALLOWED_MIXES)


def is_credential_key(key: str) -> bool:
    """True when ``key`` names a credential in any spelling, or mixes scripts."""
    folded = fold_key(key)
    if any(term in folded for term in CREDENTIAL_TERMS):
        return True
    words = key_words(key)
    if any(w in SHORT_TERMS for w in words):
        return True
    if any(pair in WORD_PAIRS for pair in itertools.pairwise(words)):
        return True
    return mixes_scripts(key)


def _private_key_in(text: str, depth: int) -> bool:
    if _PRIVATE_KEY_MARKERS.search(text):
        return True
    if depth >= _MAX_DECODE_DEPTH:
        return False
    for run in _BASE64_RUN.findall(text):
        decoded = _b64decode(run)
        if decoded is not None and _private_key_in(decoded.decode("latin-1"), depth + 1):
            return True
    return False


def _b64decode(run: str) -> bytes | None:
    padded = run + "=" * (-len(run) % 4)
    for altchars in (b"+/", b"-_"):
        try:
            return base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
    return None


def is_private_key_value(value: str) -> bool:
    """True when ``value`` holds a private key: PEM (any case), PGP, PuTTY or OpenSSH,
    as is or base64-encoded (twice at most)."""
    return _private_key_in(value, 0)


def is_credential_value(value: str) -> bool:
    """True when ``value`` holds a private key, a URL with a password, or a connection
    string's password."""
    return (
        is_private_key_value(value)
        or _URL_USERINFO.search(value) is not None
        or _CONNECTION_PASSWORD.search(value) is not None
    )


def _child_path(path: str, key: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}"
    # Quote keys that would make the path ambiguous; cap them.
    return f"{path}[{key[:64]!r}]"


def _logs_in_as(key: str) -> bool:
    return any(w in LOGIN_WORDS for w in key_words(key))


def credential_paths(value: Any, path: str = "metadata") -> Iterator[str]:
    """Yield the path of every credential-like key and credential value, depth first.

    Beside a credential-like key, a sibling that names a login (``login``,
    ``user``) is reported too: ``{"login": ..., "pwd": ...}`` is a pair.
    """
    if isinstance(value, dict):
        keys = [str(k) for k in value]
        flagged = {k for k in keys if is_credential_key(k)}
        for key, child in value.items():
            child_path = _child_path(path, str(key))
            if str(key) in flagged or (flagged and _logs_in_as(str(key))):
                yield child_path
            else:
                yield from credential_paths(child, child_path)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from credential_paths(child, f"{path}[{index}]")
    elif isinstance(value, str) and is_credential_value(value):
        yield path
