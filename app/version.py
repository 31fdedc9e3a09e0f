"""The ledger's version: the installed package's metadata (pyproject.toml's version),
shown by ``ledger --version``, the start-up line and the OpenAPI document."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version

DISTRIBUTION = "tenant-ledger"


def version() -> str:
    try:
        return _installed_version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"
