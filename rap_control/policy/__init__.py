"""Rules that decide what is allowed: credential detection, the production guard."""
