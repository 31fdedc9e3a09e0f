"""`ledger webhooks` (SPEC §11): each webhook URL's deliveries, `replay URL --from
POSITION`, and `secret` (a new ``whsec_…`` signing secret).

Deliveries are made by the projection runner's leader (``app.outbound``); these
commands read and move its checkpoints in the store's database.
"""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from app.cli.output import fail, note, print_records, stdout_console
from app.cli.reads import JsonOption, _store, examples
from app.outbound.checkpoints import DeliveryCheckpoints
from app.outbound.config import new_secret, url_id, url_label
from app.outbound.status import webhooks_answer
from app.settings import Settings, settings_problem

COLUMNS = (
    "index",
    "url",
    "position",
    "lag_events",
    "last_attempt_at",
    "failures",
    "last_error",
)

webhooks = typer.Typer(
    name="webhooks",
    help="Webhook deliveries to your app (Standard Webhooks, SPEC §11).",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
)


def _settings() -> Settings:
    """The settings, or one line naming the one to fix (exit 2)."""
    try:
        return Settings()
    except ValidationError as error:
        fail(settings_problem(error), 2)


@webhooks.callback(
    epilog=examples("ledger webhooks", "ledger webhooks --json")
)
def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Each URL of LEDGER_WEBHOOK_URLS: the last position delivered, the lag behind the
    log, the last attempt, failures in a row and the last error."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings()
    with _store() as store:
        answer = webhooks_answer(
            settings.webhook_url_list,
            DeliveryCheckpoints(store.database).rows(),
            store.head().position,
        )
    if not answer["webhooks"] and not as_json:
        note("no webhook URLs: set LEDGER_WEBHOOK_URLS and LEDGER_WEBHOOK_SECRET")
    print_records(answer["webhooks"], COLUMNS, as_json, document=answer)


@webhooks.command(
    epilog=examples("ledger webhooks replay https://app.example.com/webhooks/ledger --from 1200")
)
def replay(
    url: Annotated[str, typer.Argument(metavar="URL", help="One of LEDGER_WEBHOOK_URLS.")],
    from_position: Annotated[
        int,
        typer.Option("--from", metavar="POSITION", min=1, help="The first position to deliver again."),
    ],
) -> None:
    """Deliver again to URL from POSITION (included), in order: the URL's checkpoint goes
    back, and the runner's leader delivers from there (receivers deduplicate by
    webhook-id)."""
    settings = _settings()
    if url not in settings.webhook_url_list:
        fail("URL is not one of LEDGER_WEBHOOK_URLS", 2)
    with _store() as store:
        head = store.head().position
        if from_position > head + 1:
            fail(f"--from {from_position} is beyond the log's head ({head})", 2)
        DeliveryCheckpoints(store.database).replay(url_id(url), url_label(url), from_position)
    stdout_console().print(
        f"{url_label(url)}: delivering again from position {from_position}"
        f" (to {head} now) through the runner's leader"
    )


@webhooks.command(epilog=examples("ledger webhooks secret"))
def secret() -> None:
    """Print a new signing secret for LEDGER_WEBHOOK_SECRET (and your receiver)."""
    stdout_console().file.write(new_secret() + "\n")
