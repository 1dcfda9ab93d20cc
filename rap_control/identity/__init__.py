"""Organizations, users and API tokens; authentication of bearer tokens."""
