"""app/serve."""
