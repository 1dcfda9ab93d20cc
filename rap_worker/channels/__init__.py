"""Data channels of a bound connection: terminal, clipboard, file upload."""
