"""A serving process's collector (app.serve.collector): start-up's objects frozen out of
its sight, and the first generation's threshold raised. Run in a fresh interpreter, so
this test process keeps CPython's defaults."""

from __future__ import annotations

import json
import subprocess
import sys

from app.serve.collector import SERVING_THRESHOLDS

PROBE = """
import gc, json
from app.serve import collector
before = gc.get_freeze_count()
collector.settle()
print(json.dumps([before, gc.get_freeze_count(), list(gc.get_threshold()), gc.isenabled()]))
"""


def test_settle_freezes_what_start_up_made_and_raises_the_thresholds() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    before, after, thresholds, enabled = json.loads(done.stdout)
    assert before == 0
    assert after > 1000  # the interpreter's and the imported modules' objects
    assert thresholds == list(SERVING_THRESHOLDS)
    assert thresholds[0] > 700  # above CPython's default
    assert enabled  # collected less often, never switched off: cycles are still freed
