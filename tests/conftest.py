"""Shared pytest setup: hypothesis profiles and the firmware import path."""

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

REPO_ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = REPO_ROOT / "firmware"

# `import itb` works even when the project is not installed.
if str(FIRMWARE_DIR) not in sys.path:
    sys.path.insert(0, str(FIRMWARE_DIR))

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=_SUPPRESS,
    derandomize=True,  # CI runs the same examples every time: a failure reproduces
    print_blob=True,
)
settings.register_profile(
    "nightly",
    max_examples=6000,
    deadline=None,
    suppress_health_check=_SUPPRESS,
)
settings.register_profile("dev", max_examples=30, deadline=None)

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
