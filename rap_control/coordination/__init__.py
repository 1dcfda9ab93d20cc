"""Live routing between control-plane replicas: which replica holds a worker's
stream, and delivery of events to it. Carries ids and event kinds only."""
