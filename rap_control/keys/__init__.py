"""Key-encryption keys: providers (local key, PKCS#11 token), their settings, sealing."""
