"""The story `ledger demo` tells: a list of steps on a simulated calendar.

Each ``Step`` happens on a day of the story (days since it began) and is one call,
Connect or Forge, sent by ``Cast``: the simulated Connect host, the simulated Forge
platform and the sites they know. ``DemoClock`` moves the service's clock
(``eventstore.clock.simulated_clock``) from day to day without sleeping, so the
descriptor adoption, the Connect → Forge burn-down and the presumed-gone tenants have
weeks of history; the story is placed so that its last day ends just before the real
now. To tell more, append steps to ``STEPS`` (keep the days in order; a step that
needs the demo's own Forge platform says ``forge=True``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from app.sim.connect import make_install_payload
from app.sim.forge import ForgeInstallation, license_2026
from eventstore.clock import system_now
from eventstore.ids import installation_ari

if TYPE_CHECKING:
    from app.cli.demo.common import DemoHost
    from app.cli.demo.forge import ForgeDemo

MARGIN = timedelta(hours=1)  # the story's last day ends this long before the real now


class DemoClock:
    """Simulated time: the story's start plus the day it is on, plus the real seconds
    since that day began (so calls of one day keep their order)."""

    def __init__(self, days: float) -> None:
        self.start = system_now() - timedelta(days=days) - MARGIN
        self._day_began = self.start
        self._since = time.monotonic()

    def __call__(self) -> datetime:
        return self._day_began + timedelta(seconds=time.monotonic() - self._since)

    def move_to(self, day: float) -> None:
        when = self.start + timedelta(days=day)
        if when > self():  # never backwards
            self._day_began, self._since = when, time.monotonic()


@dataclass
class Cast:
    """Who acts in the story: the hosts, and the sites by name (mutable: a rename or a
    rotated secret is an assignment before the next call)."""

    connect: DemoHost
    forge: ForgeDemo | None
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)
    installations: dict[str, ForgeInstallation] = field(default_factory=dict)

    def send(self, say: str, event: str, site: str, **options: Any) -> int:
        return self.connect.send(say, event, self.sites[site], **options)

    def forge_send(self, say: str, route: str, installation: str) -> int:
        assert self.forge is not None  # a forge=True step runs only with the platform
        return self.forge.send(say, route, self.installations[installation])


Act = Callable[[Cast, str], object]


@dataclass(frozen=True)
class Step:
    day: float
    say: str
    act: Act
    forge: bool = False  # needs the demo's own Forge platform (its JWKS)


def call(event: str, site: str, **options: Any) -> Act:
    """A Connect lifecycle call for ``site`` as it stands."""
    return lambda cast, say: cast.send(say, event, site, **options)


def update(site: str, version: str = "1", **fields: Any) -> Act:
    """``site`` changes (fields of its payload), then the host says so with ``installed``."""

    def act(cast: Cast, say: str) -> int:
        cast.sites[site] = dict(cast.sites[site], **fields)
        return cast.send(say, "installed", site, version=version)

    return act


def new_site(name: str, version: str = "1", **fields: Any) -> Act:
    """A site that installs the app (``fields``: e.g. productType)."""

    def act(cast: Cast, say: str) -> int:
        cast.sites[name] = make_install_payload(base_url=f"https://{name}.atlassian.net", **fields)
        return cast.send(say, "installed", name, version=version)

    return act


def reimport(name: str, of: str) -> Act:
    """A new clientKey installed at the base URL ``of`` holds (a site restored or copied)."""

    def act(cast: Cast, say: str) -> int:
        old = cast.sites[of]
        cast.sites[name] = make_install_payload(
            base_url=old["baseUrl"], productType=old["productType"]
        )
        return cast.send(say, "installed", name, version="2")

    return act


def forged(site: str) -> Act:
    """An install for ``site`` signed with a secret the attacker chose: refused."""

    def act(cast: Cast, say: str) -> int:
        payload = dict(cast.sites[site], sharedSecret="attacker")
        return cast.connect.send(say, "installed", payload, alg="HS256", version="2")

    return act


def to_forge(site: str, installation: str, version: str = "2") -> Act:
    """``site``'s Connect payload names its (new) Forge installation."""

    def act(cast: Cast, say: str) -> int:
        found = cast.installations.setdefault(installation, ForgeInstallation(app_version="2.0.0"))
        cast.sites[site] = dict(
            cast.sites[site], installationId=installation_ari(found.installation_id)
        )
        assert cast.forge is not None
        return cast.forge.connect(cast.connect, say, cast.sites[site], version=version)

    return act


def forge(route: str, installation: str, **changes: Any) -> Act:
    """A Forge lifecycle call for ``installation`` after ``changes`` (app_version, license…)."""

    def act(cast: Cast, say: str) -> int:
        found = cast.installations.setdefault(installation, ForgeInstallation(app_version="2.0.0"))
        for name, value in changes.items():
            setattr(found, name, value)
        return cast.forge_send(say, route, installation)

    return act


def reinstall(installation: str, was: str) -> Act:
    """The site of ``was`` installs again on Forge: a new installationId, the same cloud."""

    def act(cast: Cast, say: str) -> int:
        before = cast.installations[was]
        cast.installations[installation] = ForgeInstallation(
            cloud_id=before.cloud_id, app_version=before.app_version
        )
        return cast.forge_send(say, "installed", installation)

    return act


def rotate_forge_key(route: str, installation: str) -> Act:
    def act(cast: Cast, say: str) -> int:
        assert cast.forge is not None
        cast.forge.platform.rotate()
        return cast.forge_send(say, route, installation)

    return act


def rotate_secret(site: str) -> Act:
    return update(site, sharedSecret=secrets.token_urlsafe(48))


def umbrella_connect(cast: Cast, say: str) -> int:
    """umbrella's Connect install names the Forge installation it is to become."""
    cast.installations["umbrella"] = ForgeInstallation(app_version="1.4.0")
    cast.sites["umbrella"] = make_install_payload(
        base_url="https://umbrella.atlassian.net",
        installationId=installation_ari(cast.installations["umbrella"].installation_id),
    )
    assert cast.forge is not None
    return cast.forge.connect(cast.connect, say, cast.sites["umbrella"])


STEPS: list[Step] = [
    Step(0, "acme installs the app", new_site("acme")),
    Step(0, "initech installs the app (and is never heard of again)", new_site("initech")),
    Step(0.1, "acme's host enables it", call("enabled", "acme", alg="HS256")),
    Step(2, "hooli installs the app", new_site("hooli")),
    Step(3, "stark installs the app", new_site("stark")),
    Step(4, "umbrella installs the Connect app (names its installation)", umbrella_connect, True),
    Step(7, "Atlassian rotates acme's secret", rotate_secret("acme")),
    Step(
        10,
        "acme renames its site",
        update(
            "acme",
            baseUrl="https://acme-corp.atlassian.net",
            displayUrl="https://acme-corp.atlassian.net",
        ),
    ),
    Step(11, "Forge: installed", forge("installed", "umbrella"), True),
    Step(11.01, "Forge retries it (new token, same delivery)", forge("retry", "umbrella"), True),
    Step(14, "descriptor v2 reaches acme", update("acme", version="2")),
    Step(14.5, "descriptor v2 reaches hooli", update("hooli", version="2")),
    Step(15, "descriptor v2 reaches stark", update("stark", version="2")),
    Step(
        16,
        "globex installs the app (Confluence)",
        new_site("globex", "2", productType="confluence"),
    ),
    Step(
        18,
        "a major version reaches umbrella",
        forge("upgraded", "umbrella", app_version="2.0.0"),
        True,
    ),
    Step(
        21,
        "globex's site is reimported (new clientKey)",
        reimport("globex-reimported", of="globex"),
    ),
    Step(
        24,
        "umbrella's license becomes an evaluation",
        forge("upgraded", "umbrella", license=license_2026(isEvaluation=True)),
        True,
    ),
    Step(25, "acme disables the app", call("disabled", "acme", alg="HS256", version="2")),
    Step(25.2, "acme enables it again", call("enabled", "acme", alg="HS256", version="2")),
    Step(28, "globex uninstalls", call("uninstalled", "globex")),
    Step(30, "Forge signs with its rotated key", rotate_forge_key("installed", "umbrella"), True),
    Step(
        35, "hooli's Connect payload names its Forge installation", to_forge("hooli", "hooli"), True
    ),
    Step(35.1, "hooli: Forge installed", forge("installed", "hooli"), True),
    Step(38, "umbrella reinstalls (new installationId)", reinstall("umbrella-2", "umbrella"), True),
    Step(
        38.1,
        "its Connect payload names the new installation",
        to_forge("umbrella", "umbrella-2"),
        True,
    ),
    Step(
        42, "stark's Connect payload names its Forge installation", to_forge("stark", "stark"), True
    ),
    Step(42.1, "stark: Forge installed", forge("installed", "stark"), True),
    Step(49, "umbrella starts uninstalling", forge("pre-uninstall", "umbrella-2"), True),
    Step(52, "a new site installs on Forge only", forge("installed", "newcomer"), True),
    Step(56, "a forged install for acme (HS256, own secret)", forged("acme")),
]


def play_steps(cast: Cast, steps: Sequence[Step], clock: DemoClock) -> list[Step]:
    """Every step on its day; returns the steps skipped (Forge ones without a platform)."""
    skipped: list[Step] = []
    for step in steps:
        if step.forge and cast.forge is None:
            skipped.append(step)
            continue
        clock.move_to(step.day)
        step.act(cast, step.say)
    return skipped


def story_days(steps: Sequence[Step]) -> float:
    return max((step.day for step in steps), default=0.0)
