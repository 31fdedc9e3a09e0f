"""The demo's license and presence story (SPEC §11, §6): a license lapsing, a site
vanishing without an ``uninstalled``, and that tenant becoming due for erasure.

``license_story`` is what `ledger demo` calls: it needs the service's settings (the
rounds run in this process, on the service's store and master key, as `ledger licenses
check` does) and a way to install a payload through the service.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from rich.console import Console

from app.bootstrap import store_for
from app.cli.demo.common import section
from app.cli.output import print_records
from app.licenses.check import run_round
from app.queries import reads
from app.settings import Settings
from app.sim.connect import SimulatedSite
from eventstore.clock import utcnow
from eventstore.crypto import KeyRing
from eventstore.events import data_as_dict, stream_id_for
from projections.backends import storage_for
from projections.runner import wait_for_position

ERASURE_DAYS = 30  # the story's LEDGER_ERASURE_AFTER_DAYS, its clock moved ahead


def license_story(
    console: Console, settings: Settings, install: Callable[[dict[str, Any]], None]
) -> None:
    """Two sites: one whose trial lapses, one deleted without an ``uninstalled``."""
    with (
        SimulatedSite(app_key=settings.app_key) as lapsing,
        SimulatedSite(app_key=settings.app_key) as vanishing,
        store_for(settings) as store,
    ):
        lapsing.set_license(active=True, evaluation=True, sen="SEN-DEMO-1")
        vanishing.set_license(active=True, evaluation=False, sen="SEN-DEMO-2")
        keys = []
        for site in (lapsing, vanishing):
            payload = site.install_payload()
            install(payload)
            keys.append(payload["clientKey"])
        keyring = KeyRing(store, settings.master_keys())

        def round_(title: str) -> None:
            report = asyncio.run(run_round(settings, store, keyring, client_keys=keys))
            section(console, f"license check: {title}")
            print_records([report.as_dict()], ("sites", *report.counts), console=console)

        round_("first round records each license")
        lapsing.set_license(active=False, evaluation=True, sen="SEN-DEMO-1")
        vanishing.set_mode("deleted")
        round_("a trial lapsed, a site was deleted")
        rows = []
        for key in keys:
            for event in store.read_stream(stream_id_for(key))[-1:]:
                shown = json.dumps(data_as_dict(event.data), sort_keys=True)
                rows.append({"client_key": key, "event": event.type, "data": shown})
        print_records(rows, ("client_key", "event", "data"), console=console)

        storage = storage_for(store)
        wait_for_position(storage, store.head().position, 10)
        gone = reads.presumed_gone_answer(storage)["tenants"]
        section(console, "presumed gone")
        print_records(
            [dict(t, presumed=",".join(t["presumed"])) for t in gone],
            ("client_key", "presumed", "site_refused_at"),
            console=console,
        )
        later = utcnow() + timedelta(days=ERASURE_DAYS + 1)
        due = reads.erasure_due_answer(store, storage, ERASURE_DAYS, now=later)["tenants"]
        section(console, f"erasure due {ERASURE_DAYS + 1} days later")
        print_records(due, ("client_key", "reason", "gone_since", "due_at"), console=console)
