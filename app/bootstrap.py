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
    from app.metrics import Metrics
    from app.queries.readiness import RunnerView
    from eventstore.crypto import KeyRing
    from projections.runner import RunnerThread
    from projections.storage.base import ProjectionStorage


def store_for(settings: Settings, **options: Any) -> EventStore:
    """The store ``LEDGER_DATABASE_URL`` names, with the settings' options."""
    options.setdefault("rejection_retention_days", settings.rejection_retention_days)
    return open_store(settings.database_url, **options)


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

    opened: EventStore = store if store is not None else await run_in_threadpool(store_for, settings)
    fetcher = InstallKeyFetcher(settings.install_keys_url, metrics=metrics.key_source("install_keys"))
    keyring = KeyRing(opened, settings.master_keys())
    # The hot path's own async access to the log, with group commit.
    log = opened.async_log(on_batch=metrics.observe_append_batch)
    await log.open()
    jwks = JwksFetcher(settings.forge_jwks_url_list, metrics=metrics.key_source("forge_jwks"))
    forge = ForgeIngestor(settings, opened, log, jwks)
    storage = storage_for(opened)
    await run_in_threadpool(storage.ensure)
    runner = _runner_thread(settings, opened, metrics)
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
            runner=_runner_view(settings, runner),
            authority=authority,
        )
    finally:
        await authority.aclose()
        if runner is not None:
            await run_in_threadpool(runner.stop)
        await fetcher.aclose()
        await forge.aclose()
        await log.aclose()
        if store is None:
            opened.close()


def _runner_thread(settings: Settings, store: EventStore, metrics: Metrics) -> RunnerThread | None:
    """The projection runner in a thread of this process, unless it runs none or its
    ``ledger serve`` runs the projections in a process of their own (off the HTTP
    workers' CPU and GIL)."""
    from projections.runner import RunnerThread

    if not settings.run_projections or settings.projection_state_file is not None:
        return None
    return RunnerThread(store, health=metrics.runner_health()).start()


def _runner_view(settings: Settings, thread: RunnerThread | None) -> RunnerView | None:
    """Where /readyz reads the runner's state: this process's thread, or the file the
    runner process of this serve publishes."""
    from projections.health import StateFile

    if thread is None and settings.run_projections and settings.projection_state_file:
        return StateFile(settings.projection_state_file)
    return thread
