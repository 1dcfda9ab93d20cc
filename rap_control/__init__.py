"""RAP control plane: the source of truth for resources, secrets, sessions,
workers, keys and the audit log."""
