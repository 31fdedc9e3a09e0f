"""What the parts of `ledger demo` share: section headings, the simulated Connect host
and its HTTP client, and the admin API reader."""

from __future__ import annotations

from typing import Any

import httpx
from rich.console import Console
from rich.rule import Rule

from app.sim.connect import KeyServer, SimulatedHost
from eventstore.clock import utcnow


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


class DemoHost:
    """A simulated host plus the HTTP client that delivers its calls."""

    def __init__(self, url: str, app_base_url: str, key_server: KeyServer) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)
        self.app_base_url = app_base_url
        self.host = SimulatedHost(key_server=key_server)
        self.results: list[dict[str, Any]] = []

    def send(
        self,
        step: str,
        event: str,
        payload: dict[str, Any],
        *,
        alg: str = "RS256",
        version: str = "1",
    ) -> int:
        call = self.host.lifecycle_call(
            event,
            payload,
            app_base_url=self.app_base_url,
            alg=alg,  # type: ignore[arg-type]  # the demo sends a refused alg on purpose
            descriptor_version=version,
        )
        response = self.client.post(
            call.url_path_with_query, content=call.body, headers=call.headers
        )
        answer = str(response.status_code)
        if response.status_code != 204:
            answer += " " + response.json().get("error", "")
        self.results.append(
            {
                "date": utcnow().date().isoformat(),  # the story's day (simulated)
                "step": step,
                "call": f"{event}?v={version}",
                "alg": alg,
                "answer": answer,
            }
        )
        return response.status_code
