"""Shared pytest setup: hypothesis profiles and the firmware import path."""

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

REPO_ROOT = Path(__file__).resolve().parent.parent
# The firmware under test: firmware/, or the copy ITB_FIRMWARE_DIR names (the mutation
# suite, host_tools/testkit/mutate.py, points it at a mutated copy). One definition,
# in host_tools.toolchain (which imports no firmware): modules that need it import it
# from there, not from a module named "conftest" (another conftest.py on sys.path, a
# stray one in /tmp, once answered that import instead).
sys.path.insert(0, str(REPO_ROOT))
from host_tools.toolchain import FIRMWARE as FIRMWARE_DIR  # noqa: E402

# `import itb` works even when the project is not installed, and finds the copy
# under test before an installed one.
if sys.path[:1] != [str(FIRMWARE_DIR)]:
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
if os.environ.get("ITB_FIRMWARE_DIR"):
    # a mutant's failing examples must not be saved and replayed against the real code
    settings.register_profile("mutant", settings(settings.default, database=None))
    settings.load_profile("mutant")


def pytest_addoption(parser):
    parser.addoption(
        "--sr",
        action="append",
        default=[],
        metavar="SR-n",
        help="run only the tests that name this safety rule (marker or test_srN_ name), "
        "as the traceability table counts them; repeatable",
    )


def pytest_collection_modifyitems(config, items):
    """``--sr SR-n`` keeps the tests naming one of those rules; tests marked
    ``after_examples`` (they replay the traces the other tests recorded) run last,
    in their collected order."""
    wanted = set(config.getoption("--sr"))
    if wanted:
        from host_tools.testkit.traceability import rules_of

        keep = [item for item in items if rules_of(item) & wanted]
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep
    items.sort(key=lambda item: item.get_closest_marker("after_examples") is not None)
