"""Alembic revisions: reviewed code, applied in order."""
