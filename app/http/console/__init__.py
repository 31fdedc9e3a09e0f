"""The read-only web console at ``/console`` (SPEC §7): HTML for people, no script."""

from app.http.console.routes import front_door, router

__all__ = ["front_door", "router"]
