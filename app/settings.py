"""Settings from the environment (SPEC §7), every variable with its documented default."""

from __future__ import annotations

import ipaddress
import re
from functools import cached_property
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.outbound.config import check_webhook_settings
from eventstore.crypto import CryptoError, MasterKeys, load_or_create_master_key
from eventstore.ids import app_uuid

# prometheus-client's own variable: the directory where every process of `ledger serve`
# writes its metrics (app.serve sets it; app.metrics reads it).
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


class SettingError(ValueError):
    """A setting that cannot work; its message names the variable and what to fix."""


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in value.split(",") if part.strip())


# Characters a path prefix never needs, and which a proxy or a browser may read otherwise.
_BAD_PATH: Final = re.compile(r"[\\?#%\s\x00-\x1f\x7f]")
_SERVICE_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
MIN_SERVICE_TOKEN_LENGTH: Final = 32


def parse_service_tokens(setting: str) -> dict[str, str]:
    """``name=token,...`` as {token: name}. ValueError names the setting and the pair's
    place, never a token: tokens of at least 32 characters, names and tokens unique."""
    found: dict[str, str] = {}
    for index, pair in enumerate((p.strip() for p in setting.split(",") if p.strip()), 1):
        name, sep, token = (part.strip() for part in pair.partition("="))
        where = f"LEDGER_SERVICE_TOKENS pair #{index}"
        if not sep or _SERVICE_NAME.fullmatch(name) is None:
            raise ValueError(f"{where} must be name=token (name: letters, digits, . _ -)")
        if len(token) < MIN_SERVICE_TOKEN_LENGTH or not token.isprintable() or " " in token:
            raise ValueError(f"{where}: the token must be at least 32 printable characters")
        if token in found or name in found.values():
            raise ValueError(f"{where}: each service needs its own name and token")
        found[token] = name
    return found


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LEDGER_",
        frozen=True,
        extra="ignore",
        # A refused value may be a token or a key: errors name the setting, never echo it.
        hide_input_in_errors=True,
    )

    database_url: str = "sqlite:///./var/ledger.db"
    app_base_url: str = "http://localhost:8000"
    # SPEC §4 rule 3: base URLs the app had before it moved its domain; hosts still on the
    # old descriptor sign for them (comma-separated; empty: none).
    app_previous_base_urls: str = ""
    app_key: str = "tenant-ledger"
    descriptor_version: str = "1"
    install_keys_url: str = "https://connect-install-keys.atlassian.com"
    host_allowlist: str = "*.atlassian.net,*.jira.com,*.jira-dev.com"
    dev_hosts: str = "localhost,127.0.0.1"
    master_key: SecretStr | None = None
    admin_token: SecretStr | None = None
    clock_skew_seconds: int = Field(default=30, ge=0, le=600)
    workers: int = Field(default=1, ge=1, le=64)
    # Refused calls older than this are purged from the rejection log (bounded work, at
    # most once a minute per process, on the insert path).
    rejection_retention_days: int = Field(default=90, ge=1, le=36500)
    # Not in the contract's list: how long a host waits before retrying after a 503.
    retry_after_seconds: int = Field(default=5, ge=1)
    # Whether this process takes part in running the projections (leader or standby).
    run_projections: bool = True
    # Internal, set by `ledger serve` for its processes: the projection runner runs in a
    # process of its own, which publishes its state in this file; the HTTP workers run
    # no runner and show that state in /readyz (app.serve, app.serve.runner_process).
    projection_state_file: Path | None = None
    # The lowest level of the JSON log lines written: accepted calls are at debug.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Where the embedded default keeps its generated master key.
    var_dir: Path = Path("./var")
    # SPEC §10: the Forge app's id (UUID or ARI; unset: every Forge call is refused).
    forge_app_id: str | None = None
    forge_jwks_urls: str = "https://forge.cdn.prod.atlassian-dev.net/.well-known/jwks.json"
    # SPEC §12: `ledger serve` migrates the schema before it answers; false, it refuses
    # to start on a schema older than its code.
    migrate_on_start: bool = True
    # SPEC §12: peers (addresses or CIDRs, comma-separated) whose X-Forwarded-For and
    # X-Forwarded-Proto are believed; nobody's by default.
    trusted_proxies: str = ""
    # SPEC §12: failed authentications an address may make in a minute before each
    # further one answers 429 (app.http.auth_failures).
    auth_failures_per_minute: int = Field(default=10, ge=1, le=100_000)

    # SPEC §11: the runner's leader asks every installed tenant's site for its license
    # this often (hours; 0 turns the check off), at most this many sites a second.
    license_check_hours: float = Field(default=24, ge=0, le=24 * 366)
    license_check_rate: float = Field(default=5, gt=0, le=1000)
    # SPEC §6: tenants gone for longer than this many days are due for erasure (unset: off).
    erasure_after_days: int | None = Field(default=None, ge=0, le=36500)

    # SPEC §11: the vendor's services that may call /auth/* (comma-separated name=token).
    service_tokens: SecretStr | None = None
    # SPEC §11: the path prefix under which the vendor's proxy mounts the ledger (and strips).
    root_path: str = ""

    @field_validator("database_url")
    @classmethod
    def _database_url_is_known(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(
                "LEDGER_DATABASE_URL must start with sqlite:/// or postgresql://"
                f" (got a {value.partition(':')[0] or 'blank'!r} URL)"
            )
        return value

    @field_validator("master_key")
    @classmethod
    def _master_key_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            try:
                MasterKeys.parse(value.get_secret_value())
            except CryptoError as error:
                raise ValueError(
                    f"LEDGER_MASTER_KEY: {error} (32 random bytes, base64: openssl rand -base64 32)"
                ) from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies_parse(cls, value: str) -> str:
        for part in (p.strip() for p in value.split(",")):
            try:
                if part:
                    ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(
                    f"LEDGER_TRUSTED_PROXIES: {part!r} is not an address or a CIDR"
                ) from None
        return value

    @cached_property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in self.trusted_proxies.split(",")
            if part.strip()
        )
    # SPEC §11: where every event of the log is delivered as a Standard Webhooks message
    # (comma-separated; https, or http for LEDGER_DEV_HOSTS), and the signing secret.
    webhook_urls: str = ""
    webhook_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _webhooks_are_sound(self) -> Settings:
        check_webhook_settings(self.webhook_url_list, self.webhook_secret, self.dev_host_names)
        return self

    @cached_property
    def webhook_url_list(self) -> tuple[str, ...]:
        """``LEDGER_WEBHOOK_URLS``, in order (the order names them: index 0, 1, …)."""
        return tuple(url.strip() for url in self.webhook_urls.split(",") if url.strip())

    @field_validator("forge_app_id")
    @classmethod
    def _forge_app_id_is_an_app(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if app_uuid(value.strip()) is None:
            raise ValueError(
                "LEDGER_FORGE_APP_ID must be a UUID or ari:cloud:ecosystem::app/<uuid>"
            )
        return value.strip()

    @field_validator("app_previous_base_urls")
    @classmethod
    def _previous_base_urls_are_urls(cls, value: str) -> str:
        for url in (part.strip() for part in value.split(",")):
            if url and not url.lower().startswith(("https://", "http://")):
                raise ValueError(
                    "LEDGER_APP_PREVIOUS_BASE_URLS must be comma-separated http(s) URLs"
                )
        return value

    @field_validator("service_tokens")
    @classmethod
    def _service_tokens_are_pairs(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_service_tokens(value.get_secret_value())  # raises, naming no token
        return value

    @field_validator("root_path")
    @classmethod
    def _root_path_is_a_path(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and (
            not value.startswith("/") or value.startswith("//") or _BAD_PATH.search(value)
        ):
            raise ValueError("LEDGER_ROOT_PATH must be a path such as /ledger (or empty)")
        return value

    @model_validator(mode="after")
    def _service_tokens_are_not_the_admin_token(self) -> Settings:
        admin = self.admin_token.get_secret_value() if self.admin_token is not None else ""
        if admin and admin.strip() in self.service_token_map:
            raise ValueError("LEDGER_SERVICE_TOKENS must not hold LEDGER_ADMIN_TOKEN")
        return self

    @cached_property
    def service_token_map(self) -> dict[str, str]:
        """Service name by token (SPEC §11); empty when the service API is closed."""
        if self.service_tokens is None:
            return {}
        return parse_service_tokens(self.service_tokens.get_secret_value())

    @cached_property
    def app_base_urls(self) -> tuple[str, ...]:
        """The current app base URL first, then the previous ones (SPEC §4 rule 3)."""
        previous = (url.strip() for url in self.app_previous_base_urls.split(","))
        found = [self.app_base_url]
        for url in previous:
            if url and url.rstrip("/") not in {known.rstrip("/") for known in found}:
                found.append(url)
        return tuple(found)

    @property
    def forge_app_uuid(self) -> str | None:
        return app_uuid(self.forge_app_id) if self.forge_app_id else None

    @cached_property
    def forge_jwks_url_list(self) -> tuple[str, ...]:
        return tuple(url.strip() for url in self.forge_jwks_urls.split(",") if url.strip())

    @cached_property
    def allowed_host_patterns(self) -> tuple[str, ...]:
        return _split(self.host_allowlist)

    @cached_property
    def dev_host_names(self) -> tuple[str, ...]:
        return _split(self.dev_hosts)

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    def master_keys(self) -> MasterKeys:
        """The configured master keys; on the embedded default, one generated on first start."""
        if self.master_key is not None and self.master_key.get_secret_value().strip():
            return MasterKeys.parse(self.master_key.get_secret_value())
        if not self.uses_sqlite:
            raise SettingError(
                "LEDGER_MASTER_KEY must be set when the store is PostgreSQL"
                " (32 random bytes, base64: openssl rand -base64 32)"
            )
        return MasterKeys.parse(load_or_create_master_key(self.var_dir / "master.key"))


def settings_problem(error: ValidationError) -> str:
    """A settings error as one line naming the setting to fix (never a value: it may
    be a secret or a URL with credentials)."""
    first = error.errors()[0]
    message = str(first.get("msg", "")).removeprefix("Value error, ")
    if "LEDGER_" in message:
        return message
    field = ".".join(str(part) for part in first.get("loc", ()))
    return f"LEDGER_{field.upper()}: {message or 'invalid value'}"
