"""Workers: enrollment under the platform CA (sessions and the Connect stream come later)."""
