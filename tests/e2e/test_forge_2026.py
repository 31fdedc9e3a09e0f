"""Forge as it is in 2026, over real HTTP on both stores (SPEC §10, §6):

* any JSON value in every ``app.license`` field and in the optional body fields of
  accepted calls never breaks a read model (the runner, the tables, the admin answers,
  a rebuild);
* one installation spanning a site's Jira and Confluence tenants: ``client_keys``,
  ``client_key``, the links and the migration report.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest.forge.tokens import LICENSE_KEYS
from app.sim.connect import make_install_payload
from app.sim.forge import ForgeInstallation, license_2026
from eventstore.events import ForgeInstalled, Metadata, installation_stream_id
from eventstore.ids import installation_ari
from eventstore.values import NewEvent
from projections.backends import storage_for
from projections.rebuild import rebuild
from projections.storage.tables import SPECS
from tests.e2e.test_forge_e2e import Forge, forge_service
from tests.e2e.test_forge_read_models import admin, links

# Text a body may hold: the ingestion refuses control and bidi-override characters (400).
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs")), max_size=8)
# Any JSON value, kept small (integers within what every JSON reader keeps exactly).
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
LICENSE_FIELDS = (
    "active",
    "isActive",
    "type",
    "isEvaluation",
    "trialEndDate",
    "subscriptionEndDate",
    "billingPeriod",
    "supportEntitlementNumber",
    "ccpEntitlementId",
    "ccpEntitlementSlug",
    "capabilitySet",
    "modes",
)
# A license: absent, not an object, or an object with any JSON in any of its fields.
LICENSES = st.one_of(
    st.none(),
    JSON_VALUES,
    st.fixed_dictionaries({}, optional=dict.fromkeys(LICENSE_FIELDS, JSON_VALUES)),
)
# Optional body fields of installed/upgraded: any JSON, except what would name another
# site (rule 5 refuses that call; these tests want accepted calls).
OPTIONAL_BODY = st.fixed_dictionaries(
    {},
    optional={
        "installerAccountId": JSON_VALUES,
        "upgraderAccountId": JSON_VALUES,
        "environment": JSON_VALUES,
        "eventType": JSON_VALUES,
        "selfGenerated": JSON_VALUES,
        "context": JSON_VALUES.filter(lambda v: not isinstance(v, dict | str)),
        "extra": JSON_VALUES,
    },
)


def _signed(forge: Forge, route: str, site: ForgeInstallation, body: dict[str, Any]) -> Any:
    """An accepted call of ``route`` whose token carries ``site.license`` as is and
    whose body has the optional fields ``body`` (any JSON)."""
    platform = forge.platform
    call = platform.upgraded(site) if route == "upgraded" else platform.installed(site)
    payload = {**call.payload, **body}
    payload["app"] = {**payload["app"], "version": body.get("extra")}
    return platform.call(route, site, payload)


def _read_everything(forge: Forge, site: ForgeInstallation) -> None:
    """Every read model is current and every Forge answer is 200."""
    service = forge.service
    head = service.store.head().position
    assert admin(forge, "/admin/installations")["installations"]
    assert admin(forge, "/admin/migration")["linked"] >= 0
    assert links(forge) is not None
    one = service.admin(f"/admin/installations/{site.installation_id}")
    assert one.status_code == 200, one.text
    assert one.json()["license_active"] in (True, False, None)
    checkpoints = storage_for(service.store).checkpoints()
    assert all(checkpoints[name] == head for name in SPECS), checkpoints
    ready = service.client.get("/readyz")
    assert ready.status_code == 200 and not ready.json().get("degraded"), ready.text


def _uninstalling(forge: Forge) -> set[str]:
    tenants = admin(forge, "/admin/presumed-gone")["tenants"]
    return {t["client_key"] for t in tenants if "uninstalling" in t["presumed"]}


def _tables(forge: Forge) -> dict[str, list[Any]]:
    storage = storage_for(forge.service.store)
    return {name: sorted(storage.load_rows(name), key=repr) for name in SPECS}


def test_any_json_in_the_license_and_optional_fields_never_breaks_a_read_model(
    store_url: str,
) -> None:
    with forge_service(store_url) as forge:
        tenant = forge.service.install(make_install_payload())

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            first=LICENSES,
            second=LICENSES,
            bodies=st.tuples(OPTIONAL_BODY, OPTIONAL_BODY),
            then=st.sampled_from(["nothing", "upgraded", "pre-uninstall"]),
            linked=st.booleans(),
        )
        def probe(
            first: Any,
            second: Any,
            bodies: tuple[dict[str, Any], dict[str, Any]],
            then: str,
            linked: bool,
        ) -> None:
            site = ForgeInstallation(license=first)
            if linked:  # a Connect tenant of the site names the installation
                forge.service.install(
                    make_install_payload(installationId=installation_ari(site.installation_id))
                )
            response = forge.send(_signed(forge, "installed", site, bodies[0]))
            assert response.status_code == 204, response.text
            site.license = second
            if then == "upgraded":
                site.app_version = "2.0.0"
                response = forge.send(_signed(forge, "upgraded", site, bodies[1]))
                assert response.status_code == 204, response.text
            elif then == "pre-uninstall":
                response = forge.send(forge.platform.pre_uninstall(site))
                assert response.status_code == 204, response.text
            _read_everything(forge, site)

        probe()
        assert forge.service.admin(f"/admin/tenants/{tenant['clientKey']}").status_code == 200
        before = _tables(forge)
        assert before["installations"] and before["links"]
        rebuild(forge.service.store)
        assert _tables(forge) == before


def test_the_2026_license_is_recorded_as_documented(store_url: str) -> None:
    """What a token's ``app.license`` becomes in the log and the installation row."""
    cases: list[tuple[Any, dict[str, Any] | None, bool | None]] = [
        (license_2026(), {"active": True, "billing_period": "ANNUAL"}, True),
        ({"isActive": False, "type": "commercial"}, {"active": False}, False),  # pre-2026
        ({"active": True, "isActive": False}, {"active": True}, True),  # active wins
        (
            license_2026(odd=True),
            {"evaluation": '"NULL"', "subscription_end": "1689949707000", "modes": '"USER_ACCESS"'},
            True,
        ),
        ({"active": "true"}, {"active": '"true"'}, None),  # text, not a boolean: unknown
        (None, None, None),  # no license object: no license facts
    ]
    with forge_service(store_url) as forge:
        for sent, recorded, active in cases:
            site = ForgeInstallation(license=sent)
            assert forge.send(forge.platform.installed(site)).status_code == 204
            (event,) = forge.events(site)
            license = event.data.license  # type: ignore[union-attr]  # a ForgeInstalled
            if recorded is None:
                assert license is None
            else:
                assert set(license) == set(LICENSE_KEYS)
                assert {k: license[k] for k in recorded} == recorded, sent
            row = admin(forge, f"/admin/installations/{site.installation_id}")
            assert row["license_active"] is active

        # An installation recorded before the 2026 layout (five license keys): the same
        # license read from a 2026 token is no change.
        site = ForgeInstallation(license={"active": True, "type": "commercial"})
        old = {"active": True, "type": "commercial", "evaluation": None, "trial_end": None,
               "subscription_end": None}  # fmt: skip
        installed = ForgeInstalled(
            site.installation_id, site.cloud_id, site.site_ari, site.product,
            forge.platform.app_id, site.app_version, site.environment_id,
            site.environment_type, site.installer_account_id, old,
        )  # fmt: skip
        stream = installation_stream_id(site.installation_id)
        forge.service.store.append(stream, [NewEvent(installed, Metadata())], 0)
        assert forge.send(forge.platform.installed(site)).status_code == 204
        assert [e.type for e in forge.events(site)] == ["ForgeInstalled", "ForgeInstallConfirmed"]
        assert admin(forge, f"/admin/installations/{site.installation_id}")["license_active"]


def test_one_installation_spans_a_sites_jira_and_confluence_tenants(store_url: str) -> None:
    with forge_service(store_url) as forge:
        service, platform = forge.service, forge.platform
        site = ForgeInstallation()
        ari = installation_ari(site.installation_id)
        base = f"https://site-{uuid.uuid4().hex[:8]}.atlassian.net"
        assert forge.send(platform.installed(site)).status_code == 204
        jira = service.install(make_install_payload(base_url=base, installationId=ari))
        after_jira = service.store.head().position
        confluence = service.install(
            make_install_payload(
                base_url=f"{base}/wiki", productType="confluence", installationId=ari
            )
        )
        # A straggler: its Connect payload names an installation Forge never sent.
        never = str(uuid.uuid4())
        straggler = service.install(make_install_payload(installationId=never))
        # A site new since the move: Forge only.
        new_site = ForgeInstallation()
        assert forge.send(platform.installed(new_site)).status_code == 204

        both = [jira["clientKey"], confluence["clientKey"]]
        connect = links(forge, kind="connect", installation_id=site.installation_id)
        assert [link["client_key"] for link in connect] == both  # in the order seen
        assert all(link["evidence"]["stream"].startswith("tenant:") for link in connect)

        row = admin(forge, f"/admin/installations/{site.installation_id}")
        assert (row["client_keys"], row["client_key"]) == (both, confluence["clientKey"])
        listed = {
            r["installation_id"]: r for r in admin(forge, "/admin/installations")["installations"]
        }
        assert listed[site.installation_id]["client_keys"] == both
        assert listed[site.installation_id]["client_key"] == confluence["clientKey"]
        assert (listed[new_site.installation_id]["client_keys"], listed[new_site.installation_id]["client_key"]) == ([], None)  # fmt: skip
        # As of a position between the two links: only the Jira tenant was linked.
        earlier = service.admin(
            f"/admin/installations/{site.installation_id}", as_of=str(after_jira)
        )
        assert earlier.status_code == 200, earlier.text
        assert (earlier.json()["client_keys"], earlier.json()["client_key"]) == (
            both[:1],
            jira["clientKey"],
        )
        storage = storage_for(service.store)
        for key in both:  # each tenant's own links name it, and the installation lists it
            (link,) = links(forge, client_key=key)
            assert link["installation_id"] == site.installation_id
            found = storage.list_installations(client_keys=[key], limit=None)
            assert [r.installation_id for r in found] == [site.installation_id]
        assert storage.list_installations(client_keys=['"', "%", "_"], limit=None) == []

        report = admin(forge, "/admin/migration")
        assert report["linked"] == 2  # both tenants of the site
        assert [(t["client_key"], t["installation_id"]) for t in report["connect_only"]] == [
            (straggler["clientKey"], never)
        ]
        assert report["connect_only"][0]["installation_ari"] == installation_ari(never)
        assert [r["installation_id"] for r in report["forge_only"]] == [new_site.installation_id]

        # A reinstall on the site inherits both tenants; the as-of answer agrees.
        again = ForgeInstallation(cloud_id=site.cloud_id)
        assert forge.send(platform.installed(again)).status_code == 204
        row = admin(forge, f"/admin/installations/{again.installation_id}")
        assert (row["client_keys"], row["client_key"]) == (both, confluence["clientKey"])
        (reinstall,) = links(forge, kind="reinstall")
        assert reinstall["client_key"] == confluence["clientKey"]
        assert admin(forge, "/admin/migration")["linked"] == 2

        # Presumed gone follows every tenant of the site: the replaced installation's
        # pre-uninstall leaves both tenants on the new one; the new one's takes both.
        assert forge.send(platform.pre_uninstall(site)).status_code == 204
        assert _uninstalling(forge) == set()
        assert forge.send(platform.pre_uninstall(again)).status_code == 204
        assert _uninstalling(forge) == set(both)

        before = _tables(forge)
        rebuild(service.store)
        assert _tables(forge) == before
