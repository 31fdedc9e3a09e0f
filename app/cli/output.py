"""How every `ledger` read command prints, in one place (the conventions of `gh`, `kubectl`).

* ``--json``: the admin API's answer, unchanged, for scripts.
* On a terminal: for people. Headers in words ("Client key", not ``client_key``), times
  to the second. A Rich table when every column fits at least its longest word, else
  one block of labelled fields per record (``history`` and ``show`` at 80 columns).
  A line breaks only at a space, never inside a word: an identifier, a client key, a
  URL or a hash is evidence, and a split or an ellipsis would spoil it exactly where a
  person reads or copies it (a word longer than the terminal is left whole).
* Piped or redirected: a header line of column names (the JSON field names), then one
  record a line, fields separated by one tab, full values, nothing decorative, so
  ``grep``, ``cut``, ``awk`` and ``sort`` work. A tab, a line break or a backslash
  inside a value is written as ``\\t``, ``\\n``, ``\\r`` or ``\\\\``, so a record stays
  on one line; an absent value is an empty field; booleans are ``true``/``false``.
* Colour only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org).

Other CLI modules reuse this: ``print_records(rows, columns, as_json, document=answer)``;
errors go through ``fail`` (``error: …`` on stderr, one line, the exit code).
"""

from __future__ import annotations

import json
import os
import re
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


_TIME = re.compile(
    r"^([0-9]{4}-[0-9]{2}-[0-9]{2})T([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
# Words a person reads in a header: "client_key" is "Client key", "call_id" "Call ID".
_HEADER_WORDS = {"id": "ID", "url": "URL", "urls": "URLs", "ari": "ARI", "sha256": "SHA-256",
                 "addr": "address", "jwt": "JWT"}  # fmt: skip
_HEADERS = {"at": "Time"}


def header(name: str) -> str:
    """A field name as a person reads it: ``client_key`` → "Client key"."""
    if name in _HEADERS:
        return _HEADERS[name]
    words = [_HEADER_WORDS.get(word, word) for word in name.split("_") if word]
    text = " ".join(words) or name
    return text[:1].upper() + text[1:]


def shown(value: Any) -> str:
    """A value for a person on a terminal: full, times to the second (RFC 3339 with a
    space, which ``--as-of`` and ``--since`` accept back, and where a narrow column may
    wrap)."""
    text = cell(value)
    match = _TIME.match(text)
    return f"{match[1]} {match[2]}{match[3]}" if match else text


def _words(text: str) -> list[str]:
    return text.split() or [""]


def _min_width(texts: Sequence[str]) -> int:
    """The narrowest a column can be without breaking a word: its longest word."""
    return max(cell_len(word) for text in texts for word in _words(text))


def _natural_width(texts: Sequence[str]) -> int:
    return max(cell_len(line) for text in texts for line in (text.splitlines() or [""]))


def column_widths(
    rows: Sequence[Sequence[str]], columns: Sequence[str], width: int
) -> list[int] | None:
    """Widths for a table in ``width`` columns where every cell wraps at spaces only:
    each column at least its longest word, the room left shared towards the natural
    widths (the narrowest first). ``None``: no such table fits (print records instead)."""
    texts = [[name, *(row[i] for row in rows)] for i, name in enumerate(columns)]
    least = [_min_width(t) for t in texts]
    natural = [_natural_width(t) for t in texts]
    room = width - (3 * len(columns) + 1)  # borders and padding
    if sum(least) > room:
        return None
    widths = list(least)
    left = room - sum(widths)
    wanting = sorted(range(len(columns)), key=lambda i: natural[i] - least[i])
    for n, i in enumerate(wanting):
        grant = min(natural[i] - widths[i], left // (len(wanting) - n))
        widths[i] += grant
        left -= grant
    return widths


def wrap_at_spaces(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` cells, broken at spaces only: a word longer than the
    line keeps a line of its own, whole (the terminal shows it on as many rows as it
    needs, and a copy and paste gets it back intact)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in re.findall(r"\S+\s*", paragraph) or [""]:
            if line and cell_len(line + word.rstrip()) > width:
                lines.append(line.rstrip())
                line = ""
            line += word
        lines.append(line.rstrip())
    return lines


def _table(
    title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int]
) -> Table:
    table = Table(title=title, header_style="bold", title_style="bold")
    for column, fixed in zip(columns, widths, strict=True):
        # Every column is at least as wide as its longest word, so Rich wraps at
        # spaces and never has to fold a word ("fold" only as a last resort, never "…").
        table.add_column(column, overflow="fold", no_wrap=False, min_width=1, width=fixed)
    for row in rows:
        # Text, not markup: a value like "[red]" is shown as it is.
        table.add_row(*(Text(value) for value in row))
    return table


def _labelled(label: str, value: str, width: int) -> list[Text]:
    """``Label: value`` on one line, or the label and then the value's lines indented."""
    if "\n" not in value and cell_len(label) + 2 + cell_len(value) <= width:
        return [Text.assemble((f"{label}:", "bold"), " " + value)]
    lines = wrap_at_spaces(value, width - 2)
    return [Text(f"{label}:", style="bold"), *(Text("  " + line) for line in lines)]


def record_lines(fields: Sequence[tuple[str, str]], width: int) -> list[Text]:
    """One record as short lines for a terminal too narrow for its table: the fields
    packed side by side while they fit, a long one on lines of its own; an empty field
    is left out (piped or ``--json`` output shows it)."""
    lines: list[Text] = []
    line: Text | None = None
    for label, value in fields:
        if not value:
            continue
        chunk = _labelled(label, value, width)
        if len(chunk) == 1 and line is not None and line.cell_len + 3 + chunk[0].cell_len <= width:
            line.append("   ")
            line.append_text(chunk[0])
            continue
        if line is not None:
            lines.append(line)
        if len(chunk) == 1:
            line = chunk[0]
        else:
            lines.extend(chunk)
            line = None
    return [*lines, line] if line is not None else lines


def _print_lines(console: Console, lines: Sequence[Text]) -> None:
    for line in lines:
        # soft_wrap: Rich adds no line break of its own (a word longer than the
        # terminal is left whole for the terminal to show).
        console.print(line, soft_wrap=True)


def _print_title(console: Console, title: str | None) -> None:
    if title:
        _print_lines(
            console, [Text(line, style="bold") for line in wrap_at_spaces(title, console.width)]
        )


def print_table(
    console: Console,
    records: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    title: str | None = None,
) -> None:
    """Records for a person: a table when every column fits without breaking a word,
    else one block of labelled fields per record. Headers and times read as words."""
    headers = [header(c) for c in columns]
    rows = [[shown(record.get(c)) for c in columns] for record in records]
    widths = column_widths(rows, headers, console.width)
    if not records:
        _print_title(console, title)
        console.print(Text("(none)", style="dim italic"))
        return
    if widths is not None:
        console.print(_table(title, headers, rows, widths))
        return
    _print_title(console, title)
    for row in rows:
        console.print()
        _print_lines(console, record_lines(list(zip(headers, row, strict=True)), console.width))


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
        print_table(console, records, columns, title)


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
    _print_title(console, title)
    labels = {name: header(name) for name in record}
    room = max(cell_len(label) for label in labels.values()) + 2 if record else 0
    if console.width - room < 20:  # no room for a column of values: label above value
        _print_lines(
            console, record_lines([(labels[n], shown(v)) for n, v in record.items()], console.width)
        )
        return
    for name, value in record.items():
        lines = wrap_at_spaces(shown(value), console.width - room)
        first = Text.assemble((labels[name].ljust(room), "bold"), lines[0])
        _print_lines(console, [first, *(Text(" " * room + rest) for rest in lines[1:])])


def note(message: str, console: Console | None = None) -> None:
    """A line for people (stderr): never mixed into what a script parses on stdout."""
    # soft_wrap: one line stays one line (a pipe or a log reads it whole).
    (console or stderr_console()).print(Text(message), soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Say why on stderr and exit: 1 not found or a check failed, 2 usage error."""
    say_error(message)
    raise typer.Exit(code)


def say_error(message: str) -> None:
    """The one voice of every error: ``error: …``, one line, on stderr."""
    stderr_console().print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


def _help_wraps_at_spaces_only() -> None:
    """``--help`` text wraps like every terminal output: at spaces, never inside a word
    ("presumed-|gone", a URL). Typer's click takes its wrapper from this module anew
    for every paragraph."""
    from typer._click import _textwrap

    base = _textwrap.TextWrapper

    class WholeWords(base):  # type: ignore[misc,valid-type]  # a class from a module attribute
        def __init__(self, *args: Any, **options: Any) -> None:
            super().__init__(*args, break_on_hyphens=False, break_long_words=False, **options)

    if base.__name__ != "WholeWords":
        _textwrap.TextWrapper = WholeWords  # type: ignore[misc]  # Typer offers no hook for its help wrapping


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

    _help_wraps_at_spaces_only()
    TyperArgument.display_type_rich = argument_type  # type: ignore[method-assign,assignment]  # Typer offers no hook for its help placeholders
    TyperOption.display_type_rich = option_type  # type: ignore[method-assign]  # Typer offers no hook for its help placeholders
