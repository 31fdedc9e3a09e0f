"""`ledger installations`, `ledger links`, `ledger migration` (SPEC §7, §10).

Each reads the read models after catching them up, like ``ledger tenants``, and prints
``--json``, a Rich table on a terminal, or tab-separated full values with a header
line when piped. Registered on the main Typer app by ``register``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _read(answer: Callable[[Any], Any]) -> Any:
    """Catch the read models up, then compute an answer from their storage."""
    from app.cli import _catch_up, _store
    from projections.backends import storage_for

    with _store() as store:
        storage = storage_for(store)
        storage.ensure()
        _catch_up(store, storage)
        return answer(storage)


def _show(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    if not sys.stdout.isatty():
        lines = ["\t".join(columns)]
        lines += ["\t".join("" if r.get(c) is None else str(r[c]) for c in columns) for r in rows]
        sys.stdout.write("\n".join(lines) + "\n")
        return
    from app.cli import console

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")  # never cut an identifier
    for row in rows:
        table.add_row(*(escape("" if row.get(c) is None else str(row[c])) for c in columns))
    console.print(table)


def installations(
    state: Annotated[str | None, typer.Option(help="installed or uninstalling")] = None,
    as_json: JsonOption = False,
) -> None:
    """Forge installations and the Connect tenant each is linked to."""
    from app.admin_forge import installation_object
    from app.cli import _print_json

    rows = _read(lambda storage: storage.load_rows("installations"))
    shown = [
        installation_object(r)
        for r in sorted(rows, key=lambda r: r.installation_id)
        if state is None or r.state == state
    ]
    if as_json:
        _print_json({"installations": shown})
        return
    columns = (
        "installation_id",
        "cloud_id",
        "app_version",
        "state",
        "license_active",
        "client_key",
    )
    _show("installations", shown, columns)


def links(
    kind: Annotated[str | None, typer.Option(help="connect or reinstall")] = None,
    as_json: JsonOption = False,
) -> None:
    """Links between Connect tenants and Forge installations, with their evidence."""
    from app.admin_forge import link_object
    from app.cli import _print_json

    rows = _read(lambda storage: storage.load_rows("links"))
    shown = [
        link_object(r)
        for r in sorted(rows, key=lambda r: r.evidence_position)
        if kind is None or r.kind == kind
    ]
    if as_json:
        _print_json({"links": shown})
        return
    flat = [
        {**r, "evidence": f"{r['evidence']['stream']}@{r['evidence']['position']}"} for r in shown
    ]
    columns = (
        "kind",
        "client_key",
        "installation_id",
        "previous_installation_id",
        "evidence",
        "seen_at",
    )
    _show("links", flat, columns)


def migration(as_json: JsonOption = False) -> None:
    """The move from Connect to Forge: linked, Connect only, Forge only."""
    from app.admin_forge import migration_answer
    from app.cli import _print_json, console

    answer = _read(migration_answer)
    if as_json:
        _print_json(answer)
        return
    if sys.stdout.isatty():
        console.print(f"linked: {answer['linked']}")
    else:
        sys.stdout.write(f"# linked\t{answer['linked']}\n")
    _show("connect only", answer["connect_only"], ("client_key", "base_url", "installation_id"))
    _show("forge only", answer["forge_only"], ("installation_id", "cloud_id", "state"))


def register(app: typer.Typer) -> None:
    for command in (installations, links, migration):
        app.command()(command)
