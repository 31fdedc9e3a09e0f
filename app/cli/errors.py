"""The one error path of every `ledger` command: what went wrong, as one line naming
what to fix, and the exit code (SPEC §7: 1 not found or a check failed, 2 usage).

``LedgerGroup`` runs every command inside it, so no person ever sees a traceback: a bad
setting, a store that is missing or unreachable, a refused privilege, a file that
cannot be read. Only a store that could not be reached says "try again": every other
error stays the same until something is changed. An error we did not foresee (a bug)
is one line too, naming its type only (its words could hold a value of the call);
``LEDGER_TRACEBACK=1`` shows where it came from.
"""

from __future__ import annotations

import os
from typing import Any, Final

import typer
from pydantic import ValidationError
from typer._click.core import Context
from typer._click.exceptions import (
    UsageError,  # the Context click hands a group (typer vendors click)
)
from typer.core import TyperGroup
from typer.exceptions import TyperException

from app.cli.output import fail
from app.settings import SettingError
from eventstore.crypto import CryptoError
from eventstore.errors import SchemaMismatch, StoreError, StoreFault, StoreMissing, StoreUnavailable

USAGE: Final = 2
FAILED: Final = 1
# A role that may not do the work: PostgreSQL's insufficient_privilege, a read-only
# SQLite file.
_PRIVILEGE_CODES: Final = frozenset({"42501", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH"})
_CONNECTION_REFUSED: Final = frozenset({"28000", "28P01"})  # the message says what to fix
ROLES_HINT: Final = "see the README's roles and GRANTs"


def explain(error: BaseException) -> tuple[str, int] | None:
    """The line a person reads and the exit code; None for an error that is no one's
    to read (a click exit or usage error, which click reports itself)."""
    if isinstance(error, typer.Exit | typer.Abort | TyperException):
        return None
    if isinstance(error, ValidationError):
        return _settings_words(error), USAGE
    if isinstance(error, SettingError):
        return str(error), USAGE
    if isinstance(error, CryptoError):
        return f"LEDGER_MASTER_KEY: {error}", USAGE
    if isinstance(error, StoreError):
        return _store_words(error), FAILED
    if isinstance(error, OSError):
        name = f"{error.filename}: " if error.filename else ""
        return f"{name}{error.strerror or type(error).__name__}", FAILED
    return (
        f"unexpected {type(error).__name__}; nothing more is shown (LEDGER_TRACEBACK=1 shows"
        " where it came from); please report it",
        FAILED,
    )


def _settings_words(error: ValidationError) -> str:
    """Each refused setting by its variable and pydantic's reason, never its value
    (``str(error)`` would print the value, a master key or a token among them)."""
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        name = "LEDGER_" + "_".join(str(part) for part in item["loc"]).upper()
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(message if message.startswith(name) else f"{name}: {message}")
    return "; ".join(problems) or "a setting is not valid"


def may_not(error: StoreFault) -> bool:
    """Whether the database refused the work for the role's lack of a privilege."""
    return error.code in _PRIVILEGE_CODES


def _store_words(error: StoreError) -> str:
    if isinstance(error, StoreMissing | SchemaMismatch) or (
        isinstance(error, StoreFault) and error.code in _CONNECTION_REFUSED
    ):
        return str(error)
    if isinstance(error, StoreUnavailable):
        return f"the store is unavailable ({error}); check LEDGER_DATABASE_URL and that the database runs, then try again"
    if isinstance(error, StoreFault) and may_not(error):
        return f"the database role may not do this ({error}); {ROLES_HINT}"
    return f"the store refused the work ({error})"


def report(error: BaseException) -> None:
    """Say ``error`` in one line and exit, or let click handle its own."""
    if isinstance(error, UsageError):
        # A command's bad argument: said in one line by the group's main
        # (app.cli.group), with where the help is.
        raise error
    explained = explain(error)
    if explained is None:
        raise error
    if os.environ.get("LEDGER_TRACEBACK") == "1":
        raise error
    message, code = explained
    fail(message, code)


class LedgerGroup(TyperGroup):
    """Typer's group, with every command run inside the one error path."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as error:  # every command's errors, said once, here
            report(error)
