"""The service: settings, JWT verification, lifecycle decisions, HTTP routes, admin API, CLI."""
