"""The platform CA: worker certificates for enrollment, renewal and mTLS."""
