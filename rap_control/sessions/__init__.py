"""Sessions: start, leases, worker streams, the secret resolver and the sweeper."""
