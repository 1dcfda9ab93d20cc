"""The RAP gateway: client WSS in, mTLS WSS to the worker out. The worker still decides."""
