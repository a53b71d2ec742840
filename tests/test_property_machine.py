"""Stateful property suite (profiles: ``ci`` default, ``nightly`` 20x longer).

The invariants live in ``host_tools/testkit/machine.py`` (each names its rule:
SR-3/4/5, SR-8/9/10/11, SR-12/21, SR-19, SR-14, SR-21/22 conservation,
SR-16/17/18/27) and are checked by an independent model (``model.py``).
"""

import pytest
from helpers import HYPOTHESIS_TRACES
from hypothesis import settings

from host_tools.testkit.machine import STEPS, ControllerMachine

pytestmark = pytest.mark.sr(
    "SR-3",
    "SR-4",
    "SR-5",
    "SR-8",
    "SR-9",
    "SR-10",
    "SR-11",
    "SR-12",
    "SR-14",
    "SR-16",
    "SR-17",
    "SR-18",
    "SR-19",
    "SR-21",
    "SR-27",
)

ControllerMachine.record_to = HYPOTHESIS_TRACES  # replayed in MicroPython afterwards
ControllerMachine.TestCase.settings = settings(settings.default, stateful_step_count=STEPS)
TestControllerMachine = ControllerMachine.TestCase
