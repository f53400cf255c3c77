"""A private Prosody on loopback, made by the project (for `make run` and for tests)."""
