"""Hypothesis strategies shared by the unit and integration tests of the production guard."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

# Each credential term as words, the way people write them.
CREDENTIAL_WORDS: list[list[str]] = [
    ["password"],
    ["passwd"],
    ["passphrase"],
    ["pass", "phrase"],
    ["username"],
    ["user", "name"],
    ["domain"],
    ["token"],
    ["private", "key"],
    ["client", "secret"],
    ["credential"],
    ["credentials"],
    ["secret"],
    ["api", "key"],
]

# Words that carry no credential term, for prefixes, suffixes and ordinary keys.
PLAIN_WORDS = [
    "db",
    "admin",
    "rdp",
    "ssh",
    "primary",
    "backup",
    "old",
    "new",
    "hash",
    "value",
    "id",
    "my",
    "x",
    "v2",
    "root",
    "display",
    "color",
    "depth",
    "host",
    "port",
    "mode",
    "level",
    "certificate",
    "verification",
    "render",
    "quality",
    "profile",
    "layout",
    "keyboard",
]

ORDINARY_KEYS = ["certificate_verification_mode", "render_quality_profile", "keyboardLayout", "color-depth"]

SAFE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _style(words: list[str], style: str) -> str:
    if style == "snake":
        return "_".join(words)
    if style == "kebab":
        return "-".join(words)
    if style == "upper":
        return "_".join(words).upper()
    if style == "camel":
        return words[0] + "".join(w.capitalize() for w in words[1:])
    if style == "pascal":
        return "".join(w.capitalize() for w in words)
    if style == "dotted":
        return ".".join(words)
    return "".join(words)  # glued, e.g. "dbpassword"


STYLES = st.sampled_from(["snake", "kebab", "upper", "camel", "pascal", "dotted", "glued"])


@st.composite
def credential_keys(draw: st.DrawFn) -> str:
    """A credential-like key: a term in any style, maybe with prefix and suffix words."""
    prefix = draw(st.lists(st.sampled_from(PLAIN_WORDS), max_size=2))
    suffix = draw(st.lists(st.sampled_from(PLAIN_WORDS), max_size=2))
    words = prefix + draw(st.sampled_from(CREDENTIAL_WORDS)) + suffix
    return _style(words, draw(STYLES))


@st.composite
def ordinary_keys(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(st.sampled_from(ORDINARY_KEYS))
    words = draw(st.lists(st.sampled_from(PLAIN_WORDS), min_size=1, max_size=3))
    return _style(words, draw(STYLES))


def path_step(path: str, key: str) -> str:
    """How the guard names a child key in a path: .key, or ['key'] when it needs quoting."""
    return f"{path}.{key}" if SAFE_PATH.fullmatch(key) else f"{path}[{key!r}]"


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000).map(float),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20),
)


@dataclass(frozen=True)
class Planted:
    metadata: dict[str, Any]
    path: str


@st.composite
def planted_metadata(draw: st.DrawFn, leaf: Any, key: Any = None) -> Planted:
    """Metadata of ordinary keys with ``leaf`` planted under ``key`` at a random depth (objects and lists)."""
    key = key if key is not None else draw(credential_keys())
    depth = draw(st.integers(0, 5))
    node: Any = {key: leaf}
    steps: list[tuple[str, Any]] = []
    for _ in range(depth):
        if draw(st.booleans()):
            siblings = draw(st.lists(json_leaves, max_size=2))
            index = draw(st.integers(0, len(siblings)))
            node = [*siblings[:index], node, *siblings[index:]]
            steps.append(("list", index))
        else:
            parent_key = draw(ordinary_keys())
            sibling_key = draw(ordinary_keys())
            parent = {parent_key: node}
            if sibling_key != parent_key:
                parent[sibling_key] = draw(json_leaves)
            node = parent
            steps.append(("obj", parent_key))
    path = "metadata"
    for kind, step in reversed(steps):
        path = f"{path}[{step}]" if kind == "list" else path_step(path, step)
    return Planted(
        metadata=node if isinstance(node, dict) else {"items": node}, path=_fix_root(node, path, key)
    )


def _fix_root(node: Any, path: str, key: str) -> str:
    # A list at the top is wrapped under "items".
    if isinstance(node, list):
        path = path.replace("metadata", "metadata.items", 1)
    return path_step(path, key)


PEM_PRIVATE_KEY = (
    "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHCANARYCANARYCANARYCANARYCANARYCANARYCANARY\n"
    "-----END PRIVATE KEY-----\n"
)
PEM_KINDS = ["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED ", "DSA "]


# -- look-alike spellings, short names and credentials inside values ---------

# Per ASCII letter, characters of other scripts or forms that look like it
# (Cyrillic, Greek, fullwidth, mathematical bold, the long s, the dotless i).
LOOKALIKES: dict[str, list[str]] = {
    "a": ["\u0430", "\uff41", "\U0001d41a"],
    "c": ["\u0441", "\uff43"],
    "e": ["\u0435", "\uff45", "\U0001d41e"],
    "i": ["\u0131", "\u0456", "\uff49"],
    "k": ["\u03ba", "\uff4b"],
    "n": ["\uff4e", "\U0001d427"],
    "o": ["\u043e", "\u03bf", "\uff4f"],
    "p": ["\u0440", "\u03c1", "\uff50", "\U0001d429"],
    "r": ["\uff52", "\U0001d42b"],
    "s": ["\u017f", "\u0455", "\uff53"],
    "t": ["\uff54", "\U0001d42d"],
    "w": ["\uff57", "\u051d"],
    "y": ["\u0443", "\uff59"],
}

SHORT_CREDENTIAL_WORDS: list[list[str]] = [
    ["pwd"],
    ["pass"],
    ["pin"],
    ["otp"],
    ["auth"],
    ["bearer"],
    ["cookie"],
    ["session", "key"],
    ["api", "key"],
    ["login", "pwd"],
    ["passphrase"],
]


@st.composite
def lookalike_credential_keys(draw: st.DrawFn) -> str:
    """A credential term with one or more letters swapped for look-alikes of another script or form."""
    key = draw(credential_keys())
    positions = [i for i, c in enumerate(key) if c.lower() in LOOKALIKES]
    swapped = draw(st.lists(st.sampled_from(positions), min_size=1, unique=True)) if positions else []
    chars = list(key)
    for i in swapped:
        chars[i] = draw(st.sampled_from(LOOKALIKES[chars[i].lower()]))
    return "".join(chars)


@st.composite
def short_credential_keys(draw: st.DrawFn) -> str:
    """A short credential name (pwd, pin, otp...) as a whole word, maybe between plain words."""
    prefix = draw(st.lists(st.sampled_from(PLAIN_WORDS), max_size=2))
    suffix = draw(st.lists(st.sampled_from(PLAIN_WORDS), max_size=2))
    words = prefix + draw(st.sampled_from(SHORT_CREDENTIAL_WORDS)) + suffix
    # Glued words lose their boundaries; short names are matched as words.
    return _style(words, draw(st.sampled_from(["snake", "kebab", "upper", "camel", "pascal", "dotted"])))


PRIVATE_KEY_ARMOURS = [
    "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGCANARY\n-----END PGP PRIVATE KEY BLOCK-----\n",
    "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPrivate-Lines: 1\nAAAACANARY\n",
    "PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\n",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAACANARY\n-----END OPENSSH PRIVATE KEY-----\n",
    "-----begin openssh private key-----\nb3BlbnNzaC1rZXktdjEAAAAACANARY\n-----end openssh private key-----\n",
    "-----Begin Rsa Private Key-----\nMIIECANARY\n-----End Rsa Private Key-----\n",
]


@st.composite
def private_key_values(draw: st.DrawFn) -> str:
    """A private key in some armour, maybe base64-encoded (standard or URL-safe, once or twice)."""
    import base64

    value = draw(st.sampled_from([*PRIVATE_KEY_ARMOURS, PEM_PRIVATE_KEY]))
    for _ in range(draw(st.integers(0, 2))):
        encode = draw(st.sampled_from([base64.b64encode, base64.urlsafe_b64encode]))
        value = encode(value.encode()).decode()
        if draw(st.booleans()):
            value = value.rstrip("=")
    return value


@st.composite
def credential_in_value(draw: st.DrawFn) -> str:
    """A URL with a password in its userinfo, or a connection string with a password."""
    password = draw(st.text(alphabet="abcXYZ019!~", min_size=1, max_size=12))
    user = draw(st.text(alphabet="abcdefxyz", min_size=1, max_size=8))
    scheme = draw(st.sampled_from(["postgres", "mysql", "https", "redis", "ldap", "amqp", "mongodb+srv"]))
    word = draw(st.sampled_from(["Password", "password", "PWD", "Pwd", "passwd"]))
    return draw(
        st.sampled_from(
            [
                f"{scheme}://{user}:{password}@db.internal:5432/app",
                f"Server=db;Database=app;User Id={user};{word}={password};",
                f"host=db port=5432 user={user} {word}={password}",
                f"Driver={{SQL}};Uid={user};{word}={password}",
            ]
        )
    )
