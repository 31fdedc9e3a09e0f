"""app/http/routes."""
