"""projections/storage."""
