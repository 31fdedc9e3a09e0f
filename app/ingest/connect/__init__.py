"""app/ingest/connect."""
