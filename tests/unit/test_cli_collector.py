"""A served process settles its cyclic collector once its app is built (services/cli.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from services.cli import COLLECTOR_THRESHOLDS

PROBE = """
import gc
from services.cli import _settle_collector
before = gc.get_freeze_count()
_settle_collector()
print(*gc.get_threshold(), before, gc.get_freeze_count())
"""


def test_the_collector_is_settled_in_a_fresh_interpreter() -> None:
    # A process of its own: freezing the test runner's heap would outlive the test.
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    *thresholds, frozen_before, frozen_after = map(int, out)
    assert tuple(thresholds) == COLLECTOR_THRESHOLDS
    assert thresholds[0] > 700  # Python's default walks the young generation far more often
    assert frozen_after > frozen_before  # what the imports left alive is no longer walked
