"""RAP tests."""
