"""Resources: the targets sessions connect to."""
