"""The README's configuration table lists every setting the code reads (SPEC §7, §12)."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _configuration_table() -> set[str]:
    text = README.read_text()
    section = text[text.index("\n## Configuration\n") :]
    section = section[: section.index("\n## ", 1)]
    return set(re.findall(r"^\| `(LEDGER_[A-Z0-9_]+)`", section, flags=re.M))


def test_every_setting_is_in_the_configuration_table() -> None:
    prefix = Settings.model_config.get("env_prefix", "")
    settings = {f"{prefix}{name}".upper() for name in Settings.model_fields}
    listed = _configuration_table()
    assert settings - listed == set(), "settings missing from the README's Configuration"
