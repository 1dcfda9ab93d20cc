"""The gRPC edge: thin servicers, conversions, and the interceptor."""
