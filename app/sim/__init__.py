"""app/sim."""
