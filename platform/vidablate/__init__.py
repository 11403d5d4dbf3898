"""vidablate."""
