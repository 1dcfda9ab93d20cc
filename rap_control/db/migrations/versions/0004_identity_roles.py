"""Platform identities have roles: a worker runs sessions, a gateway only relays.

The role is set by the enrollment token and recorded on the identity's row,
beside the URI SAN of its certificate. Existing rows are workers: a gateway
enrolled before this revision holds a worker identity and must be enrolled
again with a gateway token (`rap-gateway enroll`), then the old identity
revoked.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("workers", "worker_enrollment_tokens"):
        op.add_column(table, sa.Column("role", sa.String(8), nullable=False, server_default="worker"))
        op.create_check_constraint(op.f(f"ck_{table}_role"), table, "role IN ('worker', 'gateway')")


def downgrade() -> None:
    for table in ("workers", "worker_enrollment_tokens"):
        op.drop_constraint(op.f(f"ck_{table}_role"), table, type_="check")
        op.drop_column(table, "role")
