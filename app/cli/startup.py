"""The one line `ledger serve` prints before it answers (SPEC §12): where it listens,
which store it uses (never a user name or a password), whether the admin API and the
console are open, and which of Forge, the service API and webhooks are configured."""

from __future__ import annotations

from app.settings import Settings
from app.version import version
from eventstore.schema_status import describe_url


def _configured(settings: Settings, name: str) -> bool:
    """Whether a setting is set; only that is shown, never its value."""
    value = getattr(settings, name)
    if value is None:
        return False
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    return bool(str(text).strip())


def startup_line(settings: Settings, host: str, port: int) -> str:
    shown_host = f"[{host}]" if ":" in host else host
    admin = (
        "open (LEDGER_ADMIN_TOKEN set)"
        if _configured(settings, "admin_token")
        else "closed (LEDGER_ADMIN_TOKEN not set)"
    )
    switches = [
        f"Forge {'configured' if settings.forge_app_id else 'not configured (LEDGER_FORGE_APP_ID)'}",
        "service API "
        + ("configured" if _configured(settings, "service_tokens") else "not configured"),
        "webhooks " + ("configured" if _configured(settings, "webhook_urls") else "not configured"),
    ]
    return (
        f"ledger {version()} serving http://{shown_host}:{port}"
        f" | store {describe_url(settings.database_url)}"
        f" | admin API and console {admin}"
        f" | {'; '.join(switches)}"
    )
