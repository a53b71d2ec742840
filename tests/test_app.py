"""The board's app (firmware/app.py) on the virtual board: watchdog, boot-loop
counter and MAINTENANCE (SR-27), alarm annunciation (SR-28), the accelerated
test clock, the RTC through the protocol (SR-23), and ``itbsim board``."""

import os
import signal
import subprocess
import sys
import time

import pytest

from host_tools import link
from host_tools.fixtures import start_therapy
from host_tools.vboard import VirtualBoard

HOUR = 3_600_000


def connect(vb, keys=None):
    b = link.Board(vb.url, timeout=5)
    b.hello()
    if keys is None:
        b.provision(link.new_keys())
    else:
        b.keys = keys
    return b


def program(b, dose_ng=400_000):
    start_therapy(b, dose_ng)


def wait_for(cond, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.sr("SR-27", "SR-26")
def test_a_hung_stroke_is_ended_by_the_watchdog(tmp_path):
    """A stroke that never returns blocks the loop; the health task stops feeding,
    the watchdog resets the board, and the stroke's durable intent counts as
    delivered after the reset (SR-26) with basal going on."""
    with VirtualBoard(tmp_path / "b", provision=True, watchdog_ms=1500) as vb:
        b = connect(vb)
        program(b)
        b.call("test_clock", {"mode": "stepped"}, role="service")
        before = b.status()["strokes"]
        b.call("inject", {"fault": "hang", "count": 1}, role="service")
        b.timeout = 0.5
        b.retries = 0
        with pytest.raises(link.LinkError):
            b.call("test_clock", {"mode": "stepped", "advance_ms": HOUR}, role="service")
        assert wait_for(lambda: vb.resets["watchdog"] == 1)
        b.timeout, b.retries = 5, 3
        assert wait_for(lambda: vb.boots == 2)
        b.hello()
        st = b.status()
        assert st["state"] == "RUNNING"
        assert st["strokes"] == before + 1  # the hung stroke counts (its intent was durable)
        codes = [a[0] for a in st["alarms"]]
        assert "STROKE_UNCONFIRMED" in codes or "RESTART_REDUCED" in codes, codes
        b.close()


@pytest.mark.sr("SR-27")
def test_three_resets_within_ten_minutes_boot_into_safe(tmp_path):
    with VirtualBoard(tmp_path / "b", provision=True) as vb:
        b = connect(vb)
        keys = b.keys
        program(b)
        b.close()
        vb.power_cut()
        b = connect(vb, keys)
        assert b.status()["state"] == "RUNNING"
        b.close()
        vb.power_cut()
        b = connect(vb, keys)
        st = b.status()
        b.close()
        assert st["state"] == "SAFE"
        assert "SAFE_STATE" in [a[0] for a in st["alarms"]]
        assert wait_for(lambda: vb.annunciating == "high")


@pytest.mark.sr("SR-27")
def test_maintenance_stops_the_watchdog_and_a_reset_ends_it(tmp_path):
    with VirtualBoard(tmp_path / "b", provision=True, watchdog_ms=1500) as vb:
        b = connect(vb)
        keys = b.keys
        res = b.call("maintenance", role="service")
        assert res["effect"]["state"] == "MAINTENANCE"
        assert wait_for(lambda: vb._wdt is None)
        time.sleep(2)  # longer than the watchdog: no reset in MAINTENANCE
        assert vb.resets["watchdog"] == 0
        assert vb.annunciating == "high"  # NOT_DOSING
        b.close()
        vb.power_cut()
        b = connect(vb, keys)
        st = b.status()
        b.close()
        assert st["state"] == "UNPROGRAMMED"
        assert "NOT_DOSING" not in [a[0] for a in st["alarms"] if a[2]]


@pytest.mark.sr("SR-16", "SR-28")
def test_alarms_are_annunciated_by_priority(board, virtual_board):
    start_therapy(board)
    board.call("emergency_stop")
    assert wait_for(lambda: virtual_board.annunciating == "high")
    board.call("acknowledge", {"code": "all"})
    time.sleep(1)
    assert virtual_board.annunciating == "high"  # WITHDRAWAL_RISK holds: HIGH goes on


def test_the_accelerated_clock_runs_therapy_fast(tmp_path):
    """At 3600 x an hour of therapy passes each second. (The 60 s confirm window
    is therapy time too, 17 ms here: program first, or use the stepped clock.)"""
    with VirtualBoard(tmp_path / "b", provision=True, accelerate=3600) as vb:
        b = connect(vb)
        assert b.info["clock"] == "accelerated" and b.info["factor"] == 3600
        b.call("test_clock", {"mode": "real"}, role="service")
        program(b)
        b.call("test_clock", {"mode": "accelerated", "factor": 3600}, role="service")
        t0 = b.status()["t"]
        time.sleep(1.5)
        st = b.status()
        assert st["t"] - t0 >= HOUR  # at least an hour of therapy in 1.5 s
        assert st["strokes"] >= 4
        # the RTC keeps pace with the therapy clock (outage bounds stay consistent)
        assert st["board"]["rtc_ms"] - time.time() * 1000 >= HOUR - 60_000
        b.close()


@pytest.mark.sr("SR-23")
def test_time_sync_sets_the_rtc_and_is_logged(board):
    utc = 1_900_000_000_000
    board.call("time_sync", {"utc_ms": utc}, role="clinician")
    st = board.status()
    assert abs(st["board"]["rtc_ms"] - utc) < 5_000
    records, _ = board.export()
    assert [r for _s, _t, r in records if r["k"] == "rtc" and r["utc_ms"] == utc]


def test_itbsim_board_serves_a_pty_until_interrupted(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "sim", "board", "--state", str(tmp_path / "b"),
                             "--provision"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("virtual board running on /dev/"), line + proc.stderr.read()
        path = line.split()[-1]
        b = link.Board(path, timeout=5)
        info = b.hello()
        assert info["provisioning"] == 1 and info["build"] == "dev"
        b.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "virtual board stopped" in out
    assert os.path.isdir(tmp_path / "b" / "fs")
