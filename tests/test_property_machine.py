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


@pytest.mark.sr("SR-11")
def test_sr11_stall_right_after_a_capped_resume_is_one_interruption():
    """Found by the nightly profile: program 400 ug/day and empty the reservoir in
    the same ms, stop, refill, resume days later at 50 % (200), first stroke stalls.
    The interruption runs from the start of therapy to the first good stroke, its
    base is the 400 in effect when it began, so 200 stands; the model agrees (it
    used to date the outage from the priming stroke and demand 100)."""
    m = ControllerMachine()
    m.setup(conc=500, patient=False, dose_ug=400, origin="spinal", prime="saline")
    m.refill(aspirate_ml=0, conc=500, partial=False, volume_ml=0)
    m.stop(go=0, reason="procedure")
    for _ in range(4):
        m.advance_days(days=1)
    m.refill(aspirate_ml=0, conc=500, partial=False, volume_ml=20)
    m.advance_days(days=2)
    m.motor_fault(count=1, mode="stall")
    m.resume(check=False, factor=0)
    m.advance_days(days=1)
    assert m.ctrl.daily_dose_ng() == 200_000
    assert not m.model.violations, m.model.violations
    m.teardown()
