"""Bank transactions: ingest, validation, synthetic generator, features, scoring."""
