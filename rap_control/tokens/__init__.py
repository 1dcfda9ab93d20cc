"""Signed tokens the control plane issues: the RS256 signing key ring and JWKS."""
