"""app/ingest."""
