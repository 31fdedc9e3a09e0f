"""`ledger installations`, `ledger links`, `ledger migration` (SPEC §7, §10).

Same data path as the admin API (``app.queries.reads``), printed by ``app.cli.output`` like
every read command: ``--json`` (the admin API's answer), a Rich table on a terminal
that never cuts an identifier, tab-separated full values with a header when piped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer

from app.cli.output import note, print_json, print_records, stdout_console
from app.cli.reads import (
    AllOption,
    CatchUpOption,
    JsonOption,
    every_page,
    examples,
    read_models,
    say_more,
)
from app.queries import reads
from eventstore.ids import installation_uuid

INSTALLATION_COLUMNS = (
    "installation_id",
    "cloud_id",
    "product",
    "app_version",
    "state",
    "license_active",
    "client_key",
    "client_keys",  # every linked tenant (a site's Jira and Confluence), oldest first
    "last_seen_at",
)
LINK_COLUMNS = (
    "kind",
    "client_key",
    "installation_id",
    "previous_installation_id",
    "evidence",
    "seen_at",
)
CONNECT_ONLY_COLUMNS = ("client_key", "base_url", "installation_id")
FORGE_ONLY_COLUMNS = ("installation_id", "cloud_id", "state", "app_version")
MIGRATION_COLUMNS = ("list", "client_key", "base_url", "installation_id", "cloud_id", "state")
EXAMPLE_ID = "8d6e3c1a-5f0b-4b7e-9a52-2f1c7e0d4b9a"


def _installation(value: str | None, option: str) -> str | None:
    """A bare UUID or an installation ARI, as the admin API accepts (exit 2 otherwise)."""
    if value is None:
        return None
    found = installation_uuid(value.strip())
    if found is None:
        raise typer.BadParameter(
            "a UUID or ari:cloud:ecosystem::installation/<uuid>", param_hint=f"'{option}'"
        )
    return found


def installations(
    state: Annotated[
        Literal["installed", "uninstalling"] | None,
        typer.Option(help="Only installations in this state (default: every state)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="At most N installations.")] = 1000,
    after: Annotated[
        str | None,
        typer.Option(
            metavar="INSTALLATION_ID", help="Start after this installation (the next page)."
        ),
    ] = None,
    every: AllOption = False,
    catch_up: CatchUpOption = True,
    as_json: JsonOption = False,
) -> None:
    """List Forge installations and the Connect tenants each is linked to.

    client_key is the most recently linked tenant; client_keys lists every linked
    tenant, oldest link first (one installation can span a site's Jira and Confluence).
    """
    start = _installation(after, "--after")
    with read_models(catch_up) as (_, storage):
        answer = every_page(
            lambda cursor: reads.installations_answer(
                storage, state=state, after=cursor or start, limit=limit
            ),
            "installations",
            every,
        )
    say_more(answer, as_json)
    print_records(
        answer["installations"],
        INSTALLATION_COLUMNS,
        as_json,
        document=answer,
        title="Forge installations",
    )


def _flat(link: dict[str, Any]) -> dict[str, Any]:
    """The evidence as one field: ``stream@position``."""
    evidence = link["evidence"]
    return {**link, "evidence": f"{evidence['stream']}@{evidence['position']}"}


def links(
    kind: Annotated[
        Literal["connect", "reinstall"] | None,
        typer.Option(
            help="connect: a Connect payload named the installation; reinstall: a new"
            " installation on a site that had one (default: both)."
        ),
    ] = None,
    client_key: Annotated[
        str | None,
        typer.Option("--client-key", metavar="CLIENT_KEY", help="Only links of this tenant."),
    ] = None,
    installation_id: Annotated[
        str | None,
        typer.Option(
            "--installation-id",
            metavar="INSTALLATION_ID",
            help="Only links naming this installation (new or previous; UUID or ARI).",
        ),
    ] = None,
    catch_up: CatchUpOption = True,
    as_json: JsonOption = False,
) -> None:
    """List links between Connect tenants and Forge installations, with their evidence.

    A link is evidence for a person (the stream and position of the event that made
    it), never an automatic migration.
    """
    wanted = _installation(installation_id, "--installation-id")
    with read_models(catch_up) as (_, storage):
        answer = reads.links_answer(
            storage, kind=kind, client_key=client_key, installation_id=wanted
        )
    rows = [_flat(link) for link in answer["links"]]
    print_records(rows, LINK_COLUMNS, as_json, document=answer, title="identity links")


def migration(catch_up: CatchUpOption = True, as_json: JsonOption = False) -> None:
    """Show how far the move from Connect to Forge has come: linked, Connect only, Forge only.

    linked: installed Connect tenants whose Forge installation has called (a count,
    on stderr when piped); connect_only: installed tenants with no Forge call yet
    (the stragglers); forge_only: installations linked to no Connect tenant. Piped,
    one table whose first column names the list, so `grep ^connect_only` works.
    """
    with read_models(catch_up) as (_, storage):
        answer = reads.migration_answer(storage)
    if as_json:
        print_json(answer)
        return
    note(f"linked: {answer['linked']} Connect tenant(s) whose Forge installation has called")
    if stdout_console().is_terminal:
        print_records(
            answer["connect_only"], CONNECT_ONLY_COLUMNS, title="Connect only (no Forge call yet)"
        )
        print_records(
            answer["forge_only"], FORGE_ONLY_COLUMNS, title="Forge only (no Connect tenant)"
        )
        return
    rows = [{"list": "connect_only", **r} for r in answer["connect_only"]]
    rows += [{"list": "forge_only", **r} for r in answer["forge_only"]]
    print_records(rows, MIGRATION_COLUMNS)


COMMANDS: dict[str, tuple[Callable[..., None], str]] = {
    "installations": (
        installations,
        examples(
            "ledger installations --state uninstalling",
            "ledger installations | cut -f1,7        # installation ids and their tenants",
            "ledger installations --json | jq '.installations[].installation_ari'",
        ),
    ),
    "links": (
        links,
        examples(
            "ledger links --kind reinstall",
            f"ledger links --installation-id {EXAMPLE_ID}",
            "ledger links --client-key 2596cc1a-6a04-3c4e-b8e0-f3a6c0d9e5b1 --json",
        ),
    ),
    "migration": (
        migration,
        examples(
            "ledger migration",
            "ledger migration | grep ^connect_only | cut -f2   # the stragglers' client keys",
            "ledger migration | grep ^forge_only | cut -f4     # new Forge installations",
            "ledger migration --json | jq .linked",
        ),
    ),
}


def register(app: typer.Typer) -> None:
    for name, (function, epilog) in COMMANDS.items():
        app.command(name, epilog=epilog)(function)
