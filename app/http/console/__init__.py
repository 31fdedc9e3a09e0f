"""The read-only web console at ``/console`` (SPEC §7): HTML for people, no script."""

from app.http.console import view_routes  # noqa: F401  # registers its pages on the router
from app.http.console import webhooks as _webhooks  # noqa: F401  (its page joins the router)
from app.http.console.routes import front_door, router

__all__ = ["front_door", "router"]
