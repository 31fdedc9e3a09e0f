"""app/queries."""
