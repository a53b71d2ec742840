"""The reference model (``host_tools/testkit/model.py``) can fail.

Genuine runner traces of realistic scenarios are recorded once (program and run,
titration, taper, bolus, cap hold, patient bolus, refill with a concentration change,
stop/resume, emergency stop, power cut, motor stall, a small reservoir, a first
program after screening) and must pass the model with no violation. Each
``test_model_flags_*`` test then perturbs one genuine trace, as parsed records, the
way a faulty controller would have written it, and asserts that the model names the
rule: a model that accepts everything would pass the first test and fail all others.

Mutations build their records by hand; the model reads them like any trace.
"""

import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from itb import runner as rn

from host_tools.testkit import model as mdl
from host_tools.testkit.model import Model, check_trace
from sim import cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SEC = 1000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR
ML = 1_000_000  # nL
D100 = 100_000  # ng/day; at 500 ug/mL one 2 uL stroke is 1 ug, 100 strokes a day
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------- recording
class OkBoard:
    """The motor: ``outcome`` for every stroke (set it to inject a fault)."""

    def __init__(self):
        self.outcome = "ok"

    def stroke(self, n, volume_nl, now):
        return self.outcome


class Recorder:
    """Drives ``itb.runner`` directly and keeps every trace line (config first)."""

    def __init__(self, config=None):
        self.lines = []
        self.board = OkBoard()
        self.ids = 0
        self.t = 0
        self.r = rn.start(config, self.board, self.lines.append)

    def send(self, name, args=None, t=None, role="clinician"):
        self.t = self.t if t is None else t
        self.ids += 1
        cmd = {"name": name, "id": self.ids, "role": role, "args": args or {}}
        return self.r.command(cmd, self.t)

    def confirm(self, name, args, t=None):
        """prepare + confirm (SR-15); the prepare result if it was refused."""
        res = self.send("prepare", {"command": name, "args": args}, t)
        return self.send("confirm", {"hash": res["hash"]}) if res["ok"] else res

    def ok(self, name, args, t=None):
        res = self.confirm(name, args, t)
        assert res["ok"], res
        return res

    def setup(self, dose_ng=D100, conc=500, fill_nl=20 * ML, **program):
        fill = {"aspirated_nl": 0, "volume_nl": fill_nl, "concentration_ug_per_ml": conc}
        self.ok("refill", fill)
        self.ok("prime", {"contents": "drug"})
        self.ok("program", dict({"daily_dose_ng": dose_ng, "origin": "spinal"}, **program))

    def advance(self, t):
        self.t = t
        self.r.advance(t)

    def dose(self):
        return self.r.ctrl.daily_dose_ng()


def s_steady(b):
    """Program 100 ug/day, a +20 % change on day 3, run to day 5."""
    b.setup()
    b.advance(3 * DAY)
    b.ok("set_daily_dose", {"daily_dose_ng": 120_000})
    b.advance(5 * DAY)


def s_titration(b):
    """up-cap configured to 20 % (``up_spinal_pct``); a titration at that limit."""
    b.setup()
    b.advance(2 * DAY)
    b.ok("titrate", {"target_daily_dose_ng": 180_000, "step_pct": 20, "every_ms": DAY})
    b.advance(6 * DAY)
    assert b.dose() == 180_000


def s_taper(b):
    """A reduction refused with DOWN_CAP, then the taper plan (80, 64, 60 ug/day)."""
    b.setup()
    b.advance(DAY)
    res = b.confirm("set_daily_dose", {"daily_dose_ng": 60_000})
    assert res["reason"] == "DOWN_CAP", res
    b.advance(2 * DAY)
    b.ok("taper", {"target_daily_dose_ng": 60_000, "step_pct": 20, "every_ms": DAY})
    b.advance(5 * DAY)
    assert b.dose() == 60_000


def s_bolus(b):
    """A 50 ug clinician bolus over 10 min on day 3."""
    b.setup()
    b.advance(3 * DAY)
    b.ok("bolus", {"dose_ng": 50_000, "duration_ms": 10 * MIN})
    b.advance(4 * DAY)


def s_cap_1h(b):
    """A 105 ug port injection fills the 1 h window: basal is held (CAP_HOLD)."""
    b.setup()
    b.advance(3 * DAY + 1000 * SEC)
    b.ok("port_injection", {"dose_ng": 105_000})
    b.advance(4 * DAY)


def s_cap_24h(b):
    """A prescribed 24 h cap of 150 ug and a 60 ug injection: the 24 h window binds."""
    b.setup(cap_24h_ng=150_000)
    b.advance(3 * DAY)
    b.ok("port_injection", {"dose_ng": 60_000})
    b.advance(5 * DAY)


def s_patient(b):
    """Patient boluses (20 ug, 3 h lockout): one given, one refused in lockout, one given."""
    b.setup(patient_bolus_ng=20_000, patient_lockout_ms=3 * HOUR, patient_max_per_24h=3)
    b.advance(3 * DAY)
    assert b.send("patient_bolus", role="patient")["ok"]
    assert b.send("patient_bolus", t=3 * DAY + HOUR, role="patient")["reason"] == "LOCKOUT"
    assert b.send("patient_bolus", t=3 * DAY + 4 * HOUR, role="patient")["ok"]
    b.advance(4 * DAY)


def s_refill(b):
    """Full refill from 500 to 2000 ug/mL on day 3; the interface reaches the tip."""
    b.setup()
    b.advance(3 * DAY)
    b.ok(
        "refill",
        {"aspirated_nl": 19_400_000, "volume_nl": 20 * ML, "concentration_ug_per_ml": 2000},
    )
    b.advance(7 * DAY)


def s_stop_resume(b):
    """Planned stop on day 3, resumed 6 h later: the restart is capped at 75 %."""
    b.setup()
    b.advance(3 * DAY)
    b.ok("stop", {"reason": "procedure"})
    b.ok("resume", {"daily_dose_ng": 0}, t=3 * DAY + 6 * HOUR)
    assert b.dose() == 75_000
    b.advance(5 * DAY)


def s_estop(b):
    """Emergency stop on day 3, resumed 6 h later at 75 %."""
    b.setup()
    b.advance(3 * DAY)
    assert b.send("emergency_stop")["ok"]
    b.advance(3 * DAY + 6 * HOUR)
    b.ok("resume", {"daily_dose_ng": 0})
    b.advance(4 * DAY)


def s_power(b):
    """Power cut on day 3; boot 2 h later with an outage upper bound of 5 h: 75 %."""
    b.setup()
    b.advance(3 * DAY)
    b.r.power_cut(3 * DAY + 1000)
    b.r.power_on(3 * DAY + 1000 + 2 * HOUR, 5 * HOUR)
    assert b.dose() == 75_000
    b.advance(5 * DAY)


def _stall_on_day_3(b, hours):
    b.setup()
    b.advance(3 * DAY)
    b.board.outcome = "stall"
    b.advance(3 * DAY + hours * HOUR)
    b.board.outcome = "ok"
    b.advance(4 * DAY)


def s_stall(b):
    """The motor stalls for 2 h on day 3, then works again."""
    _stall_on_day_3(b, 2)


def s_long_stall(b):
    """The motor stalls for 5 h on day 3: delivery restarts at 75 % (SR-11)."""
    _stall_on_day_3(b, 5)
    assert b.dose() == 75_000


def s_reservoir(b):
    """5 mL at 2000 ug/mL, 1 mg/day: LOW_RESERVOIR, RESERVOIR_EMPTY_SOON, then empty."""
    b.setup(1_000_000, conc=2000, fill_nl=5 * ML)
    b.advance(14 * DAY)


def s_start(b):
    """First program after screening (50 ug, effect 6 h: at most 2x), +20 % on day 2."""
    b.ok("refill", {"aspirated_nl": 0, "volume_nl": 20 * ML, "concentration_ug_per_ml": 500})
    b.ok("prime", {"contents": "drug"})
    b.ok(
        "program",
        {
            "daily_dose_ng": D100,
            "origin": "spinal",
            "screening_dose_ng": 50_000,
            "screening_effect_ms": 6 * HOUR,
        },
    )
    b.advance(2 * DAY)
    b.ok("set_daily_dose", {"daily_dose_ng": 120_000})
    b.advance(3 * DAY)


SCENARIOS = {
    "steady": (s_steady, None),
    "titration": (s_titration, {"up_spinal_pct": 20}),
    "taper": (s_taper, None),
    "bolus": (s_bolus, None),
    "cap_1h": (s_cap_1h, None),
    "cap_24h": (s_cap_24h, None),
    "patient": (s_patient, None),
    "refill": (s_refill, None),
    "stop_resume": (s_stop_resume, None),
    "estop": (s_estop, None),
    "power": (s_power, None),
    "stall": (s_stall, None),
    "long_stall": (s_long_stall, None),
    "reservoir": (s_reservoir, None),
    "start": (s_start, None),
}


@cache
def _lines(name):
    fn, config = SCENARIOS[name]
    b = Recorder(config)
    fn(b)
    return tuple(b.lines)


def trace(name):
    """Fresh parsed records of a scenario's genuine trace (recorded once)."""
    return [json.loads(line) for line in _lines(name)]


def violations(records):
    """Feed the records to a fresh model through ``check_trace`` (the trace's own
    config record sets the model's configuration)."""
    return check_trace([json.dumps(r, sort_keys=True) for r in records])


def rules(v):
    """The rules a violation names: "SR-16/17/27" -> {"SR-16", "SR-17", "SR-27"}."""
    return {p if p.startswith("SR-") else "SR-" + p for p in v.rule.split("/")}


def assert_flags(records, rule, text=None):
    """The first violation the model reports names ``rule`` (and holds ``text``)."""
    found = violations(records)
    assert found, "the model accepted a faulty trace"
    assert rule in rules(found[0]), [str(v) for v in found[:5]]
    if text is not None:
        assert text in str(found[0]), str(found[0])
    return found


def find(records, pred, start=0):
    """Index of the first record at or after ``start`` matching ``pred``."""
    return next(i for i in range(start, len(records)) if pred(records[i]))


def is_alarm(code, ev="raise"):
    return lambda r: r["k"] == "alarm" and r["code"] == code and r["ev"] == ev


def stroke(t, n, ng, src="basal", nl=2000, res="ok"):
    """A stroke intent and its outcome, as the runner writes them."""
    return [
        {"k": "stroke", "t": t, "n": n, "src": src, "nl": nl, "ng_hi": ng, "ng_lo": ng},
        {"k": "outcome", "t": t, "n": n, "res": res},
    ]


def basal(t, ng_day, state="RUNNING"):
    return {"k": "basal", "t": t, "ng_day": ng_day, "state": state}


def insert(records, i, new):
    """``records`` with ``new`` inserted before index ``i``."""
    return records[:i] + new + records[i:]


# ---------------------------------------------------------------------- correct traces
@pytest.mark.sr("SR-4", "SR-5", "SR-8", "SR-9", "SR-10", "SR-11", "SR-12", "SR-19", "SR-21")
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_model_accepts_genuine_traces(name):
    """A correct controller's trace passes: the model raises no false alarm on any
    scenario (and each scenario did what it says, so the faults below are real)."""
    records = trace(name)
    assert records[0]["k"] == "config"
    assert [str(v) for v in violations(records)] == []
    # the same, record by record into a Model given the scenario's overrides
    m = Model(SCENARIOS[name][1] or {})
    for rec in records:
        m.feed(rec)
    assert [str(v) for v in m.finish()] == []
    assert m.counts["strokes"] == sum(r["k"] == "stroke" for r in records)
    codes = {r["code"] for r in records if r["k"] == "alarm" and r["ev"] == "raise"}
    expected = {
        "cap_1h": {"CAP_HOLD"},
        "cap_24h": {"CAP_HOLD"},
        "stop_resume": {"PUMP_STOPPED"},
        "estop": {"WITHDRAWAL_RISK"},
        "power": {"RESTART_REDUCED"},
        "stall": {"MOTOR_STALL"},
        "long_stall": {"MOTOR_STALL", "RESTART_REDUCED"},
        "reservoir": {"LOW_RESERVOIR", "RESERVOIR_EMPTY_SOON", "RESERVOIR_EMPTY"},
    }.get(name, set())
    assert expected <= codes, codes


@pytest.mark.sr("SR-14")
def test_model_accepts_a_simulator_trace(tmp_path, capsys):
    """The simulator's spinal titration example (screening start, a set dose, a
    titration plan, a bolus, a concentration change) writes a trace the model
    accepts, through ``check_trace`` and through the command line."""
    path = tmp_path / "trace.jsonl"
    assert cli.main(["run", str(EXAMPLES / "spinal_titration.toml"), "--out", str(tmp_path),
                     "--no-report", "--quiet"]) == 0
    lines = path.read_text().splitlines()
    assert [str(v) for v in check_trace(lines)] == []
    assert mdl.main([str(path)]) == 0
    assert capsys.readouterr().out == "OK %d records %s\n" % (len(lines), path)


def test_model_adopts_the_trace_config_and_refuses_another():
    """The model checks a trace against the configuration it ran with (its config
    record); explicit overrides must agree with it, a different device is refused."""
    lines = _lines("titration")
    assert check_trace(lines, {"up_spinal_pct": 20}) == []
    with pytest.raises(ValueError, match="config"):
        check_trace(lines, {})


@pytest.mark.parametrize(
    "bad,text",
    [
        ("{not json", "line 2"),
        ('{"k": "stroke"}', "integer t"),
        ('{"k": "nope", "t": 1}', "not a trace record"),
        ("[1, 2]", "not a trace record"),
        ('{"k": "config", "t": 1, "cfg": {}}', "first"),
    ],
)
def test_check_trace_rejects_malformed_lines(bad, text):
    """A malformed line is a ValueError naming the line, never a pass."""
    lines = list(_lines("steady")[:1]) + [bad] + list(_lines("steady")[1:5])
    with pytest.raises(ValueError, match=text):
        check_trace(lines)
    with pytest.raises(ValueError, match="config record"):
        check_trace(_lines("steady")[1:])


def test_command_line_reports_violations_and_exit_status(tmp_path, capsys):
    """``python -m host_tools.testkit.model``: OK and status 0 for a correct trace;
    each violation and status 1 for a faulty one; status 2 for a malformed one."""
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(_lines("steady")) + "\n")
    records = trace("steady")
    i = find(records, lambda r: r["k"] == "stroke" and r["t"] > 4 * DAY)
    records[i]["ng_hi"] -= 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"cfg":{},"k":"config","t":0}\n{oops\n')
    assert mdl.main([str(good)]) == 0
    assert capsys.readouterr().out.startswith("OK %d records" % len(_lines("steady")))
    assert mdl.main([str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "%s: SR-4: stroke %d counted" % (bad, records[i]["n"]) in out
    assert mdl.main([str(broken)]) == 2
    assert "line 2" in capsys.readouterr().err
    # the module runs as a program
    proc = subprocess.run(
        [sys.executable, "-m", "host_tools.testkit.model", str(good)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("OK "), proc


# ---------------------------------------------------------------------- faulty traces
@pytest.mark.sr("SR-5", "SR-7")
def test_model_flags_sr5_stroke_issued_while_1h_window_at_cap():
    """SR-5: no stroke is issued that would make any window exceed its cap. Fault: the
    basal stroke the controller withheld (CAP_HOLD) with the 1 h window full after a
    105 ug injection is issued anyway."""
    records = trace("cap_1h")
    i = find(records, is_alarm("CAP_HOLD"))
    t = records[i]["t"]
    assert_flags(insert(records, i, stroke(t, 9001, 1000)), "SR-5", "1 h window")


@pytest.mark.sr("SR-5", "SR-7")
def test_model_flags_sr5_stroke_issued_while_24h_window_at_cap():
    """SR-5 for the 24 h window (prescribed cap 150 ug): the stroke held by CAP_HOLD
    after a 60 ug injection is issued anyway."""
    records = trace("cap_24h")
    i = find(records, is_alarm("CAP_HOLD"))
    t = records[i]["t"]
    assert_flags(insert(records, i, stroke(t, 9001, 1000)), "SR-5", "24 h window")


@pytest.mark.sr("SR-5")
def test_model_flags_sr5_bolus_larger_than_the_1h_cap():
    """SR-5: a clinician bolus delivers more strokes than it was accepted for (a
    stroke-count bug): 60 extra bolus strokes, at the maximum rate after the last
    genuine one, push the 1 h window over its 105 ug cap."""
    records = trace("bolus")
    last = max(i for i, r in enumerate(records) if r["k"] == "stroke" and r["src"] == "bolus")
    t = records[last]["t"]
    gap = 120  # ms: 2 uL at the maximum rate of 1 mL/min
    extra = [x for k in range(1, 61) for x in stroke(t + k * gap, 9000 + k, 1000, "bolus")]
    assert records[last + 2]["t"] > t + 60 * gap
    assert_flags(insert(records, last + 2, extra), "SR-5", "1 h window")


@pytest.mark.sr("SR-4", "SR-21")
def test_model_flags_sr4_stroke_counted_at_the_lower_concentration():
    """SR-4/SR-21: while the 500/2000 ug/mL interface is within the uncertain band at
    the tip, each stroke counts at the higher concentration (4 ug). Fault: a band
    stroke is counted at the lower one (its ng_lo, 1 ug)."""
    records = trace("refill")
    i = find(records, lambda r: r["k"] == "stroke" and r["ng_hi"] != r["ng_lo"])
    assert (records[i]["ng_hi"], records[i]["ng_lo"]) == (4000, 1000)
    records[i]["ng_hi"] = records[i]["ng_lo"]
    assert_flags(records, "SR-4", "counted 1000 ng, model says 4000")


@pytest.mark.sr("SR-4")
def test_model_flags_sr4_stroke_mass_under_reported_by_one_ng():
    """SR-4: counted mass is the upper bound of one stroke (2 uL x 500 ug/mL = 1000
    ng). Fault: one stroke's ng_hi is one ng short."""
    records = trace("steady")
    i = find(records, lambda r: r["k"] == "stroke" and r["t"] > 4 * DAY)
    records[i]["ng_hi"] -= 1
    assert_flags(records, "SR-4")


@pytest.mark.sr("SR-8", "SR-13")
def test_model_flags_sr8_titration_step_over_the_up_cap():
    """SR-8: a new dose may not exceed (1 + up) x the lowest dose in 24 h; here up is
    configured to 20 % (config record ``up_spinal_pct``). The genuine plan steps
    100 -> 120 -> 144 sit exactly at the cap; fault: the 144 ug step is 144.1."""
    records = trace("titration")
    i = find(records, lambda r: r["k"] == "basal" and r["ng_day"] == 144_000)
    records[i]["ng_day"] = 144_100
    assert_flags(records, "SR-8", "over +20% of 120000")


@pytest.mark.sr("SR-8")
def test_model_flags_sr8_basal_raised_without_a_command():
    """SR-8: the basal dose jumps from 120 to 160 ug/day (+33 %) with no command
    (a corrupted program)."""
    records = trace("steady")
    i = find(records, lambda r: r["k"] == "stroke" and r["t"] > 4 * DAY + HOUR)
    assert_flags(insert(records, i, [basal(records[i - 1]["t"], 160_000)]), "SR-8")


@pytest.mark.sr("SR-9", "SR-13")
def test_model_flags_sr9_taper_step_below_the_down_cap():
    """SR-9: a new dose may not fall below (1 - 20 %) x the highest settled dose in
    24 h. The genuine taper steps 80 -> 64 sit exactly at the cap; fault: 63.9."""
    records = trace("taper")
    i = find(records, lambda r: r["k"] == "basal" and r["ng_day"] == 64_000)
    records[i]["ng_day"] = 63_900
    assert_flags(records, "SR-9", "under -20% of 80000")


@pytest.mark.sr("SR-9", "SR-14")
def test_model_flags_sr9_refused_reduction_applied_anyway():
    """SR-9/SR-14: the reduction 100 -> 60 ug/day was refused with DOWN_CAP. Fault:
    the result says ok and the new dose takes effect."""
    records = trace("taper")
    i = find(records, lambda r: r["k"] == "result" and r.get("reason") == "DOWN_CAP")
    t = records[i]["t"]
    records[i] = {"k": "result", "t": t, "ok": 1, "reason": "", "hash": 1}
    assert_flags(insert(records, i + 1, [basal(t, 60_000)]), "SR-9", "under -20% of 100000")


@pytest.mark.sr("SR-10")
def test_model_flags_sr10_first_program_over_the_start_dose():
    """SR-10: a first program may not exceed 2x the screening dose, or 1x when the
    effect lasted over 8 h (US rule). Fault: with an effect of 9 h the controller
    still accepts 100 ug/day for a 50 ug screening dose."""
    records = trace("start")
    i = find(records, lambda r: r["k"] == "cmd" and r["cmd"]["args"].get("command") == "program")
    records[i]["cmd"]["args"]["args"]["screening_effect_ms"] = 9 * HOUR
    assert_flags(records, "SR-10", "first program over the start dose")


@pytest.mark.sr("SR-10")
def test_model_flags_sr10_increase_in_the_first_24h():
    """SR-10: the basal dose may not increase during [t0, t0 + 24 h) of a first
    program. Fault: +10 % at 12 h (within the SR-8 cap, so only SR-10 catches it)."""
    records = trace("start")
    i = find(records, lambda r: r["k"] == "stroke" and r["t"] > 12 * HOUR)
    assert_flags(
        insert(records, i, [basal(records[i - 1]["t"], 110_000)]), "SR-10", "no-increase window"
    )


@pytest.mark.sr("SR-11", "SR-17")
def test_model_flags_sr11_full_dose_restart_after_6h_stop():
    """SR-11: the first basal after an interruption longer than 4 h (and under 24 h)
    is at most 75 % of the last settled dose. Fault: resume after a 6 h stop at the
    full 100 ug/day."""
    records = trace("stop_resume")
    i = find(records, lambda r: r["k"] == "basal" and r["ng_day"] == 75_000)
    records[i]["ng_day"] = D100
    assert_flags(records, "SR-11", "75% of 100000")


@pytest.mark.sr("SR-11", "SR-23")
def test_model_flags_sr11_full_dose_after_a_5h_power_outage():
    """SR-11/SR-23: after a reset RUNNING resumes by itself, capped by the outage's
    upper bound (5 h: 75 %). Fault: the controller boots at the full dose (no
    reduced basal record after power_on)."""
    records = trace("power")
    i = find(records, lambda r: r["k"] == "basal" and r["ng_day"] == 75_000)
    assert records[i - 2]["k"] == "power_on"
    del records[i]
    assert_flags(records, "SR-11", "power outage")


@pytest.mark.sr("SR-11", "SR-23")
def test_model_flags_sr11_unknown_outage_restarts_at_75_percent():
    """SR-11/SR-23: an outage of unknown length (RTC invalid) counts as long, 50 %.
    Fault: the boot record says the upper bound is unknown but the controller
    restarts at 75 %."""
    records = trace("power")
    i = find(records, lambda r: r["k"] == "power_on")
    records[i]["upper_ms"] = None
    assert_flags(records, "SR-11", "50% of 100000")


@pytest.mark.sr("SR-11", "SR-4")
def test_model_flags_sr11_full_dose_after_a_5h_motor_stall():
    """SR-11: a stall is an interruption; the first basal after 5 h without drug is
    at most 75 % of the last settled dose. Fault: the controller goes on at the full
    dose when the motor works again."""
    records = trace("long_stall")
    i = find(records, lambda r: r["k"] == "basal" and r["ng_day"] == 75_000)
    del records[i]
    assert_flags(records, "SR-11", "motor fault")


@pytest.mark.sr("SR-11")
def test_model_flags_sr11_increase_within_24h_of_a_capped_restart():
    """SR-11: no increase until 24 h after a capped restart. Fault: 12 h after the
    75 % resume the dose goes back up to 80 ug/day (within SR-8 and SR-9)."""
    records = trace("stop_resume")
    r = find(records, lambda r: r["k"] == "basal" and r["ng_day"] == 75_000)
    t_resume = records[r]["t"]
    i = find(records, lambda r: r["k"] == "stroke" and r["t"] > t_resume + 12 * HOUR)
    assert_flags(
        insert(records, i, [basal(records[i - 1]["t"], 80_000)]), "SR-11", "no-increase window"
    )


@pytest.mark.sr("SR-12", "SR-4")
def test_model_flags_sr12_catch_up_burst_after_a_stall():
    """SR-12: delivery missed while the motor stalled is never made up; owed volume
    stays within one stroke. Fault: two extra basal strokes right after the motor
    works again."""
    records = trace("stall")
    i = find(records, is_alarm("MOTOR_STALL", "clear"))
    t = records[i]["t"]
    burst = stroke(t, 9001, 1000) + stroke(t, 9002, 1000)
    assert_flags(insert(records, i + 1, burst), "SR-12", "programmed")


@pytest.mark.sr("SR-12", "SR-17")
def test_model_flags_sr12_catch_up_after_a_resume():
    """SR-12: the 6 h of basal missed during a planned stop is not made up. Fault: two
    strokes at the moment of resuming."""
    records = trace("stop_resume")
    i = find(records, lambda r: r["k"] == "basal" and r["ng_day"] == 75_000)
    t = records[i]["t"]
    burst = stroke(t, 9001, 1000) + stroke(t, 9002, 1000)
    assert_flags(insert(records, i + 1, burst), "SR-12")


@pytest.mark.sr("SR-21", "SR-12")
def test_model_flags_sr21_basal_strokes_missing_while_running():
    """SR-21 (tracking): while running with drug at the tip, delivered volume stays
    within one stroke of the programmed volume. Fault: three consecutive basal
    strokes on day 4 are never issued (delivery silently falls behind)."""
    records = trace("steady")
    i = find(records, lambda r: r["k"] == "stroke" and r["t"] > 4 * DAY)
    assert [r["k"] for r in records[i : i + 6]] == ["stroke", "outcome"] * 3
    del records[i : i + 6]
    assert_flags(records, "SR-21", "lags programmed")


@pytest.mark.sr("SR-7", "SR-21")
def test_model_flags_sr7_basal_withheld_without_cap_hold():
    """SR-7: a basal stroke withheld to respect a cap raises the HIGH alarm CAP_HOLD.
    Fault: the strokes are withheld for the hour with no CAP_HOLD raised. The model
    reports it as the tracking rule (SR-21): without the alarm, basal may not lag."""
    records = trace("cap_1h")
    del records[find(records, is_alarm("CAP_HOLD"))]
    assert_flags(records, "SR-21", "lags programmed")


@pytest.mark.sr("SR-19", "SR-21")
def test_model_flags_sr19_basal_stopped_on_a_computed_empty():
    """SR-19: the controller never stops basal on a computed number alone while drug
    may remain (R_o > 0, switch not tripped). Fault: every stroke after
    RESERVOIR_EMPTY_SOON (R_p <= 0) is dropped. The model reports it as the
    tracking rule (SR-21): delivery lags the programme."""
    records = trace("reservoir")
    i = find(records, is_alarm("RESERVOIR_EMPTY_SOON"))
    kept = records[: i + 1] + [r for r in records[i + 1 :] if r["k"] not in ("stroke", "outcome")]
    assert_flags(kept, "SR-21", "lags programmed")


@pytest.mark.sr("SR-19")
@pytest.mark.parametrize("code", ["LOW_RESERVOIR", "RESERVOIR_EMPTY_SOON"])
def test_model_flags_sr19_missing_reservoir_alarm(code):
    """SR-19: LOW_RESERVOIR (MEDIUM) when R_p <= 4 mL, RESERVOIR_EMPTY_SOON (HIGH)
    when R_p <= 0. Fault: the alarm is never raised."""
    records = trace("reservoir")
    del records[find(records, is_alarm(code))]
    assert_flags(records, "SR-19", "no " + code)


@pytest.mark.sr("SR-19")
def test_model_flags_sr19_low_reservoir_alarm_cleared_too_early():
    """SR-19: LOW_RESERVOIR stays active while R_p <= 4 mL. Fault: the controller
    clears it a day later without a refill."""
    records = trace("reservoir")
    i = find(records, is_alarm("LOW_RESERVOIR"))
    j = find(records, lambda r: r["k"] == "stroke" and r["t"] > records[i]["t"] + DAY)
    clear = dict(records[i], ev="clear", t=records[j - 1]["t"])
    assert_flags(insert(records, j, [clear]), "SR-19", "no LOW_RESERVOIR")


@pytest.mark.sr("SR-17")
def test_model_flags_sr17_stroke_while_stopped():
    """SR-17: no motor motion while stopped. Fault: a basal stroke 1 h into the
    planned stop."""
    records = trace("stop_resume")
    i = find(records, lambda r: r["k"] == "basal" and r["state"] == "STOPPED")
    j = find(records, lambda r: r["t"] >= records[i]["t"] + HOUR, i)
    t = records[j - 1]["t"] + 1
    assert_flags(insert(records, j, stroke(t, 9001, 1000)), "SR-17", "state STOPPED")


@pytest.mark.sr("SR-16")
def test_model_flags_sr16_stroke_after_emergency_stop():
    """SR-16: an emergency stop stops the pump (EMERGENCY_STOPPED). Fault: a bolus
    stroke 10 min after it."""
    records = trace("estop")
    i = find(records, lambda r: r["k"] == "basal" and r["state"] == "EMERGENCY_STOPPED")
    t = records[i]["t"] + 10 * MIN
    assert_flags(
        insert(records, i + 1, stroke(t, 9001, 1000, "bolus")), "SR-16", "EMERGENCY_STOPPED"
    )


@pytest.mark.sr("SR-26")
def test_model_flags_sr26_motor_moved_without_an_intent_record():
    """SR-26 write-ahead: a stroke's intent is durable before the motor moves. Fault:
    an outcome arrives for a stroke whose intent record was never written."""
    records = trace("steady")
    i = find(records, lambda r: r["k"] == "stroke" and r["t"] > 4 * DAY)
    del records[i]
    assert_flags(records, "SR-26", "without its intent")


@pytest.mark.sr("SR-14", "SR-29")
def test_model_flags_sr14_refusal_without_a_reason_code():
    """SR-14: a refused command carries a reason code. Fault: the patient bolus
    refused in lockout comes back without one."""
    records = trace("patient")
    i = find(records, lambda r: r["k"] == "result" and r.get("reason") == "LOCKOUT")
    records[i]["reason"] = ""
    assert_flags(records, "SR-14", "without a reason")


@pytest.mark.sr("SR-23")
def test_model_flags_sr23_stroke_time_going_back():
    """SR-23: the therapy clock never goes backwards. Fault: a stroke stamped 1 ms
    before the record that preceded it."""
    records = trace("steady")
    i = find(records, lambda r: r["k"] == "stroke" and r["t"] > 4 * DAY)
    t = records[i - 1]["t"] - 1
    records[i]["t"] = records[i + 1]["t"] = t
    assert_flags(records, "SR-23", "went back")
