"""The read-only web console at ``/console`` (SPEC §7): HTML for people, no script."""

from app.http.console import view_routes  # noqa: F401  # registers its pages on the router
from app.http.console.routes import router

__all__ = ["router"]
