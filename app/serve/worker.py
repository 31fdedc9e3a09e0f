"""What each ``ledger serve`` worker serves: the app, with its collector settled.

uvicorn calls ``serving_app`` (a factory) in every worker process, after the process
has imported everything the app needs and before the first call: the moment to take
the start-up's objects out of the collector's sight (``app.serve.collector``).
"""

from __future__ import annotations

from typing import Any

from app.serve import collector


def serving_app() -> Any:
    """``app.http.app.create_app()``, the collector settled after it."""
    from app.http.app import create_app

    app = create_app()
    collector.settle()
    return app
