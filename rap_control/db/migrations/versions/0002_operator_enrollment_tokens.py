"""Enrollment tokens issued by an operator (`rapctl workers token`) have no creating user.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("worker_enrollment_tokens", "created_by", existing_type=sa.UUID(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM worker_enrollment_tokens WHERE created_by IS NULL")
    op.alter_column("worker_enrollment_tokens", "created_by", existing_type=sa.UUID(), nullable=False)
