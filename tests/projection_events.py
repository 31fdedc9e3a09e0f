"""Building ``RecordedEvent``s for projection tests, without a store.

The builders live in the product's ``eventstore.testing.synthetic`` (shared with the
benchmarks); this module keeps the names the tests import.
"""

from __future__ import annotations

from eventstore.testing.synthetic import (
    APP_KEY,
    DUMMY_HASH,
    DUMMY_SECRET,
    T0,
    Log,
    installed_data,
    recorded,
)

__all__ = ["APP_KEY", "DUMMY_HASH", "DUMMY_SECRET", "T0", "Log", "installed_data", "recorded"]
