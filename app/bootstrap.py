"""The one place that wires the ledger: settings to a store, the key ring, the key
fetchers, the ingestors and the projection runner. The service (``app.http.app``), the
runner process (``app.serve.runner_process``) and the CLI build what they hold here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anyio.to_thread import run_sync as run_in_threadpool

from app.settings import Settings
from eventstore import open_store
from eventstore.store import EventStore

if TYPE_CHECKING:
    # The CLI imports this module for ``store_for`` alone: what the service wires is
    # imported when it is wired (prometheus-client, among others, must not be imported
    # before ``ledger serve`` has set its multiprocess directory).
    from app.authority.shell import Authority
    from app.ingest.connect.ingestor import LifecycleIngestor
    from app.ingest.forge.ingestor import ForgeIngestor
    from app.licenses.periodic import LicenseChecks
    from app.metrics import Metrics
    from app.outbound.worker import DeliveryMetrics, RunnerWithDeliveries
    from app.queries.readiness import RunnerView
    from eventstore.crypto import KeyRing
    from projections.health import RunnerHealth
    from projections.storage.base import ProjectionStorage


def store_for(settings: Settings, *, existing: bool = False, **options: Any) -> EventStore:
    """The store ``LEDGER_DATABASE_URL`` names, with the settings' options.

    ``existing``: the store must exist with the code's schema; nothing is created or
    migrated (every CLI command but ``migrate``; ``serve`` with
    ``LEDGER_MIGRATE_ON_START=false``). A SELECT-only role can open it so."""
    options.setdefault("rejection_retention_days", settings.rejection_retention_days)
    if existing:
        options |= {"migrate": False, "create": False, "require_current": True}
    return open_store(settings.database_url, **options)


def service_store(settings: Settings, **options: Any) -> EventStore:
    """The store a service process opens: migrated (``LEDGER_MIGRATE_ON_START``, the
    default) or, when the schema is left to ``ledger migrate``, refused unless current."""
    return store_for(settings, existing=not settings.migrate_on_start, **options)


@dataclass(frozen=True)
class Service:
    """What a service process holds for its life, typed (routes reach it through
    ``app.http.deps``)."""

    settings: Settings
    metrics: Metrics
    store: EventStore
    keyring: KeyRing
    connect: LifecycleIngestor
    forge: ForgeIngestor
    projections: ProjectionStorage
    runner: RunnerView | None
    authority: Authority


@asynccontextmanager
async def running_service(
    settings: Settings, metrics: Metrics, store: EventStore | None = None
) -> AsyncIterator[Service]:
    """Open what the service holds (store, key fetchers, ingestors, the projection
    runner) and close it again; an injected ``store`` is left open."""
    from app.authority.shell import Authority
    from app.ingest.connect.ingestor import LifecycleIngestor
    from app.ingest.connect.keys import InstallKeyFetcher
    from app.ingest.forge.ingestor import ForgeIngestor
    from app.ingest.forge.keys import JwksFetcher
    from eventstore.crypto import KeyRing
    from projections.backends import storage_for

    opened: EventStore = (
        store if store is not None else await run_in_threadpool(service_store, settings)
    )
    fetcher = InstallKeyFetcher(
        settings.install_keys_url, metrics=metrics.key_source("install_keys")
    )
    keyring = KeyRing(opened, settings.master_keys())
    # The hot path's own async access to the log, with group commit.
    log = opened.async_log(on_batch=metrics.observe_append_batch)
    await log.open()
    jwks = JwksFetcher(settings.forge_jwks_url_list, metrics=metrics.key_source("forge_jwks"))
    forge = ForgeIngestor(settings, opened, log, jwks)
    storage = storage_for(opened)
    await run_in_threadpool(storage.ensure_ready)
    runner = _runner_thread(settings, opened, metrics)
    checks = _license_checks(settings, opened, metrics, runner)
    authority = Authority(settings, opened, keyring, forge)
    if settings.service_token_map:  # closed, it answers 401 to all: nothing to hold
        await authority.start()
    try:
        yield Service(
            settings=settings,
            metrics=metrics,
            store=opened,
            keyring=keyring,
            connect=LifecycleIngestor(settings, opened, log, keyring, fetcher),
            forge=forge,
            projections=storage,
            runner=_runner_view(settings, runner, checks),
            authority=authority,
        )
    finally:
        await authority.aclose()
        if checks is not None:
            await run_in_threadpool(checks.stop)
        if runner is not None:
            await run_in_threadpool(runner.stop)
        await fetcher.aclose()
        await forge.aclose()
        await log.aclose()
        if store is None:
            opened.close()


def _runner_thread(
    settings: Settings, store: EventStore, metrics: Metrics
) -> RunnerWithDeliveries | None:
    """The projection runner in a thread of this process, unless it runs none or its
    ``ledger serve`` runs the projections in a process of their own (off the HTTP
    workers' CPU and GIL)."""
    if not settings.run_projections or settings.projection_state_file is not None:
        return None
    return start_runner(settings, store, metrics.runner_health(), metrics.webhooks)


def start_runner(
    settings: Settings,
    store: EventStore,
    health: RunnerHealth,
    webhook_metrics: DeliveryMetrics | None,
    **options: Any,
) -> RunnerWithDeliveries:
    """The projection runner thread, and beside it the webhook deliverers (SPEC §11),
    which deliver while that runner leads. ``options``: RunnerThread's."""
    from app.outbound.checkpoints import DeliveryCheckpoints
    from app.outbound.source import MessageSource
    from app.outbound.worker import Deliveries, RunnerWithDeliveries
    from projections.backends import storage_for
    from projections.runner import RunnerThread

    deliveries: Deliveries | None = None
    if settings.webhook_url_list and settings.webhook_secret is not None:
        deliveries = Deliveries(
            settings.webhook_url_list,
            settings.webhook_secret.get_secret_value().strip(),
            MessageSource(store, storage_for(store)),
            DeliveryCheckpoints(store.database),
            webhook_metrics,
        ).start()
    on_state = deliveries.on_role if deliveries is not None else None
    thread = RunnerThread(store, health=health, on_state=on_state, **options).start()
    return RunnerWithDeliveries(thread, deliveries)


def _runner_view(
    settings: Settings, thread: RunnerWithDeliveries | None, checks: LicenseChecks | None = None
) -> RunnerView | None:
    """Where /readyz reads the runner's state: this process's thread (with its webhook
    deliveries and license checks), or the file the runner process of this serve
    publishes."""
    from app.licenses.periodic import RunnerWithChecks
    from projections.health import StateFile

    if thread is None and settings.run_projections and settings.projection_state_file:
        return StateFile(settings.projection_state_file)
    if thread is not None and checks is not None:
        return RunnerWithChecks(thread, checks)
    return thread


def _license_checks(
    settings: Settings, store: EventStore, metrics: Metrics, thread: RunnerWithDeliveries | None
) -> LicenseChecks | None:
    """The license checks (SPEC §11) beside this process's runner thread: they ask the
    sites only while it leads."""
    from app.licenses.periodic import license_checks_for

    if thread is None:
        return None
    return license_checks_for(
        settings, store, lambda: thread.role == "leader", metrics.license_checks()
    )
