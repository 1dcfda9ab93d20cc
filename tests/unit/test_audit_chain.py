"""The audit hash covers every field; details must survive JSONB unchanged."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from rap_control.audit.chain import GENESIS_HASH, canonical_row, check_details, link
from rap_control.audit.types import AuditEvent


def _event() -> AuditEvent:
    return AuditEvent(
        id=uuid.uuid4(),
        chain_id="c",
        sequence=1,
        organization_id=uuid.uuid4(),
        event_type="resource_created",
        actor_type="user",
        actor_id="u",
        target_type="resource",
        target_id="r",
        request_id="req",
        details={"name": "web", "n": 1},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        previous_hash=GENESIS_HASH,
        hash=b"",
    )


@pytest.mark.parametrize(
    "change",
    [
        {"sequence": 2},
        {"event_type": "resource_deleted"},
        {"actor_id": "someone-else"},
        {"target_id": "r2"},
        {"request_id": "other"},
        {"details": {"name": "web", "n": 2}},
        {"created_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=1)},
        {"organization_id": None},
    ],
)
def test_changing_any_field_changes_the_hash(change: dict) -> None:  # type: ignore[type-arg]
    event = _event()
    assert link(GENESIS_HASH, canonical_row(event)) != link(
        GENESIS_HASH, canonical_row(dataclasses.replace(event, **change))
    )


def test_the_hash_depends_on_the_previous_link() -> None:
    row = canonical_row(_event())
    assert link(GENESIS_HASH, row) != link(b"\x01" * 32, row)


def test_time_zones_do_not_change_the_canonical_form() -> None:
    event = _event()
    shifted = dataclasses.replace(
        event, created_at=event.created_at.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))
    )
    assert canonical_row(event) == canonical_row(shifted)


def test_floats_are_refused_in_details() -> None:
    with pytest.raises(TypeError, match=r"details\.ratio"):
        check_details({"ratio": 0.5})
    check_details({"ok": [1, "a", None, True, {"x": "y"}]})
