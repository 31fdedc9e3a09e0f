"""How every `ledger` read command prints, in one place (the conventions of `gh`, `kubectl`).

* ``--json``: the admin API's answer, unchanged, for scripts.
* On a terminal: Rich tables. A cell is folded onto several lines when it does not
  fit, never cut: an identifier, a client key, a URL or a hash is evidence, and an
  ellipsis would destroy it exactly where a person reads it.
* Piped or redirected: a header line of column names (the JSON field names), then one
  record a line, fields separated by one tab, full values, nothing decorative, so
  ``grep``, ``cut``, ``awk`` and ``sort`` work. A tab, a line break or a backslash
  inside a value is written as ``\\t``, ``\\n``, ``\\r`` or ``\\\\``, so a record stays
  on one line; an absent value is an empty field; booleans are ``true``/``false``.
* Colour only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org).

Other CLI modules reuse this: ``print_records(rows, columns, as_json, document=answer)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from app.queries.evidence import cell

__all__ = [
    "cell",
    "fail",
    "make_console",
    "print_json",
    "print_record",
    "print_records",
    "stderr_console",
    "stdout_console",
    "tsv_field",
]


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def make_console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that colours only a terminal, never under NO_COLOR."""
    # highlight=False: Rich's automatic highlighting would colour numbers and URLs
    # in plain messages; colour is for emphasis we choose.
    return Console(stderr=stderr, no_color=_no_color(), highlight=False, soft_wrap=False)


_stdout: Console | None = None
_stderr: Console | None = None


def stdout_console() -> Console:
    """The shared stdout console (Rich follows ``sys.stdout`` as it is swapped, e.g. by tests)."""
    global _stdout
    if _stdout is None:
        _stdout = make_console()
    _stdout.no_color = _no_color()
    return _stdout


def stderr_console() -> Console:
    global _stderr
    if _stderr is None:
        _stderr = make_console(stderr=True)
    _stderr.no_color = _no_color()
    return _stderr


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def tsv_field(value: Any) -> str:
    """A value as one tab-separated field: a record never spans two lines."""
    return cell(value).translate(_TSV_ESCAPES)


def print_json(value: Any, console: Console | None = None) -> None:
    out = (console or stdout_console()).file
    out.write(json.dumps(value, indent=2, default=str, ensure_ascii=False) + "\n")
    out.flush()


def _write_tsv(
    console: Console, records: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    out = console.file
    out.write("\t".join(columns) + "\n")
    for record in records:
        out.write("\t".join(tsv_field(record.get(c)) for c in columns) + "\n")
    out.flush()


SHORT_VALUE = 28  # a timestamp with microseconds, a version, a state: kept on one line
FOLDED_MIN = 8  # the narrowest a folded column is made while short ones stay whole
WEIGHT_CAP = 40  # a very long value does not take all the room from the others


def column_widths(
    rows: Sequence[Sequence[str]], columns: Sequence[str], width: int
) -> list[int] | None:
    """Widths for a table too wide for the terminal: short columns (times, states) stay
    whole, long ones (keys, URLs, hashes) share the rest and fold. ``None``: the table
    fits as it is, or the terminal is too narrow for any plan (Rich then shares it)."""
    natural = [max([cell_len(c), *(cell_len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    room = width - (3 * len(columns) + 1)  # borders and padding
    if sum(natural) <= room or room < len(columns):
        return None
    widths = [n if n <= SHORT_VALUE else 0 for n in natural]
    longs = [i for i, w in enumerate(widths) if w == 0]
    left = room - sum(widths)
    if longs and left >= FOLDED_MIN * len(longs):
        weights = sum(min(natural[i], WEIGHT_CAP) for i in longs)
        for i in longs:
            widths[i] = max(FOLDED_MIN, left * min(natural[i], WEIGHT_CAP) // weights)
    else:  # not even the short ones fit: everyone folds, in proportion
        weights = sum(min(n, WEIGHT_CAP) for n in natural)
        widths = [max(1, room * min(n, WEIGHT_CAP) // weights) for n in natural]
    return widths if sum(widths) <= room else None


def _table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int,
    show_header: bool = True,
) -> Table:
    table = Table(title=title, show_header=show_header, header_style="bold", title_style="bold")
    widths: Sequence[int | None] = column_widths(rows, columns, width) or [None] * len(columns)
    for column, fixed in zip(columns, widths, strict=True):
        # fold: a long value continues on the next line of its cell, never "…".
        table.add_column(column, overflow="fold", no_wrap=False, min_width=1, width=fixed)
    for row in rows:
        # Text, not markup: a value like "[red]" is shown as it is.
        table.add_row(*(Text(value) for value in row))
    return table


def print_records(
    records: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    json_output: bool = False,
    *,
    document: Any = None,
    title: str | None = None,
    console: Console | None = None,
) -> None:
    """Records as a table (terminal), TSV (piped) or JSON (``document``, else the list)."""
    console = console or stdout_console()
    if json_output:
        print_json(list(records) if document is None else document, console)
    elif not console.is_terminal:
        _write_tsv(console, records, columns)
    else:
        rows = [[cell(record.get(c)) for c in columns] for record in records]
        table = _table(title, columns, rows, console.width)
        if not records:
            table.caption = "(none)"
        console.print(table)


def print_record(
    record: Mapping[str, Any],
    json_output: bool = False,
    *,
    document: Any = None,
    title: str | None = None,
    console: Console | None = None,
) -> None:
    """One object: a field/value table on a terminal, a one-record TSV when piped."""
    console = console or stdout_console()
    if json_output or not console.is_terminal:
        print_records(
            [record], list(record), json_output, document=document or record, console=console
        )
        return
    rows = [[name, cell(value)] for name, value in record.items()]
    table = _table(title, ("field", "value"), rows, console.width, show_header=False)
    console.print(table)


def note(message: str, console: Console | None = None) -> None:
    """A line for people (stderr): never mixed into what a script parses on stdout."""
    # soft_wrap: one line stays one line (a pipe or a log reads it whole).
    (console or stderr_console()).print(Text(message), soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Say why on stderr and exit: 1 not found or a check failed, 2 usage error."""
    stderr_console().print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    raise typer.Exit(code)


def plain_help_metavars() -> None:
    """``--help`` in click's words, not Typer's type placeholders (``<bool>``, ``<str>``,
    ``<list[str]>``, ``<int range>``): an argument shows its name only, an option its
    metavar, its choices as ``[a|b]``, else its name in capitals. Applied once, by
    ``app.cli``, for every command (one rule in one place)."""
    from typer.core import TyperArgument, TyperOption

    def argument_type(self: TyperArgument, ctx: Any) -> str | None:
        return None  # the argument's name (its metavar) is already shown

    def option_type(self: TyperOption, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        described = self.type_descriptor
        if described.is_choice:
            return "[" + "|".join(str(c) for c in described.choices or ()) + "]"
        return (self.name or "value").upper()

    TyperArgument.display_type_rich = argument_type  # type: ignore[method-assign,assignment]  # Typer offers no hook for its help placeholders
    TyperOption.display_type_rich = option_type  # type: ignore[method-assign]  # Typer offers no hook for its help placeholders
