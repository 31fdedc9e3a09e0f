"""app/http/console/templates."""
