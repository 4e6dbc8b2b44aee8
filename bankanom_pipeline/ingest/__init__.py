"""Landing zone to raw tables."""
