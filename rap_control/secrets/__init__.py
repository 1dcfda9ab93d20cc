"""Resource secrets: references now; the encrypted store with the secret-store issue."""
