"""secret_ref parsing is strict, and a reference must name the resource's own secret."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rap_common.errors import InvalidArgument
from rap_control.secrets.ref import SecretRef

ORG, RES = uuid.uuid4(), uuid.uuid4()
GOOD = f"rap-secret://org/{ORG}/resources/{RES}/default"


def test_a_well_formed_reference_round_trips() -> None:
    ref = SecretRef.parse(GOOD)
    assert (ref.organization_id, ref.resource_id, ref.name) == (ORG, RES, "default")
    assert str(ref) == GOOD
    ref.check_belongs_to(ORG, RES)


@pytest.mark.parametrize(
    "text",
    [
        "",
        GOOD.upper(),
        GOOD + "/",
        GOOD + "?x=1",
        GOOD + "#frag",
        GOOD.replace("rap-secret://", "https://"),
        GOOD.replace("/resources/", "/resource/"),
        GOOD.replace(str(RES), str(RES).replace("-", "")),
        GOOD.replace("default", "De fault"),
        GOOD.replace("default", "x" * 65),
        GOOD.replace("default", "%2e%2e"),
        GOOD.replace("default", "../other"),
        " " + GOOD,
    ],
)
def test_malformed_references_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        SecretRef.parse(text)
    assert info.value.reason == "malformed_secret_ref"


def test_a_reference_to_another_organization_or_resource_is_refused() -> None:
    ref = SecretRef.parse(GOOD)
    with pytest.raises(InvalidArgument) as other_org:
        ref.check_belongs_to(uuid.uuid4(), RES)
    assert other_org.value.reason == "secret_ref_wrong_organization"
    with pytest.raises(InvalidArgument) as other_res:
        ref.check_belongs_to(ORG, uuid.uuid4())
    assert other_res.value.reason == "secret_ref_wrong_resource"


@given(st.text(max_size=120))
def test_arbitrary_text_either_parses_to_itself_or_is_refused(text: str) -> None:
    try:
        ref = SecretRef.parse(text)
    except InvalidArgument:
        return
    assert str(ref) == text
