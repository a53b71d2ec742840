"""Gravimetric stroke calibration: the controller's ``calibration_run`` and
``set_calibration`` (service role, two-phase, UNPROGRAMMED only), the runner handing
a confirmed calibration to the board, the analysis of balance readings
(``host_tools.calibration``) and the MT-SICS balance (``host_tools.balance_port``).
``itbctl calibrate`` on the virtual board: test_itbctl_calibrate.py.

Reference numbers by hand: at 500 ug/mL a 2 uL stroke holds 1 ug (1000 ng); the
default maximum rate (1 mL/min) allows a stroke every 120 ms. Water at 20 °C is
0.998207 g/mL (Tanaka et al. 2001, the CIPM table); the two-sided 95 % Student-t
quantile with 9 degrees of freedom is 2.262 (any t table).
"""

import json
import math
import os
import statistics
import threading

import pytest
from helpers import ML, SEC, Bench
from itb import trace

from host_tools import calibration as cal
from host_tools import gravimetry as gr
from host_tools.balance_port import Balance, BalanceError, parse_answer

FILL = {"aspirated_nl": 0, "volume_nl": 1 * ML, "concentration_ug_per_ml": 500}


def _filled():
    """A bench pump with 1 mL at 500 ug/mL and its fluid path declared full of it (so
    each stroke's mass at the tip is known: 1 ug)."""
    b = Bench()
    assert b.confirm("refill", FILL)["ok"]
    assert b.confirm("prime", {"contents": "drug"})["ok"]
    return b


def _run(b, strokes=10, measurement=7, t=None, interval_ms=1000):
    res = b.confirm("calibration_run", {"strokes": strokes, "interval_ms": interval_ms,
                                        "measurement": measurement}, t, role="service")
    assert res["ok"], res
    b.advance(b.t + strokes * interval_ms)
    return res


def _set(b, measured_nl=1900, ci_nl=20, strokes=10, t=None, measurement=None):
    """set_calibration for the board's current measurement (or ``measurement``)."""
    mid = b.status()["calibration"][2] if measurement is None else measurement
    return b.confirm("set_calibration", {"measurement": mid or 1, "strokes": strokes,
                                         "measured_nl": measured_nl, "ci_nl": ci_nl}, t,
                     role="service")


class _CalBoard:
    """A FakeBoard that also takes calibrations (as the Pico and the virtual board)."""

    def __init__(self, board):
        self.board = board
        self.calibrations = []

    def stroke(self, n, volume_nl, now):
        return self.board.stroke(n, volume_nl, now)

    def calibrate(self, stroke_nl, measured_nl):
        self.calibrations.append((stroke_nl, measured_nl))


# ---------------------------------------------------------------------- the run
@pytest.mark.sr("SR-4", "SR-26", "SR-15")
def test_a_calibration_run_makes_its_strokes_as_normal_strokes():
    """Every calibration stroke is a normal stroke: intent before the motor (SR-26),
    its mass counted for the caps (SR-4: 10 strokes x 1 ug), taken from the reservoir,
    spaced by the interval asked; two-phase (SR-15) and the measurement counted."""
    b = _filled()
    p = b.prepare("calibration_run", {"strokes": 10, "interval_ms": 5 * SEC,
                                      "measurement": 7}, role="service")
    assert p["ok"] and p["effect"]["calibration_nl"] == 10 * 2000
    assert p["effect"]["duration_ms"] == 9 * 5 * SEC and p["effect"]["mass_24h_ng"] == 10_000
    assert b.send("confirm", {"hash": p["hash"]}, role="service")["ok"]
    b.advance(60 * SEC)
    times = [t for t, src in b.strokes if src == "calibration"]
    assert times == [i * 5 * SEC for i in range(10)]
    assert b.status()["window_ng"] == [10_000, 10_000]
    assert b.status()["reservoir_nl"] == 1 * ML - 10 * 2000
    assert b.status()["calibration"] == [10, 0, 7]
    kinds = [json.loads(line)["k"] for line in b.lines]
    first = kinds.index("stroke")
    assert kinds[first + 1] == "outcome"  # the intent is traced before the outcome


@pytest.mark.sr("SR-14", "SR-15")
@pytest.mark.parametrize("case, reason", [
    ("programmed", "WRONG_STATE"), ("clinician", "WRONG_ROLE"), ("no_fill", "NO_DRUG"),
    ("too_many_for_the_fill", "NO_DRUG"), ("closer_than_the_maximum_rate", "OUT_OF_RANGE"),
    ("run_under_way", "CALIBRATION_RUNNING"), ("single_phase", "NEEDS_CONFIRM"),
    ("priming", "BOLUS_ACTIVE")])
def test_a_calibration_run_is_refused_and_changes_nothing(case, reason):
    """SR-14: a refused run changes no therapy state (nor the measurement) and writes
    one audit record. A programmed pump treats a patient: no bench strokes."""
    b = Bench() if case == "no_fill" else _filled()
    args = {"strokes": 10, "interval_ms": 1000, "measurement": 7}
    role = "service"
    if case == "programmed":
        assert b.confirm("program", {"daily_dose_ng": 100_000, "origin": "spinal"})["ok"]
    elif case == "clinician":
        role = "clinician"
    elif case == "too_many_for_the_fill":
        args["strokes"] = 100
        b.confirm("refill", {**FILL, "volume_nl": 99 * 2000})
    elif case == "closer_than_the_maximum_rate":
        b = Bench({"max_rate_nl_per_min": 1000})  # 2 uL strokes at most every 2 min
        b.confirm("refill", FILL)
        b.confirm("prime", {"contents": "drug"})
    elif case == "run_under_way":
        b.confirm("calibration_run", {"strokes": 5, "interval_ms": 60 * SEC,
                                      "measurement": 7}, role="service")
        b.advance(b.t + 1)
    elif case == "priming":
        b = Bench({"prime_rate_nl_per_min": 1000})  # a stroke every 2 min
        b.confirm("refill", FILL)
        b.confirm("prime", {"contents": "saline"})
        b.advance(b.t + 1)
    before = list(b.status()["calibration"])
    if case == "single_phase":
        res = b.assert_refused(reason, lambda: b.send("calibration_run", args, role=role))
    else:
        res = b.assert_refused(reason, lambda: b.prepare("calibration_run", args, role=role))
    assert b.status()["calibration"] == before
    if case == "closer_than_the_maximum_rate":
        assert res["allowed"] == 120 * SEC
    if case == "too_many_for_the_fill":
        assert res["allowed"] == 99


# ---------------------------------------------------------------------- the correction
@pytest.mark.sr("SR-15", "SR-26")
def test_a_confirmed_calibration_goes_to_the_board_logged_once():
    """A confirmed ``set_calibration`` is a ``calibration`` record in the trace (the
    ledger) and one ``board.calibrate(stroke_nl, measured_nl)`` call; it ends the
    measurement, so the same readings cannot correct the factor twice."""
    b = _filled()
    board = _CalBoard(b.board)
    b.r.board = board
    _run(b)
    res = _set(b, 1900, 20)
    assert res["ok"], res
    assert res["effect"] == {"stroke_nl": 2000, "measured_nl": 1900, "ci_nl": 20,
                             "strokes": 10, "measurement": 7, "error_ppm": -50_000}
    assert board.calibrations == [(2000, 1900)]
    recs = [json.loads(line) for line in b.lines]
    cal_recs = [r for r in recs if r["k"] == "calibration"]
    assert len(cal_recs) == 1 and cal_recs[0]["measured_nl"] == 1900
    assert trace.decode(trace.encode(cal_recs[0])) == cal_recs[0]  # a known trace kind
    assert b.status()["calibration"] == [0, 0, 0]
    again = _set(b, 1900, 20, measurement=res["effect"].get("measurement", 1))
    assert again["reason"] == "NO_MEASUREMENT" and board.calibrations == [(2000, 1900)]
    replayed = b.send("confirm", {"hash": 0}, role="service", cid=res["id"])  # SR-26 retry
    assert replayed.get("replayed") == 1 and board.calibrations == [(2000, 1900)]


@pytest.mark.sr("SR-14")
@pytest.mark.parametrize("measured, ci, strokes, reason", [
    (1499, 10, 10, "CALIBRATION_RANGE"),  # 25.05 % under the nominal 2000 nL
    (2501, 10, 10, "CALIBRATION_RANGE"),  # 25.05 % over
    (2000, 101, 10, "CALIBRATION_IMPRECISE"),  # +-5.05 % of the mean
    (2000, 10, 11, "NO_MEASUREMENT"),  # more strokes weighed than the board made
    (2000, 10, 9, "OUT_OF_RANGE"),  # fewer than 10 (the schema: ISO 8655-6 asks for 10)
])
def test_a_calibration_outside_the_limits_is_refused_and_changes_nothing(measured, ci, strokes,
                                                                          reason):
    """SR-14 (reject, never clamp): each limit refused whole, the measurement kept."""
    b = _filled()
    board = _CalBoard(b.board)
    b.r.board = board
    _run(b)
    b.assert_refused(reason, lambda: b.prepare("set_calibration", {
        "measurement": 7, "strokes": strokes, "measured_nl": measured, "ci_nl": ci},
        role="service"))
    assert board.calibrations == [] and b.status()["calibration"] == [10, 0, 7]


@pytest.mark.sr("SR-14")
@pytest.mark.parametrize("measured, ci", [(1500, 75), (2500, 125)])
def test_the_calibration_limits_themselves_are_accepted(measured, ci):
    """Exactly 25 % off and a half-width of exactly 5 % of the mean are inside."""
    b = _filled()
    _run(b)
    assert _set(b, measured, ci)["ok"]


@pytest.mark.sr("SR-14", "SR-26")
@pytest.mark.parametrize("outcome", ["stall", "occlusion", "unknown"])
def test_a_measurement_with_a_failed_stroke_is_refused(outcome):
    """A stroke that did not end ``ok`` may not have delivered its volume: the
    readings cannot calibrate (NO_MEASUREMENT) until a new run."""
    b = _filled()
    b.board.queue = ["ok", outcome]
    _run(b)
    assert b.status()["calibration"] == [9, 1, 7]
    assert _set(b, 2000, 10)["reason"] == "NO_MEASUREMENT"
    _run(b, measurement=8, t=b.t)
    assert _set(b, 2000, 10)["ok"]


@pytest.mark.sr("SR-26")
def test_runs_of_one_stroke_add_up_and_a_reset_ends_the_measurement():
    """A run with the measurement's id adds to it (the guided run weighs after each
    stroke); a reset (power cut) ends it: the same id then starts a new one, which the
    host sees (its count went back), and the readings so far cannot be written."""
    b = _filled()
    for _ in range(10):
        _run(b, strokes=1, t=b.t)
    assert b.status()["calibration"] == [10, 0, 7]
    b.power_cut(b.t + 1)
    b.power_on(b.t + 2, 1000)
    assert b.status()["calibration"] == [0, 0, 0]
    assert _set(b, 2000, 10, measurement=7)["reason"] == "NO_MEASUREMENT"
    _run(b, strokes=1, t=b.t)
    assert b.status()["calibration"] == [1, 0, 7]


@pytest.mark.sr("SR-14")
def test_set_calibration_is_refused_while_the_run_goes_on_and_when_programmed():
    b = _filled()
    b.confirm("calibration_run", {"strokes": 10, "interval_ms": 60 * SEC, "measurement": 7},
              role="service")
    b.advance(b.t + 1)
    b.assert_refused("CALIBRATION_RUNNING", lambda: b.prepare("set_calibration", {
        "measurement": 7, "strokes": 10, "measured_nl": 2000, "ci_nl": 10}, role="service"))
    p = _filled()
    p.confirm("program", {"daily_dose_ng": 100_000, "origin": "spinal"})
    p.assert_refused("WRONG_STATE", lambda: p.prepare("set_calibration", {
        "measurement": 7, "strokes": 10, "measured_nl": 2000, "ci_nl": 10}, role="service"))


@pytest.mark.sr("SR-25")
def test_a_service_confirm_does_not_end_a_storage_alarm():
    """Found while building this: every confirm ended STORAGE_CORRUPT and
    PRESCRIPTION_ROLLBACK ("a clinician confirmed a prescription"). A service
    calibration is no prescription: the alarm stays until a clinician programs."""
    b = _filled()
    b.ctrl._alarm("STORAGE_CORRUPT", 1, b.t)
    b.ctrl.drain_events()
    _run(b, strokes=10)
    assert b.active("STORAGE_CORRUPT")
    assert _set(b, 2000, 10)["ok"]
    assert b.active("STORAGE_CORRUPT")


# ---------------------------------------------------------------------- the analysis
def _readings(volumes_ul, t_step=15.0, start_g=20.0, temperature_c=20.0, evaporation=0.0):
    """Readings of strokes of ``volumes_ul`` (independent of the module: mass = volume
    x density, less the evaporation over the time)."""
    d = {20.0: 0.998207, 30.0: 0.995649}[temperature_c]  # the CIPM table (Tanaka 2001)
    times, masses = [0.0], [start_g]
    for i in range(1, len(volumes_ul) + 1):
        times.append(i * t_step)
        masses.append(start_g + sum(volumes_ul[:i]) * d / 1000
                      - evaporation * times[-1] / 3600 / 1000)
    return times, masses


def test_equal_strokes_give_their_volume_with_no_spread():
    times, masses = _readings([1.95] * 10)
    r = cal.analyse(times, masses, stroke_nl=2000)
    assert r["mean_nl"] == pytest.approx(1950, abs=0.01)
    assert r["sd_nl"] == pytest.approx(0, abs=0.01) and r["ci_nl"] == pytest.approx(0, abs=0.01)
    assert r["error_pct"] == pytest.approx(-2.5, abs=1e-4)
    assert r["command"]["strokes"] == 10 and r["command"]["measured_nl"] == 1950
    assert r["command"]["ci_nl"] in (0, 1)  # rounded up from float noise


def test_spread_strokes_give_the_textbook_statistics():
    """Mean, sample standard deviation and the 95 % interval with t(9) = 2.262,
    computed here with ``statistics`` from the volumes that made the readings."""
    vols = [1.90, 2.02, 1.97, 2.05, 1.93, 1.99, 2.01, 1.96, 2.04, 1.98]
    r = cal.analyse(*_readings(vols), stroke_nl=2000)
    mean, sd = statistics.mean(vols) * 1000, statistics.stdev(vols) * 1000
    assert r["mean_nl"] == pytest.approx(mean, rel=1e-6)
    assert r["sd_nl"] == pytest.approx(sd, rel=1e-5)
    assert r["t_quantile"] == pytest.approx(2.262, abs=5e-4)
    assert r["ci_nl"] == pytest.approx(2.262 * sd / math.sqrt(10), rel=1e-3)
    assert r["cv_pct"] == pytest.approx(100 * sd / mean, rel=1e-5)
    assert r["command"]["ci_nl"] == math.ceil(r["ci_nl"])  # rounded up: the safe side
    wider = cal.analyse(*_readings(vols), stroke_nl=2000, confidence=0.99)
    assert wider["ci_nl"] > r["ci_nl"]


def test_evaporation_and_temperature_are_corrected():
    """Water lost to evaporation at E mg/h is added back; the density follows the
    temperature (at 30 °C 1 mg is 1.0044 uL)."""
    vols = [2.0] * 10
    r = cal.analyse(*_readings(vols, t_step=60.0, evaporation=6.0), stroke_nl=2000,
                    evaporation_mg_per_h=6.0)
    assert r["mean_nl"] == pytest.approx(2000, abs=0.01)
    uncorrected = cal.analyse(*_readings(vols, t_step=60.0, evaporation=6.0), stroke_nl=2000)
    assert uncorrected["mean_nl"] == pytest.approx(2000 - 100 / 0.998207, abs=0.1)  # 0.1 mg/min
    hot = cal.analyse(*_readings(vols, temperature_c=30.0), stroke_nl=2000, temperature_c=30.0)
    assert hot["density_g_per_ml"] == pytest.approx(0.995649, abs=2e-6)
    assert hot["mean_nl"] == pytest.approx(2000, abs=0.01)


@pytest.mark.parametrize("times, masses, message", [
    ([0, 1], [1.0, 1.002], "at least 2 strokes"),
    ([0, 1, 2], [1.0, 1.002, 1.001], r"stroke 2 \(readings 2 and 3\): the mass did not rise"),
    # found by the attacker: a stroke that did not move weighs about 0 (with the
    # evaporation added back, just above it) and passed
    ([0, 1, 2, 3, 4], [1.0, 1.002, 1.004, 1.00401, 1.006], "stroke 3 .*not a whole stroke"),
    ([0, 1, 2, 3], [1.0, 1.002, 1.009, 1.011], "stroke 2 .*not a whole stroke"),
    ([0, 1, 2], [1.0, float("nan"), 1.004], "mass 1: nan is not a finite number"),
    ([0, float("inf"), 2], [1.0, 1.002, 1.004], "time 1: inf"),
    ([0, 1, 2], [1.0, 1.002], "3 times for 2 masses"),
])
def test_unusable_readings_are_refused_whole(times, masses, message):
    with pytest.raises(gr.GravimetryError, match=message):
        cal.analyse(times, masses, stroke_nl=2000)


def test_bad_settings_are_refused():
    times, masses = _readings([2.0] * 3)
    for kw, message in (({"confidence": 1.0}, "confidence"), ({"stroke_nl": 0}, "positive"),
                        ({"temperature_c": 41}, "0 to 40"),
                        # found by the attacker: 50 % shrank the interval the board checks
                        ({"confidence": 0.5}, "from 0.95"),
                        ({"evaporation_mg_per_h": float("nan")}, "evaporation 0: nan")):
        with pytest.raises(gr.GravimetryError, match=message):
            cal.analyse(times, masses, **{"stroke_nl": 2000, **kw})


# ---------------------------------------------------------------------- the balance
@pytest.mark.parametrize("line, grams", [
    ("S S      12.34567 g\r\n", 12.34567), ("S S    -0.00012 g", -0.00012),
    ("S S   12345.6 mg", 12.3456), ("S I      12.3 g", None)])
def test_mt_sics_answers_are_read(line, grams):
    got = parse_answer(line)
    assert got == (None if grams is None else pytest.approx(grams))


@pytest.mark.parametrize("line, message", [
    ("ES", "syntax"), ("ET", "transmission"), ("EL", "logical"), ("S +", "overload"),
    ("S -", "underload"), ("S S 12.3 oz", "unit 'oz'"), ("S S abc g", "not a number"),
    ("hello", "unexpected answer")])
def test_mt_sics_errors_are_named(line, message):
    with pytest.raises(BalanceError, match=message):
        parse_answer(line)


class _FakeBalance:
    """An MT-SICS balance on a pseudo-terminal: answers ``S`` with the scripted
    lines, then with the last one."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        self.slave = slave
        self.asked = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        buf = b""
        while True:
            try:
                data = os.read(self.master, 64)
            except OSError:
                return
            buf += data
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                if line == b"S":
                    self.asked += 1
                    answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
                    os.write(self.master, answer.encode() + b"\r\n")

    def close(self):
        os.close(self.slave)
        os.close(self.master)


def test_a_serial_balance_is_asked_until_the_weight_is_stable():
    fake = _FakeBalance(["S I 12.1 g", "S I 12.2 g", "S S     12.34567 g"])
    try:
        with Balance(fake.path, timeout_s=5) as bal:
            assert bal.stable_g() == pytest.approx(12.34567)
        assert fake.asked == 3
    finally:
        fake.close()


def test_a_balance_that_never_settles_or_errs_stops_the_run():
    fake = _FakeBalance(["S I 12.1 g"])
    try:
        with Balance(fake.path, timeout_s=1) as bal, pytest.raises(BalanceError, match="within"):
            bal.stable_g()
    finally:
        fake.close()
    with pytest.raises(BalanceError, match="cannot open"):
        Balance("/dev/no-such-balance")


def _stroke_masses(n, stroke_ul, start_g=20.0):
    d = 0.998207  # water at 20 °C
    return [start_g + i * stroke_ul * d / 1000 for i in range(n + 1)]


@pytest.mark.sr("SR-26")
def test_the_board_gets_a_calibration_only_after_it_is_durable():
    """The ``calibration`` record and the command's result are committed to the store
    before ``board.calibrate`` runs: a power cut in between leaves a logged calibration
    the board lacks (its status shows it), never a changed board without a record."""
    b = _filled()
    board = _CalBoard(b.board)
    b.r.board = board
    events = []

    class Journal:
        def write(self, rec, line, wall_delta):
            events.append(("write", rec["k"]))

        def commit(self, ctrl, answer=1):
            events.append(("commit",))

        def sync(self):
            pass

    _run(b)
    b.r.journal = Journal()
    board.calibrate = lambda stroke_nl, measured_nl: events.append(("calibrate",))
    assert _set(b, 1900, 20)["ok"]
    first = events.index(("write", "calibration"))
    assert events[first:].index(("commit",)) < events[first:].index(("calibrate",))
    assert events.count(("calibrate",)) == 1


def test_the_summary_says_what_the_board_will_say():
    """The verdict uses the board's own limits (``itb.calibration``); a mean about 1000
    times the nominal stroke asks about mg under a mass_g header (found by the new-user
    trial); a large evaporation correction is a warning (found by the attacker)."""
    good = cal.analyse(*_readings([1.95] * 10), stroke_nl=2000)
    assert "within the board's limits (25 % error, 5 % interval)" in cal.summary_text(good)
    assert "the nominal stroke is outside it" in cal.summary_text(good)
    inside = cal.analyse(*_readings([1.98, 2.02] * 5), stroke_nl=2000)
    assert "the nominal stroke is inside it" in cal.summary_text(inside)
    few = cal.analyse(*_readings([2.0] * 5), stroke_nl=2000)
    assert "5 strokes: the board takes 10 or more" in cal.summary_text(few)
    mg = cal.analyse(*_readings([2000.0] * 10), stroke_nl=2000)
    assert "masses in mg under a mass_g header?" in cal.summary_text(mg)
    wet = cal.analyse(*_readings([2.0] * 10, t_step=60.0, evaporation=3.0), stroke_nl=2000,
                      evaporation_mg_per_h=3.0)
    assert wet["evaporation_pct"] == pytest.approx(100 * 0.05 / (2 * 0.998207), rel=1e-3)
    assert "WARNING: the evaporation correction is 2.50 %" in cal.summary_text(wet)


@pytest.mark.sr("SR-14", "SR-26")
def test_readings_of_an_earlier_run_cannot_correct_the_board_again():
    """Found by the attacker: the README's check run (a second run of as many strokes,
    not written) made the first run's readings acceptable again, and the correction
    was applied twice. A correction quotes its measurement's id; a new run, a refill
    or a correction ends the measurement."""
    b = _filled()
    first = _run(b, measurement=11)["effect"]["measurement"]
    assert first == 11
    assert _set(b, 1900, 20, measurement=first)["ok"]
    second = _run(b, measurement=12, t=b.t)["effect"]["measurement"]
    b.assert_refused("NO_MEASUREMENT", lambda: b.prepare("set_calibration", {
        "measurement": first, "strokes": 10, "measured_nl": 1900, "ci_nl": 20},
        role="service"))
    third = _run(b, measurement=13, t=b.t)["effect"]["measurement"]  # the second is over
    assert _set(b, 2000, 10, measurement=second)["reason"] == "NO_MEASUREMENT"
    b.confirm("refill", FILL)  # a new fill ends the measurement
    assert _set(b, 2000, 10, measurement=third)["reason"] == "NO_MEASUREMENT"


@pytest.mark.sr("SR-15", "SR-6")
def test_a_program_cancels_a_calibration_run():
    """Found by the attacker: a calibration run went on after ``program``, on top of
    basal, for days. The program's effect says it cancels the run; no calibration
    stroke follows it."""
    b = _filled()
    b.confirm("calibration_run", {"strokes": 100, "interval_ms": 3_600_000, "measurement": 7},
              role="service")
    b.advance(b.t + 1)
    p = b.prepare("program", {"daily_dose_ng": 100_000, "origin": "spinal"})
    assert p["effect"]["calibration_cancelled"] == 99
    assert b.send("confirm", {"hash": p["hash"]})["ok"]
    b.advance(b.t + 3 * 24 * 3_600_000)
    assert [t for t, src in b.strokes if src == "calibration"] == [0]
    assert b.status()["calibration"] == [0, 0, 0]


def test_a_run_of_one_stroke_has_no_interval_to_check():
    """Found by the attacker: ``itbctl calibrate`` makes one stroke per run, and a board
    whose maximum rate allows a stroke only every 2 min refused every one of them."""
    b = Bench({"max_rate_nl_per_min": 1000})
    b.confirm("refill", FILL)
    res = b.confirm("calibration_run", {"strokes": 1, "interval_ms": 1000, "measurement": 7},
                    role="service")
    assert res["ok"], res


@pytest.mark.parametrize("line", ["S S nan g", "S S inf g", "S S 1e400 g"])
def test_a_balance_that_sends_no_number_is_refused(line):
    """Found by the attacker: ``nan`` and ``inf`` were read as weights."""
    with pytest.raises(BalanceError, match="not a number"):
        parse_answer(line)


def test_the_virtual_board_keeps_its_motion_within_25_percent(tmp_path):
    """As the Pico: corrections never add up past 25 % of the motion set by hand."""
    from board.virtual import VirtualBoard

    (tmp_path / "vb").mkdir()
    (tmp_path / "vb" / "device_id").write_text("0123456789abcdef\n")  # the unix port's job
    vb = VirtualBoard(str(tmp_path / "vb"))
    vb.calibrate(2000, 1700)
    assert vb.motion_ppm == round(1e6 * 2000 / 1700)
    vb.calibrate(2000, 1700)  # 1.384: refused
    assert vb.motion_ppm == round(1e6 * 2000 / 1700) and "25 %" in vb.calibration["error"]
    assert VirtualBoard(str(tmp_path / "vb")).motion_ppm == vb.motion_ppm  # kept on "flash"


@pytest.mark.sr("SR-25", "SR-26")
def test_recovery_from_the_older_checkpoint_replays_a_measurement_alike():
    """Found by the attacker (round 2): the measurement was volatile, so recovery from
    the older checkpoint (the newest one unreadable) replayed a run that added to it as
    refused: 50 strokes' mass and volume were missing and their numbers reused. It is
    kept in checkpoints now; the recovered controller equals the one that lost power
    (its reset then ends the measurement)."""
    from itb import store as st
    from itb.fs import MemoryFS

    class Board:
        def stroke(self, n, nl, now):
            return "ok"

    fs = MemoryFS()
    runner, _ = st.boot(fs, Board())
    ids = iter(range(1, 100))

    def change(name, args, t, role="service"):
        p = runner.command({"name": "prepare", "id": next(ids), "role": role,
                            "args": {"command": name, "args": args}}, t)
        assert p["ok"], p
        res = runner.command({"name": "confirm", "id": next(ids), "role": role,
                              "args": {"hash": p["hash"]}}, t)
        assert res["ok"], res

    t = 1000
    change("refill", FILL, t, "clinician")
    change("prime", {"contents": "drug"}, t, "clinician")
    change("calibration_run", {"strokes": 10, "interval_ms": 1000, "measurement": 7}, t)
    t += 15000
    runner.advance(t)
    change("calibration_run", {"strokes": 50, "interval_ms": 1000, "measurement": 7}, t)
    t += 60000
    runner.advance(t)
    live = runner.ctrl
    assert live.calibration == [60, 0, 7]
    expected = (live.stroke_seq, live.window.sums(t), live.res.remaining_nl())
    slots = st.Store(fs).slots()
    f = fs.open(slots[0][2], "wb")
    f.write(b"x\n")
    f.close()
    runner.journal.close()
    r2, info = st.Store(fs).recover(Board(), clock=(t + 1000, 1000))
    c = r2.ctrl
    assert (c.stroke_seq, c.window.sums(t), c.res.remaining_nl()) == expected
    assert not any(a[0] == "PRESCRIPTION_ROLLBACK" for a in c.alarms.listing())
    assert c.calibration == [0, 0, 0]  # the reset ended it


def test_checkpoints_keep_the_measurement_and_older_ones_load():
    from itb import snapshot
    from itb.controller import Controller

    ctrl = Controller()
    ctrl.calibration = [3, 1, 99]
    items = snapshot.save(ctrl)
    assert snapshot.load(items).calibration == [3, 1, 99]
    older = [i for i in items if i[0] != "calibration"]  # a checkpoint of the last release
    assert snapshot.load(older).calibration == [0, 0, 0]
    for bad in ([1, 2], "x", [1, 2, "3"]):
        with pytest.raises(ValueError, match="calibration"):
            snapshot.load([i if i[0] != "calibration" else ["calibration", bad] for i in items])


def test_a_board_calibrate_that_raises_is_never_applied_again():
    """Found by the attacker (round 2): a calibrate that raised (a full disk) stayed
    queued, and the next command of any kind applied it again."""
    b = _filled()
    calls = []

    class Failing(_CalBoard):
        def calibrate(self, stroke_nl, measured_nl):
            calls.append(measured_nl)
            raise OSError(28, "no space left")

    b.r.board = Failing(b.board)
    _run(b)
    with pytest.raises(OSError):
        _set(b, 1900, 20)
    assert b.send("acknowledge", {"code": "all"})["ok"]
    assert calls == [1900]


@pytest.mark.sr("SR-14")
def test_a_patient_s_bench_command_on_a_pump_in_use_loads_nothing(monkeypatch):
    """Found by the attacker (round 2): the parameters were loaded (6 KB on the board)
    before the role was checked. Role and state come first for bench commands."""
    import sys as _sys

    b = _filled()
    b.confirm("program", {"daily_dose_ng": 100_000, "origin": "spinal"})
    monkeypatch.delitem(_sys.modules, "itb.calibration", raising=False)
    res = b.send("calibration_run", {"strokes": 1, "measurement": 7}, role="patient")
    assert res["reason"] == "WRONG_ROLE"
    res = b.prepare("calibration_run", {"strokes": 1, "measurement": 7}, role="service")
    assert res["reason"] == "WRONG_STATE"
    assert "itb.calibration" not in _sys.modules


class _LinkLike:
    """``run_strokes``'s view of a board (``status``, ``change``) over a Bench, whose
    therapy clock is the run's clock: ``sleep`` lets the pump's time pass."""

    def __init__(self, bench):
        self.b = bench
        self.info = {"dev": "bench"}

    def status(self):
        return self.b.status()

    def change(self, name, args):
        res = self.b.confirm(name, args, role="service")
        assert res["ok"], res
        return res

    def sleep(self, s):
        self.b.advance(self.b.t + int(s * 1000))

    def clock(self):
        return self.b.t / 1000


def test_a_slow_board_s_strokes_are_waited_for():
    """Found by the attacker (round 2): with a stroke allowed every 2 min (the maximum
    rate), the guided run gave up after 60 s. It waits until the stroke is due."""
    b = Bench({"max_rate_nl_per_min": 1000})
    b.confirm("refill", FILL)
    b.confirm("prime", {"contents": "drug"})
    board = _LinkLike(b)
    said = []
    masses = iter(_stroke_masses(10, 2.0))
    mid, times, got = cal.run_strokes(board, 10, lambda label, prev: next(masses),
                                      lambda t, g: None, settle_s=1, say=said.append,
                                      sleep=board.sleep, clock=board.clock)
    assert len(got) == 11 and b.status()["calibration"] == [10, 0, mid]
    assert any("due in" in line for line in said)
    assert [t for t, src in b.strokes if src == "calibration"][1] >= 120 * SEC


def test_a_run_whose_measurement_ended_under_way_stops():
    """A reset between two strokes ends the board's measurement: the next stroke would
    start a new one under the same id, so the run stops instead."""
    b = _filled()
    board = _LinkLike(b)
    masses = iter(_stroke_masses(10, 2.0))

    def read(label, prev):
        if label == "after stroke 3":
            b.power_cut(b.t + 1)
            b.power_on(b.t + 2, 1000)
        return next(masses)

    with pytest.raises(cal.RunError, match="measurement ended under way"):
        cal.run_strokes(board, 10, read, lambda t, g: None, settle_s=1, say=lambda x: None,
                        sleep=board.sleep, clock=board.clock)


@pytest.mark.sr("SR-21")
def test_a_program_keeps_a_priming_under_way():
    """Only a calibration run is cancelled by a program: priming goes on (SR-21)."""
    b = Bench({"prime_rate_nl_per_min": 1000})  # a priming stroke every 2 min
    b.confirm("refill", FILL)
    b.confirm("prime", {"contents": "saline"})
    b.advance(b.t + 1)
    p = b.prepare("program", {"daily_dose_ng": 100_000, "origin": "spinal"})
    assert p["ok"] and "calibration_cancelled" not in p["effect"]
    assert b.send("confirm", {"hash": p["hash"]})["ok"]
    b.advance(b.t + 10 * 60_000)
    assert len([t for t, src in b.strokes if src == "prime"]) > 1


def test_a_calibration_whose_commit_failed_is_never_applied_later():
    """A store that failed to commit the confirm (its record may not be durable) leaves
    the board as it was, also at the next command."""
    b = _filled()
    board = _CalBoard(b.board)
    b.r.board = board
    _run(b)

    class Broken:
        def write(self, rec, line, wall_delta):
            pass

        def commit(self, ctrl, answer=1):
            raise OSError(5, "flash error")

        def sync(self):
            pass

    p = b.prepare("set_calibration", {"measurement": 7, "strokes": 10, "measured_nl": 1900,
                                      "ci_nl": 20}, role="service")
    b.r.journal = Broken()
    with pytest.raises(OSError):
        b.send("confirm", {"hash": p["hash"]}, role="service")
    b.r.journal = None
    assert b.send("acknowledge", {"code": "all"})["ok"]
    assert board.calibrations == []
