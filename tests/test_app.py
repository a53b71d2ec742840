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
        assert st["strokes"] >= before + 1  # the hung stroke counts (its intent was durable)
        records, _ = b.export()
        first = [r for _s, _t, r in records if r["k"] == "stroke"][0]
        assert not [r for _s, _t, r in records if r["k"] == "outcome" and r["n"] == first["n"]]
        assert "STROKE_UNCONFIRMED" in [a[0] for a in st["alarms"]]
        b.close()


def hang_until_reset(vb, b, boots, step_ms=HOUR):
    """A stroke that never returns: the watchdog resets the board."""
    b.call("inject", {"fault": "hang", "count": 1}, role="service")
    b.timeout, b.retries = 0.3, 0
    with pytest.raises(link.LinkError):
        b.call("test_clock", {"mode": "stepped", "advance_ms": step_ms}, role="service")
    b.timeout, b.retries = 5, 3
    assert wait_for(lambda: vb.boots == boots)


@pytest.mark.sr("SR-27")
def test_three_watchdog_resets_within_ten_minutes_boot_into_safe(tmp_path):
    """Two watchdog resets: the board restarts dosing; the third boots into SAFE
    (no motor, HIGH SAFE_STATE annunciated). The power-on before them does not
    count (it did, found by the second attack round: SAFE after two faults)."""
    with VirtualBoard(tmp_path / "b", provision=True, watchdog_ms=1500) as vb:
        b = connect(vb)
        start_therapy(b, 1_000_000, 500)  # a stroke every 86 s: the RTC (which keeps
        b.call("test_clock", {"mode": "stepped"}, role="service")  # pace) moves little
        for boots in (2, 3, 4):
            hang_until_reset(vb, b, boots, 2 * 60_000)
            b.hello()
            if boots < 4:
                assert b.status()["state"] == "RUNNING"
                b.call("test_clock", {"mode": "stepped"}, role="service")
        st = b.status()
        b.close()
        assert st["state"] == "SAFE"
        assert "SAFE_STATE" in [a[0] for a in st["alarms"]]
        assert wait_for(lambda: vb.annunciating == "high")


@pytest.mark.sr("SR-27")
def test_power_cycles_are_not_a_boot_loop(tmp_path):
    """Reading of SR-27 (safer for withdrawal): unplugging and replugging a board
    three times in ten minutes is not a crash loop; dosing goes on."""
    with VirtualBoard(tmp_path / "b", provision=True) as vb:
        b = connect(vb)
        keys = b.keys
        program(b)
        b.close()
        for _ in range(3):
            vb.power_cut()
        b = connect(vb, keys)
        st = b.status()
        b.close()
        assert st["state"] == "RUNNING", st["alarms"]


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


def test_a_host_that_stops_reading_does_not_reset_the_board(tmp_path):
    """Found by the attacker: thousands of hellos from a host that never reads
    blocked the board's writes, starved the watchdog and (three times over) put the
    board in SAFE. Answers a host does not take are dropped; the board stays up."""
    import socket

    from itb import protocol as pr

    with VirtualBoard(tmp_path / "b", provision=True, socket_port=0,
                      watchdog_ms=1500) as vb:
        b = connect(vb)
        program(b)
        boot = b.info["boot"]
        b.close()
        port = int(vb.url.rsplit(":", 1)[1])
        flood = socket.create_connection(("127.0.0.1", port))
        hello = b"\x00" + pr.pack(pr.seal(pr.HELLO, "", b"{}"))
        flood.sendall(hello * 20_000)
        time.sleep(4)  # longer than the watchdog
        flood.close()
        assert vb.resets == {"exit": 0, "watchdog": 0, "power_cut": 0}
        b = link.Board(vb.url, timeout=5)
        b.keys = {}
        assert b.hello()["boot"] == boot
        b.close()


def test_the_stepped_clock_moves_the_rtc_and_a_retried_step_is_not_applied_twice(board):
    """Found by the attacker: a step left the RTC behind (a short power cut then
    looked like an unknown outage), and a retried step moved time twice."""
    rtc0 = board.status()["board"]["rtc_ms"]
    cid = board.new_id()
    first = board.call("test_clock", {"mode": "stepped", "advance_ms": 24 * HOUR},
                       role="service", cid=cid)
    again = board.call("test_clock", {"mode": "stepped", "advance_ms": 24 * HOUR},
                       role="service", cid=cid)
    assert again.get("replayed") == 1 and again["t"] == first["t"]
    st = board.status()
    assert st["t"] == first["t"]
    assert 24 * HOUR <= st["board"]["rtc_ms"] - rtc0 < 24 * HOUR + 60_000


def test_one_board_per_state_directory(tmp_path):
    with VirtualBoard(tmp_path / "b"):
        with pytest.raises(Exception, match="in use by another virtual board"):
            VirtualBoard(tmp_path / "b").start()
        assert oct(os.stat(tmp_path / "b").st_mode & 0o777) == "0o700"


def test_a_flooding_host_on_the_pty_does_not_wedge_the_launcher_or_the_next_host(tmp_path):
    """Found by the second attack round: a host writing hellos without reading
    blocked the launcher's relay (and with it resets and the watchdog), and the
    board then answered a backlog one second per frame. Now bytes the board cannot
    take are lost like a UART overrun, answers no one reads are dropped fast, and
    the next host is served at once."""
    import tty

    from itb import protocol as pr

    with VirtualBoard(tmp_path / "b", provision=True, watchdog_ms=1500) as vb:
        fd = os.open(vb.url, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        hello = b"\x00" + pr.pack(pr.seal(pr.HELLO, "", b"{}"))
        end = time.monotonic() + 3
        sent = 0
        while time.monotonic() < end:
            try:
                sent += os.write(fd, hello * 50)
            except BlockingIOError:
                time.sleep(0.001)
        os.close(fd)
        assert sent > 100_000
        t0 = time.monotonic()
        b = link.Board(vb.url, timeout=5)
        b.keys = {}
        info = b.hello()
        b.close()
        assert time.monotonic() - t0 < 3
        assert info["provisioning"] == 1
        assert vb.resets == {"exit": 0, "watchdog": 0, "power_cut": 0}


@pytest.mark.sr("SR-26")
def test_an_id_at_the_end_of_the_id_space_leaves_the_next_host_its_ids(board, virtual_board):
    """Found by the attacker: one command (controller or board command) with id 2^31-1
    from any keyed host left every later host, and the board's buttons, no id: even
    an emergency stop was refused. Such ids are refused (ID_JUMP); a new session's
    hello still offers usable ids and the emergency stop goes through."""
    start_therapy(board)
    keys = dict(board.keys)
    for name, args, role in (("acknowledge", {"code": "all"}, "patient"),
                             ("time_sync", {"utc_ms": 1_790_000_000_000}, "clinician")):
        res = board.call(name, args, role=role, cid=0x7FFFFFFF, check=False)
        assert res["reason"] == "ID_JUMP", res
    board.close()
    with link.Board(virtual_board.url, keys=keys, timeout=5) as b:
        assert b.hello()["last_id"] < 1000
        assert b.call("emergency_stop", role="clinician")["ok"]


@pytest.mark.sr("SR-26")
def test_a_host_that_polls_status_for_days_keeps_its_ids(board, virtual_board):
    """Found by the attacker (round 2): status and log ids are not remembered, yet each
    used up a host id: after 65536 polls the host's next command (an emergency stop)
    was refused ID_JUMP. They now take the next id without using it; and a host whose
    ids ran ahead takes the board's next id on an ID_JUMP refusal."""
    start_therapy(board)
    before = board.next_id
    for _ in range(3):
        board.status()
    assert board.next_id == before
    board.next_id += 10**6  # as if a million polls had used up ids
    assert board.call("emergency_stop", role="clinician")["ok"]
    assert board.status()["state"] == "EMERGENCY_STOPPED"
