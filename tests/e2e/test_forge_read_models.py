"""Installations, identity links and the migration report over real HTTP, both stores;
and the rebuild giving the same rows with Forge streams in the log."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from app.sim.connect import make_install_payload
from app.sim.forge import ForgeInstallation
from eventstore.ids import installation_ari
from projections.backends import storage_for
from projections.rebuild import rebuild
from tests.e2e.test_forge_e2e import Forge, forge_service


def admin(forge: Forge, path: str, **params: Any) -> Any:
    head = forge.service.store.head().position
    response = forge.service.admin(path, min_position=head, **params)
    assert response.status_code == 200, response.text
    return response.json()


def links(forge: Forge, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = admin(forge, "/admin/links", **params)["links"]
    return found


def test_links_both_ways_reinstall_and_the_migration_report(store_url: str) -> None:
    with forge_service(store_url) as forge:
        platform, service = forge.platform, forge.service

        # 1. Connect first, then Forge: the Connect payload names the installation (ARI).
        moving = ForgeInstallation()
        a = service.install(
            make_install_payload(installationId=installation_ari(moving.installation_id))
        )
        assert forge.send(platform.installed(moving)).status_code == 204

        # 2. Forge first, then Connect (naming it by its bare UUID, upper case).
        early = ForgeInstallation()
        assert forge.send(platform.installed(early)).status_code == 204
        b = service.install(make_install_payload(installationId=early.installation_id.upper()))

        # 3. A reinstall on the first site: a new installation for the same cloudId.
        again = ForgeInstallation(cloud_id=moving.cloud_id)
        assert forge.send(platform.installed(again)).status_code == 204

        # The stragglers: a tenant naming an installation Forge never sent, one naming none,
        # and an installation of a site that never had the Connect app.
        silent = ForgeInstallation()
        c = service.install(make_install_payload(installationId=silent.installation_id))
        d = service.install(make_install_payload())
        new_site = ForgeInstallation()
        assert forge.send(platform.installed(new_site)).status_code == 204

        connect = {(x["client_key"], x["installation_id"]) for x in links(forge, kind="connect")}
        assert connect == {
            (a["clientKey"], moving.installation_id),
            (b["clientKey"], early.installation_id),
            (c["clientKey"], silent.installation_id),
        }
        (reinstall,) = links(forge, kind="reinstall")
        assert reinstall["previous_installation_id"] == moving.installation_id
        assert reinstall["installation_id"] == again.installation_id
        assert reinstall["client_key"] == a["clientKey"]
        assert reinstall["evidence"]["stream"] == f"installation:{again.installation_id}"
        assert reinstall["installation_ari"] == installation_ari(again.installation_id)
        # Filters accept an installation in either spelling.
        by_ari = links(forge, installation_id=installation_ari(moving.installation_id))
        assert {x["kind"] for x in by_ari} == {"connect", "reinstall"}
        assert (
            links(forge, client_key=b["clientKey"])[0]["installation_id"] == early.installation_id
        )

        rows = {
            r["installation_id"]: r for r in admin(forge, "/admin/installations")["installations"]
        }
        assert rows[moving.installation_id]["client_key"] == a["clientKey"]
        assert rows[early.installation_id]["client_key"] == b["clientKey"]
        assert rows[again.installation_id]["client_key"] == a["clientKey"]  # inherited
        assert rows[new_site.installation_id]["client_key"] is None
        assert rows[moving.installation_id]["installation_ari"] == installation_ari(
            moving.installation_id
        )

        ids = sorted(rows)
        page = admin(forge, "/admin/installations", limit=2)
        assert [r["installation_id"] for r in page["installations"]] == ids[:2]
        rest = admin(forge, "/admin/installations", limit=2, after=installation_ari(page["next"]))
        assert [r["installation_id"] for r in rest["installations"]] == ids[2:]

        tenant = service.admin(f"/admin/tenants/{a['clientKey']}").json()
        assert tenant["installation_id"] == moving.installation_id

        report = admin(forge, "/admin/migration")
        assert report["linked"] == 2
        assert [(t["client_key"], t["installation_id"]) for t in report["connect_only"]] == sorted(
            [(c["clientKey"], silent.installation_id), (d["clientKey"], None)]
        )
        assert [r["installation_id"] for r in report["forge_only"]] == [new_site.installation_id]

        # Rebuild equivalence, with Forge streams in the log.
        storage = storage_for(service.store)
        before = {name: _table(storage, name) for name in ("tenants", "installations", "links")}
        rebuild(service.store)
        after = {name: _table(storage, name) for name in ("tenants", "installations", "links")}
        assert after == before
        assert len(before["links"]) == 4 and len(before["installations"]) == 4


def _table(storage: Any, name: str) -> list[Any]:
    return sorted(storage.load_rows(name), key=repr)


def test_installation_paths_states_and_as_of(store_url: str) -> None:
    with forge_service(store_url) as forge:
        platform = forge.platform
        installation = ForgeInstallation(app_version="1.0.0")
        assert forge.send(platform.installed(installation)).status_code == 204
        installed_at = forge.service.store.head().position
        installation.app_version = "2.0.0"
        assert forge.send(platform.upgraded(installation)).status_code == 204
        assert forge.send(platform.pre_uninstall(installation)).status_code == 204

        uuid_form = installation.installation_id
        ari_form = installation_ari(uuid_form)
        for spelled in (uuid_form, uuid_form.upper(), ari_form, quote(ari_form, safe="")):
            answer = forge.service.admin(f"/admin/installations/{spelled}")
            assert answer.status_code == 200, (spelled, answer.text)
            body = answer.json()
            assert body["installation_id"] == uuid_form
            assert body["installation_ari"] == ari_form
            assert body["state"] == "uninstalling" and body["app_version"] == "2.0.0"
        then = forge.service.admin(f"/admin/installations/{ari_form}", as_of=installed_at).json()
        assert then["state"] == "installed" and then["app_version"] == "1.0.0"

        events = forge.service.admin(f"/admin/installations/{ari_form}/events").json()["events"]
        assert [e["type"] for e in events] == [
            "ForgeInstalled",
            "ForgeUpgraded",
            "ForgeUninstalling",
        ]

        uninstalling = admin(forge, "/admin/installations", state="uninstalling")["installations"]
        assert [r["installation_id"] for r in uninstalling] == [uuid_form]
        assert admin(forge, "/admin/installations", state="installed")["installations"] == []

        missing = forge.service.admin(f"/admin/installations/{uuid.uuid4()}")
        assert missing.status_code == 404 and missing.json()["error"] == "unknown_installation"
        bad = forge.service.admin("/admin/installations/not-an-id")
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_installation_id"
        before = forge.service.admin(
            f"/admin/installations/{uuid_form}", as_of="2000-01-01T00:00:00Z"
        )
        assert before.status_code == 404 and before.json()["error"] == "not_yet_installed"
        unauthorised = forge.service.client.get("/admin/migration")
        assert unauthorised.status_code == 401


def test_presumed_gone_learns_uninstalling_from_forge(store_url: str) -> None:
    with forge_service(store_url) as forge:
        leaving, staying = ForgeInstallation(), ForgeInstallation()
        a = forge.service.install(make_install_payload(installationId=leaving.installation_id))
        forge.service.install(make_install_payload(installationId=staying.installation_id))
        for installation in (leaving, staying):
            assert forge.send(forge.platform.installed(installation)).status_code == 204
        assert admin(forge, "/admin/presumed-gone")["tenants"] == []

        assert forge.send(forge.platform.pre_uninstall(leaving)).status_code == 204
        (gone,) = admin(forge, "/admin/presumed-gone")["tenants"]
        assert (gone["client_key"], gone["presumed"]) == (a["clientKey"], ["uninstalling"])
        assert gone["state"] == "installed"  # a presumption, not a state change

        # A reinstall on that site replaces the uninstalling installation.
        again = ForgeInstallation(cloud_id=leaving.cloud_id)
        assert forge.send(forge.platform.installed(again)).status_code == 204
        assert admin(forge, "/admin/presumed-gone")["tenants"] == []


def test_a_read_model_whose_columns_changed_is_refolded(store: Any) -> None:
    """Upgrading to tenants with ``installation_id``: the old table is replaced and its
    group's checkpoints start again from 0; other read models keep theirs."""
    storage = storage_for(store)
    storage.ensure()
    with storage._transaction() as tx:
        tx.execute("ALTER TABLE tenants DROP COLUMN installation_id")
        tx.execute("UPDATE projection_checkpoints SET position = 7")
    storage.ensure()
    assert storage.checkpoints() == {
        "tenants": 0,
        "descriptors": 0,
        "base_urls": 7,
        "reimports": 7,
        "installations": 7,
        "links": 7,
    }
    assert storage.load_rows("tenants") == []
    storage.ensure()  # and nothing more happens the next time
    assert storage.checkpoints()["base_urls"] == 7
