"""Initial schema: every table of DESIGN.md, and the append-only audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 13:11:49.322334
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The audit log is append-only: the hash chain detects an edited or deleted
# row, and these triggers refuse the edit in the first place. (A superuser
# can still bypass them, e.g. with session_replication_role = replica; the
# chain is what catches that.)
AUDIT_APPEND_ONLY = """
CREATE FUNCTION rap_audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION rap_audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION rap_audit_events_append_only();
"""


def upgrade() -> None:
    op.create_table(
        "audit_chain_heads",
        sa.Column("chain_id", sa.String(length=64), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", name=op.f("pk_audit_chain_heads")),
    )
    op.create_table(
        "encryption_keys",
        sa.Column("key_id", sa.String(length=128), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_encryption_keys")),
    )
    op.create_index(
        "uq_encryption_keys_active",
        "encryption_keys",
        ["active"],
        unique=True,
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "organizations",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("name", name=op.f("uq_organizations_name")),
    )
    op.create_table(
        "platform_ca",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("key_id", sa.String(length=128), nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_ca")),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("key_id", sa.String(length=128), nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("public_jwk", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("publish_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('next', 'active', 'retired')", name=op.f("ck_signing_keys_state")),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("chain_id", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=True),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=300), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous_hash", sa.LargeBinary(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_audit_events_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("chain_id", "sequence", name=op.f("uq_audit_events_chain_id_sequence")),
    )
    op.create_index(
        "ix_audit_events_organization_id_event_type",
        "audit_events",
        ["organization_id", "event_type"],
        unique=False,
    )
    op.create_table(
        "resources",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("secret_ref", sa.String(length=300), nullable=True),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("protocol IN ('rdp', 'vnc', 'ssh', 'tcp')", name=op.f("ck_resources_protocol")),
        sa.ForeignKeyConstraint(
            ["organization_id"], ["organizations.id"], name=op.f("fk_resources_organization_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resources")),
    )
    op.create_index(
        "ix_resources_organization_id_created_at_id",
        "resources",
        ["organization_id", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "uq_resources_organization_id_name_live",
        "resources",
        ["organization_id", "name"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("role IN ('admin', 'member')", name=op.f("ck_users_role")),
        sa.ForeignKeyConstraint(
            ["organization_id"], ["organizations.id"], name=op.f("fk_users_organization_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("organization_id", "email", name=op.f("uq_users_organization_id_email")),
    )
    op.create_index(op.f("ix_users_organization_id"), "users", ["organization_id"], unique=False)
    op.create_table(
        "workers",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("protocols", postgresql.ARRAY(sa.String(length=8)), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("direct_url", sa.String(length=300), nullable=True),
        sa.Column("direct_host_names", postgresql.ARRAY(sa.String(length=253)), nullable=False),
        sa.Column("certificate_serial", sa.String(length=64), nullable=True),
        sa.Column("certificate_not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('online', 'offline', 'revoked')", name=op.f("ck_workers_status")),
        sa.ForeignKeyConstraint(
            ["organization_id"], ["organizations.id"], name=op.f("fk_workers_organization_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.create_index(op.f("ix_workers_organization_id"), "workers", ["organization_id"], unique=False)
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_api_tokens_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_organization_id"), "api_tokens", ["organization_id"], unique=False)
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"], unique=False)
    op.create_table(
        "resource_secrets",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("resource_id", sa.UUID(), nullable=False),
        sa.Column("secret_ref", sa.String(length=300), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("rotation_version", sa.BigInteger(), nullable=False),
        sa.Column("payload_version", sa.Integer(), nullable=False),
        sa.Column("algorithm", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=128), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("safe_metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("payload_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_resource_secrets_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"], ["resources.id"], name=op.f("fk_resource_secrets_resource_id_resources")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resource_secrets")),
        sa.UniqueConstraint("secret_ref", name=op.f("uq_resource_secrets_secret_ref")),
    )
    op.create_index(op.f("ix_resource_secrets_key_id"), "resource_secrets", ["key_id"], unique=False)
    op.create_index(
        op.f("ix_resource_secrets_organization_id"), "resource_secrets", ["organization_id"], unique=False
    )
    op.create_index(
        op.f("ix_resource_secrets_resource_id"), "resource_secrets", ["resource_id"], unique=False
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("resource_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("worker_id", sa.UUID(), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("channels", postgresql.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column("end_reason", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('requested', 'assigned', 'starting', 'active', 'terminated', 'failed')",
            name=op.f("ck_sessions_state"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"], ["organizations.id"], name=op.f("fk_sessions_organization_id_organizations")
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"], ["resources.id"], name=op.f("fk_sessions_resource_id_resources")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_sessions_user_id_users")),
        sa.ForeignKeyConstraint(["worker_id"], ["workers.id"], name=op.f("fk_sessions_worker_id_workers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_index(
        "ix_sessions_organization_id_created_at_id",
        "sessions",
        ["organization_id", "created_at", "id"],
        unique=False,
    )
    op.create_index("ix_sessions_worker_id_state", "sessions", ["worker_id", "state"], unique=False)
    op.create_table(
        "worker_enrollment_tokens",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("worker_name", sa.String(length=128), nullable=False),
        sa.Column("created_by", sa.UUID(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker_id", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_worker_enrollment_tokens_created_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_worker_enrollment_tokens_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.id"], name=op.f("fk_worker_enrollment_tokens_worker_id_workers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_enrollment_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_worker_enrollment_tokens_token_hash")),
    )
    op.create_index(
        op.f("ix_worker_enrollment_tokens_organization_id"),
        "worker_enrollment_tokens",
        ["organization_id"],
        unique=False,
    )
    op.create_table(
        "attachments",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("session_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("channels", postgresql.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column("token_jti", sa.String(length=64), nullable=False),
        sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('active', 'detached', 'superseded')", name=op.f("ck_attachments_state")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_attachments_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_attachments_session_id_sessions")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_attachments_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attachments")),
        sa.UniqueConstraint("token_jti", name=op.f("uq_attachments_token_jti")),
    )
    op.create_index(op.f("ix_attachments_session_id"), "attachments", ["session_id"], unique=False)
    op.create_index(
        "uq_attachments_session_id_active",
        "attachments",
        ["session_id"],
        unique=True,
        postgresql_where=sa.text("state = 'active'"),
    )
    op.create_table(
        "session_leases",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("session_id", sa.UUID(), nullable=False),
        sa.Column("worker_id", sa.UUID(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_session_leases_session_id_sessions")
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.id"], name=op.f("fk_session_leases_worker_id_workers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_leases")),
    )
    op.create_index(op.f("ix_session_leases_expires_at"), "session_leases", ["expires_at"], unique=False)
    op.create_index(op.f("ix_session_leases_session_id"), "session_leases", ["session_id"], unique=False)

    op.execute(AUDIT_APPEND_ONLY)


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_events_no_truncate ON audit_events")
    op.execute("DROP TRIGGER audit_events_no_update_delete ON audit_events")
    op.execute("DROP FUNCTION rap_audit_events_append_only()")
    op.drop_index(op.f("ix_session_leases_session_id"), table_name="session_leases")
    op.drop_index(op.f("ix_session_leases_expires_at"), table_name="session_leases")
    op.drop_table("session_leases")
    op.drop_index(
        "uq_attachments_session_id_active",
        table_name="attachments",
        postgresql_where=sa.text("state = 'active'"),
    )
    op.drop_index(op.f("ix_attachments_session_id"), table_name="attachments")
    op.drop_table("attachments")
    op.drop_index(op.f("ix_worker_enrollment_tokens_organization_id"), table_name="worker_enrollment_tokens")
    op.drop_table("worker_enrollment_tokens")
    op.drop_index("ix_sessions_worker_id_state", table_name="sessions")
    op.drop_index("ix_sessions_organization_id_created_at_id", table_name="sessions")
    op.drop_table("sessions")
    op.drop_index(op.f("ix_resource_secrets_resource_id"), table_name="resource_secrets")
    op.drop_index(op.f("ix_resource_secrets_organization_id"), table_name="resource_secrets")
    op.drop_index(op.f("ix_resource_secrets_key_id"), table_name="resource_secrets")
    op.drop_table("resource_secrets")
    op.drop_index(op.f("ix_api_tokens_user_id"), table_name="api_tokens")
    op.drop_index(op.f("ix_api_tokens_organization_id"), table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_index(op.f("ix_workers_organization_id"), table_name="workers")
    op.drop_table("workers")
    op.drop_index(op.f("ix_users_organization_id"), table_name="users")
    op.drop_table("users")
    op.drop_index(
        "uq_resources_organization_id_name_live",
        table_name="resources",
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.drop_index("ix_resources_organization_id_created_at_id", table_name="resources")
    op.drop_table("resources")
    op.drop_index("ix_audit_events_organization_id_event_type", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_table("signing_keys")
    op.drop_table("platform_ca")
    op.drop_table("organizations")
    op.drop_index(
        "uq_encryption_keys_active", table_name="encryption_keys", postgresql_where=sa.text("active")
    )
    op.drop_table("encryption_keys")
    op.drop_table("audit_chain_heads")
