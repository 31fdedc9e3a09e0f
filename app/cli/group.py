"""The ``ledger`` command group: help and errors in one voice.

* Every error is one line on stderr, ``error: …`` (as ``app.cli.output.fail`` writes
  it), a usage error with where to read more, exit 2; click's own "Usage: … Error: …"
  block is never printed.
* ``ledger --help`` shows each command's whole summary, wrapped at spaces, never cut
  with "…".
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from typer import _click  # Typer's own click: its exceptions are the ones raised here
from typer.exceptions import Abort

from app.cli.errors import LedgerGroup as CommandErrors
from app.cli.output import say_error

UsageError = _click.exceptions.UsageError
ClickException = _click.exceptions.ClickException


def _message(error: Any) -> str:
    # Typer checks choices through pydantic, whose "Value error, " is no word of ours.
    text: str = error.format_message().replace("Value error, ", "")
    # click opens with a capital ("Invalid value for '--state': …"); one voice.
    text = text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
    if isinstance(error, UsageError) and error.ctx is not None:
        text += f" (see '{error.ctx.command_path} --help')"
    return text


def _setting_message(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        where = "_".join(str(part) for part in item.get("loc", ()))
        name = f"LEDGER_{where.upper()}" if where else "a setting"
        words = str(item.get("msg", "is not valid")).replace("Value error, ", "")
        problems.append(f"{name}: {words[:1].lower()}{words[1:]}")
    return "; ".join(problems) + " (fix the environment variable and run again)"


class LedgerGroup(CommandErrors):
    """``app.cli.errors``' group (every command inside the one error path), with click's
    own errors and ``--help`` in the same voice."""

    def main(  # type: ignore[override]  # the same parameters, passed on by name
        self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        standalone = extra.pop("standalone_mode", True)
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except _click.exceptions.NoArgsIsHelpError as error:
            sys.stdout.write(error.format_message() + "\n")  # `ledger` alone: its help
            code = 0 if standalone else error.exit_code
        except ClickException as error:
            if not standalone:
                raise
            say_error(_message(error))
            code = error.exit_code
        except ValidationError as error:  # a bad LEDGER_* setting: name it, in our words
            say_error(_setting_message(error))
            code = 2
        except Abort:
            if not standalone:
                raise
            say_error("aborted")
            code = 1
        if not standalone:
            return code
        sys.exit(code if isinstance(code, int) else 0)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
