"""app/cli/demo."""
