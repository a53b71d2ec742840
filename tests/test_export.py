"""A board's ledger as a runner trace (host_tools/export.py): with power cuts in
it, the exported trace replays byte for byte (found by the attacker: a cut just
after a bolus confirm left a trace that did not replay)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from itb import runner as rn
from itb import store as st
from itb.fs import MemoryFS

from host_tools import export as ex
from host_tools.link import ledger_records
from host_tools.testkit import workload as wl


class CutMotor(wl.Motor):
    """The motor; ``cut_at`` (a stroke count) makes that stroke meet a power cut."""

    def __init__(self):
        super().__init__()
        self.cut_at = None

    def stroke(self, n, volume_nl, now):
        super().stroke(n, volume_nl, now)
        return "power_cut" if len(self.calls) == self.cut_at else "ok"


def _ledger(fs):
    data = b""
    for path in st.Store(fs).export_files():
        data += fs.open(path, "rb").read()
    return ledger_records(data)


@pytest.mark.sr("SR-26")
@settings(max_examples=40)
@given(cuts=hs.lists(hs.tuples(hs.integers(1, 6 * 24), hs.booleans(),
                               hs.integers(0, 3 * wl.HOUR)), min_size=1, max_size=4))
def test_a_ledger_with_power_cuts_exports_a_trace_that_replays(cuts):
    """Invariant (SR-26, issue 6): whatever the power cuts (during a stroke, or
    between inputs, losing what was not synced), the durable ledger from seq 1, as
    a trace, replays through the runner to exactly its own lines: the board's
    history is complete and its recovery is the replay's."""
    fs = MemoryFS()
    h = wl.Harness(fs)
    h.runner.journal.archive = 1000
    motor = CutMotor()
    h.board = motor
    h.runner.board = motor
    h.run(wl.WEEK[:1], wl.HOUR)
    for hours, mid_stroke, off_ms in cuts:
        if mid_stroke:
            motor.cut_at = len(motor.calls) + 1
        h.run_to(h.now + hours * wl.HOUR)
        if mid_stroke and h.runner.powered:
            motor.cut_at = None
            continue  # no stroke came
        fs.power_cut()
        motor.cut_at = None
        store = st.Store(fs)
        store.archive = 1000
        h.now += off_ms
        h.runner, _info = store.recover(motor, None, clock=(h.now, off_ms))
        h.now = h.runner.now
    h.run_to(h.now + wl.HOUR)
    records = _ledger(fs)
    lines = ex.to_trace(records, h.runner.ctrl.cfg.as_dict())
    assert rn.replay(lines) == lines
