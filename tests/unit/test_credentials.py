"""Property tests of credential-like key detection (the production guard's core)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rap_control.policy.credentials import (
    credential_paths,
    fold_key,
    is_credential_key,
    is_credential_value,
)
from rap_control.policy.guard import ProductionGuard
from rap_control.resources.types import Protocol
from tests.strategies import (
    ORDINARY_KEYS,
    PEM_KINDS,
    PEM_PRIVATE_KEY,
    credential_in_value,
    credential_keys,
    lookalike_credential_keys,
    ordinary_keys,
    planted_metadata,
    private_key_values,
    short_credential_keys,
)

CANARY = "canary-Zq81-value"


@given(credential_keys())
def test_every_variant_of_a_credential_term_is_credential_like(key: str) -> None:
    assert is_credential_key(key), key


@given(planted_metadata(leaf=CANARY))
def test_a_credential_key_at_any_depth_is_found_by_its_path(planted) -> None:  # type: ignore[no-untyped-def]
    paths = list(credential_paths(planted.metadata))
    assert planted.path in paths
    assert not any(CANARY in p for p in paths)


@given(planted_metadata(leaf={"nested": [1.0, {"x": CANARY}]}))
def test_a_credential_key_holding_an_object_is_reported_once_at_the_key(planted) -> None:  # type: ignore[no-untyped-def]
    assert list(credential_paths(planted.metadata)) == [planted.path]


@given(st.sampled_from(PEM_KINDS), ordinary_keys(), st.data())
def test_a_pem_private_key_value_is_found_under_any_key(kind: str, key: str, data: st.DataObject) -> None:
    assume(not is_credential_key(key))
    pem = PEM_PRIVATE_KEY.replace("PRIVATE KEY", f"{kind}PRIVATE KEY")
    planted = data.draw(planted_metadata(leaf=pem, key=key))
    assert planted.path in list(credential_paths(planted.metadata))


@given(
    st.dictionaries(
        ordinary_keys(), st.one_of(st.text(max_size=30), st.lists(st.text(max_size=5))), max_size=6
    )
)
def test_ordinary_metadata_passes(metadata: dict) -> None:  # type: ignore[type-arg]
    assume(not any(is_credential_key(k) for k in metadata))
    assume(not any(isinstance(v, str) and is_credential_value(v) for v in metadata.values()))
    assert list(credential_paths(metadata)) == []


def test_named_ordinary_keys_pass() -> None:
    metadata = {k: "on" for k in ORDINARY_KEYS}
    metadata["public_certificate"] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    assert list(credential_paths(metadata)) == []


def test_folding_removes_case_separators_and_humps() -> None:
    assert fold_key("X-Api_Key.v2") == "xapikeyv2"
    assert fold_key("sshPrivateKey") == "sshprivatekey"


def test_guard_is_off_in_development_and_on_in_production() -> None:
    metadata = {"rdp": {"password": CANARY}}
    assert ProductionGuard(production=False).check_resource(Protocol.RDP, None, metadata).ok
    verdict = ProductionGuard(production=True).check_resource(Protocol.RDP, None, metadata)
    assert verdict.credential_paths == ("metadata.rdp.password",)
    assert verdict.missing_secret_ref
    assert CANARY not in verdict.message()


@given(st.sampled_from([Protocol.RDP, Protocol.VNC, Protocol.SSH]))
def test_credentialed_protocols_need_a_secret_ref_in_production(protocol: Protocol) -> None:
    guard = ProductionGuard(production=True)
    assert guard.check_resource(protocol, None, {}).missing_secret_ref
    assert guard.check_resource(protocol, "rap-secret://...", {}).ok
    assert guard.check_resource(Protocol.TCP, None, {}).ok


# -- look-alikes, short names, other key armours, credentials in values --------


@given(lookalike_credential_keys())
def test_a_credential_term_spelled_with_lookalikes_is_credential_like(key: str) -> None:
    assert is_credential_key(key), ascii(key)


@given(short_credential_keys())
def test_short_credential_names_are_credential_like(key: str) -> None:
    assert is_credential_key(key), key


@given(private_key_values(), ordinary_keys(), st.data())
def test_a_private_key_in_any_armour_or_base64_is_found_under_any_key(
    value: str, key: str, data: st.DataObject
) -> None:
    assume(not is_credential_key(key))
    planted = data.draw(planted_metadata(leaf=value, key=key))
    assert planted.path in list(credential_paths(planted.metadata))


@given(credential_in_value(), ordinary_keys(), st.data())
def test_a_password_inside_a_url_or_connection_string_is_found(
    value: str, key: str, data: st.DataObject
) -> None:
    assume(not is_credential_key(key))
    planted = data.draw(planted_metadata(leaf=value, key=key))
    paths = list(credential_paths(planted.metadata))
    assert planted.path in paths
    assert not any(value in p for p in paths)


@pytest.mark.parametrize(
    "key",
    [
        "p\u0430ssword",  # Cyrillic a
        "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44",  # fullwidth
        "\U0001d429\U0001d41a\U0001d42c\U0001d42c\U0001d430\U0001d428\U0001d42b\U0001d41d",  # math bold
        "\u017fecret",  # long s
        "pr\u0131vate_key",  # dotless i
        "ap\u0131Key",
        "\u03a1assword",  # Greek capital rho
        "t\u043eken",
        "d\u0430ta",  # not a credential, but mixes Latin and Cyrillic
    ],
)
def test_named_lookalike_keys_are_refused(key: str) -> None:
    assert is_credential_key(key), ascii(key)


@pytest.mark.parametrize(
    "key",
    [
        "ping",
        "compass",
        "mapping",
        "author",
        "passport",
        "spinner",
        "ssh_host_key",
        "hostname",
        "\u65e5\u672c\u8a9e\u30ad\u30fc",
        "caf\u00e9",
    ],
)
def test_words_that_merely_contain_a_short_name_pass(key: str) -> None:
    assert not is_credential_key(key), key


def test_a_login_beside_a_password_is_reported_as_a_pair() -> None:
    assert list(credential_paths({"login": "bob", "pwd": CANARY, "host": "h"})) == [
        "metadata.login",
        "metadata.pwd",
    ]


@pytest.mark.parametrize(
    "value",
    [
        "https://example.com/a?b=c",
        "ssh://bob@host",
        "https://user@host:8443/x",
        "password reset page",
        "-----BEGIN CERTIFICATE-----",
    ],
)
def test_ordinary_values_pass(value: str) -> None:
    assert not is_credential_value(value)
