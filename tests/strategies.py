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
