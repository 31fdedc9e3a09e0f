"""What both parts of `ledger demo` share: section headings and the admin API reader."""

from __future__ import annotations

from typing import Any

import httpx
from rich.console import Console
from rich.rule import Rule


def section(console: Console, title: str) -> None:
    """A heading: a rule on a terminal, a ``## title`` line in a file or a pipe."""
    if console.is_terminal:
        console.print(Rule(title, align="left"))
    else:
        console.file.write(f"## {title}\n")


class AdminReader:
    """GETs on the admin API; a read model that is still behind (503) is asked again."""

    def __init__(self, client: httpx.Client, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params: Any) -> Any:
        for _ in range(6):  # min_position waits 5 s per request: at most half a minute
            answer = self.client.get(path, headers=self.headers, params=params)
            if answer.status_code != 503:
                break
        answer.raise_for_status()
        return answer.json()
