"""The simulation engine (sim/engine.py) and the pump model (sim/pump.py): the
summary.json contract, truth computed independently from the trace, the pump's
random error, faults, power cuts through the durable store, and the bridge
examples (caps hold, the dose at the tip stays smooth)."""

import json
import random
from pathlib import Path

import pytest
from itb import fluidpath
from itb import runner as rn

from sim import engine
from sim import scenario as sc
from sim.pump import Pump

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
H = 3_600_000
D = 24 * H

BASE = """
name = "t"
duration_days = {days}
seed = {seed}
[pump]
stroke_error_pct = {err}
{pump}
[drug]
concentration_ug_per_ml = {conc}
fill_volume_ml = {fill}
[prescription]
daily_dose_ug = {dose}
{rx}
"""


def scenario(events="", days=3, seed=0, err=0, conc=2000, fill=20, dose=400, pump="", rx=""):
    text = BASE.format(days=days, seed=seed, err=err, conc=conc, fill=fill, dose=dose, pump=pump,
                       rx=rx) + events
    return sc.loads(text)


def run(s, **kw):
    lines = []
    sim = engine.Simulation(s, trace=lines.append, **kw)
    res = sim.run()
    return sim, res, lines


def records(lines, kind):
    return [json.loads(x) for x in lines if f'"k":"{kind}"' in x]


def ok_strokes(lines):
    """Stroke intents whose outcome was ok, in order (from the trace alone)."""
    outcome = {r["n"]: r["res"] for r in records(lines, "outcome")}
    return [r for r in records(lines, "stroke") if outcome.get(r["n"]) == "ok"]


def brute_max(times, masses, width):
    """Largest mass in any half-open window [s, s + width), s at every delivery."""
    return max((sum(m for t, m in zip(times, masses, strict=True) if s <= t < s + width)
                for s in times), default=0.0)


def test_summary_contract():
    s = sc.load(EXAMPLES / "spinal_titration.toml")
    _sim, res, _lines = run(s)
    out = json.loads(json.dumps(res.summary))  # JSON-serialisable as written
    assert out["scenario"] == s.name and out["duration_days"] == 30
    assert set(out["totals"]) == {"delivered_ug", "delivered_ml", "strokes"}
    assert isinstance(out["totals"]["strokes"], int)
    assert [d["day"] for d in out["daily"]] == list(range(30))
    for d in out["daily"]:
        assert {"day", "programmed_daily_dose_ug", "delivered_ug", "reservoir_ml"} <= set(d)
    assert sum(d["delivered_ug"] for d in out["daily"]) == pytest.approx(
        out["totals"]["delivered_ug"])
    for a in out["alarms"]:
        assert isinstance(a["t_s"], int) and a["priority"] in ("high", "medium", "low")
    commands = [e for e in s.events if e.is_command]
    assert len(out["commands"]) == len(commands)
    for c, e in zip(out["commands"], commands, strict=True):
        assert c["command"] == e.name and c["t_s"] == e.at_ms // 1000
        assert isinstance(c["accepted"], bool)
        assert (c["reason"] is None) == c["accepted"]
    assert out["max_delivered_ug_any_24h"] >= out["max_delivered_ug_any_1h"] > 0


def test_truth_recomputed_from_the_trace():
    """Without stroke error the mass at the tip is the strokes' nominal mass: the
    totals, days and worst half-open windows recomputed by brute force from the
    trace's ok strokes equal the summary."""
    s = scenario('[[events]]\nat = "1d 6h"\nbolus = { dose_ug = 40, duration = "10min" }\n')
    _sim, res, lines = run(s)
    strokes = ok_strokes(lines)
    times = [r["t"] for r in strokes]
    masses = [r["ng_hi"] / 1000 for r in strokes]  # uniform fluid: hi == nominal
    assert all(r["ng_hi"] == r["ng_lo"] for r in strokes)
    summ = res.summary
    assert summ["totals"]["delivered_ug"] == pytest.approx(sum(masses))
    assert summ["totals"]["strokes"] == len(records(lines, "stroke"))
    for d in range(3):
        day = sum(m for t, m in zip(times, masses, strict=True) if d * D <= t < (d + 1) * D)
        assert summ["daily"][d]["delivered_ug"] == pytest.approx(day)
    assert summ["max_delivered_ug_any_24h"] == pytest.approx(brute_max(times, masses, D))
    assert summ["max_delivered_ug_any_1h"] == pytest.approx(brute_max(times, masses, H))
    rows = res.rows
    assert [r["t_h"] for r in rows] == list(range(73))
    assert sum(r["delivered_ug"] for r in rows) == pytest.approx(sum(masses))


def test_max_window_half_open_edges():
    # two deliveries exactly one window apart never share a window
    assert engine.max_window([0, D], [1.0, 1.0], D) == 1.0
    assert engine.max_window([0, D - 1], [1.0, 1.0], D) == 2.0
    assert engine.max_window([], [], D) == 0.0


def test_same_seed_same_run_other_seed_other_run():
    s = scenario(err=3.2, days=2)
    a, b, c = run(s)[1], run(s)[1], run(s.with_seed(1))[1]
    assert a.summary == b.summary and a.rows == b.rows
    # the controller's trace is the same (it sees nominal strokes); the truth is not
    assert a.summary["totals"]["delivered_ug"] != c.summary["totals"]["delivered_ug"]


def test_stroke_error_mean_is_nominal_and_bias_is_explicit():
    """The per-stroke error is symmetric (mean exactly nominal without a bias),
    has the configured spread and is clipped at 3 sd; a bias shifts the mean."""
    for bias in (0.0, 5.0):
        got = []
        pump = Pump(3.2, bias, 0, random.Random(1), 1e9, lambda t, m, v, got=got: got.append(v))
        pump.refill(10**12, 2000, 0, 0)
        vols = []
        for n in range(20_000):
            before = pump.reservoir_nl
            assert pump.stroke(n, 2000, n) == "ok"
            vols.append(before - pump.reservoir_nl)
        mean = sum(vols) / len(vols)
        sd = (sum((v - mean) ** 2 for v in vols) / len(vols)) ** 0.5
        nominal = 2000 * (1 + bias / 100)
        assert abs(mean - nominal) < 4 * sd / len(vols) ** 0.5
        assert sd == pytest.approx(0.032 * nominal, rel=0.05)
        assert max(abs(v - nominal) for v in vols) <= 3 * 0.032 * nominal + 1e-6
        # whole nL reach the patient, the rounding carried (no drift)
        assert sum(got) == pytest.approx(sum(vols), abs=1)


def test_missed_refill_true_empty_is_the_switch():
    """SR-19: LOW_RESERVOIR and RESERVOIR_EMPTY_SOON come from the pessimistic
    estimate, before the true empty; RESERVOIR_EMPTY when the switch trips at the
    stroke that took the last fluid; nothing is delivered after it and the
    withdrawal-risk index rises."""
    s = sc.load(EXAMPLES / "missed_refill.toml")
    sim, res, _lines = run(s)
    codes = {a["code"]: a["t_s"] for a in res.summary["alarms"]}
    empty_s = codes["RESERVOIR_EMPTY"]
    assert codes["LOW_RESERVOIR"] < codes["RESERVOIR_EMPTY_SOON"] < empty_s
    assert empty_s == sim.del_t[-1] // 1000  # the very stroke that emptied the syringe
    assert res.summary["totals"]["delivered_ml"] == pytest.approx(20.0, abs=0.003)
    rows = res.rows
    after = [r for r in rows if r["t_h"] * 3600 > empty_s + 3600]
    assert after and all(r["delivered_ug"] == 0 for r in after)
    assert max(r["withdrawal_risk"] for r in rows if r["t_h"] < 24 * 10) < 0.1
    assert rows[-1]["withdrawal_risk"] > 0.5


def test_power_cuts_recover_from_the_store():
    """SR-23/SR-11/SR-25: power cuts restart through the durable store; an outage
    of unknown length (invalid RTC) restarts at 50 % with RESTART_REDUCED; nothing
    is delivered while the power is off, and the trace replays byte for byte."""
    s = sc.load(EXAMPLES / "power_cuts_during_bolus.toml")
    sim, res, lines = run(s)
    assert sim.durable
    assert [r["upper_ms"] for r in records(lines, "power_on")] == [20 * 60_000, None]
    codes = [a["code"] for a in res.summary["alarms"]]
    assert "RESTART_REDUCED" in codes
    assert any(r["ng_day"] == 150_000 for r in records(lines, "basal"))
    cuts = [(e.at_ms, e.at_ms + e.args["duration"]) for e in s.events if e.name == "power_cut"]
    for a, b in cuts:
        assert not [t for t in sim.del_t if a <= t < b]
    assert sim.pump.offset_ms == 3 * H  # the unknown outage is not on the therapy clock
    assert rn.replay(lines) == lines
    assert [c["accepted"] for c in res.summary["commands"]] == [True, True, True]


def test_commands_while_off_and_refused_values():
    s = scenario('[[events]]\nat = "1d"\npower_cut = { duration = "2h" }\n'
                 '[[events]]\nat = "1d 1h"\npatient_bolus = true\n'
                 '[[events]]\nat = "1d 3h"\nset_daily_dose_ug = 0\n'
                 '[[events]]\nat = "1d 4h"\nbolus = { dose_ug = 5000, duration = "1h" }\n')
    _sim, res, _lines = run(s)
    got = [(c["command"], c["accepted"], c["reason"]) for c in res.summary["commands"]]
    assert got == [("patient_bolus", False, engine.POWERED_OFF),
                   ("set_daily_dose", False, "OUT_OF_RANGE"),
                   ("bolus", False, "HARD_LIMIT")]


@pytest.mark.parametrize("event, code, outcome", [
    ("motor_fault", "MOTOR_STALL", "stall"), ("occlusion", "OCCLUSION", "occlusion")])
def test_motor_fault_and_occlusion(event, code, outcome):
    s = scenario(f'[[events]]\nat = "1d"\n{event} = {{ duration = "6h" }}\n')
    sim, res, lines = run(s)
    assert code in [a["code"] for a in res.summary["alarms"]]
    # the stroke due at 1d itself ran before the event (wake-ups come first)
    assert not [t for t in sim.del_t if D < t < D + 6 * H]
    assert [t for t in sim.del_t if t >= D + 6 * H]  # delivery resumes
    # the alarm carries the time of the first failed stroke, not the end of the
    # hour the engine advanced through in one go
    first = min(r["t"] for r in records(lines, "outcome") if r["res"] == outcome)
    assert [a["t_s"] for a in res.summary["alarms"] if a["code"] == code][0] == first // 1000
    assert first % H


def test_refill_truth_complete_partial_and_entered_aspiration():
    """A complete refill empties the true reservoir (any remainder is aspirated);
    leaving aspirated_ml out enters what was really aspirated, so SR-20 finds no
    discrepancy; a partial refill keeps the remainder."""
    # refills just before midnight: the next day's strokes all come after them
    s = scenario('[[events]]\nat = "1d 23h 59min"\nrefill = { volume_ml = 15, '
                 'concentration_ug_per_ml = 2000 }\n'
                 '[[events]]\nat = "2d 23h 59min"\nrefill = { aspirated_ml = 1, volume_ml = 2, '
                 'concentration_ug_per_ml = 2000, partial = true }\n', err=3.2, days=4)
    sim, res, _lines = run(s)
    assert [c["accepted"] for c in res.summary["commands"]] == [True, True]
    assert "REFILL_DISCREPANCY" not in [a["code"] for a in res.summary["alarms"]]
    day2, day3 = res.summary["daily"][2], res.summary["daily"][3]
    # day 2: the complete refill's 15 mL, the day's strokes, then the partial refill
    assert day2["reservoir_ml"] == pytest.approx(15 - day2["delivered_ml"] - 1 + 2, abs=1e-6)
    assert day3["reservoir_ml"] == pytest.approx(day2["reservoir_ml"] - day3["delivered_ml"],
                                                 abs=1e-6)
    assert sim.pump.reservoir_conc == pytest.approx(2000)


def test_bridge_concentration_change_keeps_the_tip_dose_smooth():
    """SR-21: after a refill 500 -> 2000 ug/mL the old drug in the catheter is
    pushed out at the old volume rate, then the new rate: every day delivers the
    prescribed 400 ug at the tip (within the pump's random error) and no hour more
    than two hours' worth."""
    s = sc.load(EXAMPLES / "refill_concentration_change.toml")
    _sim, res, _lines = run(s)
    assert [c["accepted"] for c in res.summary["commands"]] == [True]
    for d in res.summary["daily"]:
        assert d["delivered_ug"] == pytest.approx(400, rel=0.03), d
    assert res.summary["max_delivered_ug_any_1h"] <= 2 * 400 / 24


@pytest.mark.parametrize("length_cm", [80, 90, 100])
def test_bridge_with_a_catheter_error_never_undercounts(length_cm, monkeypatch):
    """SR-4/SR-21 (caps hold with a 10 cm catheter error): with the true dead
    volume 10 cm off, every stroke's true mass at the tip is at most the mass the
    controller counted for it (its ng_hi, from the trace), so no cap can be
    exceeded by the truth. Without the interface band the 80 cm case under-counts:
    the check can fail."""
    def violations(band_pct):
        monkeypatch.setattr(fluidpath, "BAND_PCT", band_pct)
        s = sc.load(EXAMPLES / "refill_concentration_change_catheter_error.toml")
        s.events[0].args["actual_length_cm"] = float(length_cm)
        s.stroke_error_pct = 0.0
        sim, res, lines = run(s)
        counted = [r["ng_hi"] for r in ok_strokes(lines)]
        assert len(counted) == len(sim.del_ng)
        return res, sum(1 for c, m in zip(counted, sim.del_ng, strict=True) if m > c + 1e-9)

    res, bad = violations(20)
    assert bad == 0
    assert res.summary["max_delivered_ug_any_24h"] <= 600  # the prescription's 24 h cap
    if length_cm == 80:
        assert violations(0)[1] > 0


def test_rtc_jump_reopens_no_window():
    """SR-23: the wall clock jumping back 23 h moves neither the therapy clock nor
    the windows: delivery per day stays as prescribed."""
    s = scenario('[[events]]\nat = "1d 2h"\nrtc_jump = { by = "-23h" }\n', days=3)
    _sim, res, _lines = run(s)
    for d in res.summary["daily"]:
        assert d["delivered_ug"] == pytest.approx(400, rel=0.02)


def test_battery_end_stops_the_pump_for_good():
    s = scenario(pump="battery_life_days = 2", days=3)
    sim, res, _lines = run(s)
    assert sim.dead and not sim.powered
    # rated 2 days at 100 strokes/day; this pump makes 100 strokes/day
    last = sim.del_t[-1]
    assert 1.95 * D <= last <= 2 * D
    assert res.rows[-1]["state"] == "OFF"
    assert res.rows[-1]["battery_pct"] == 0


def test_catheter_error_resizes_the_true_path():
    p = Pump(0, 0, 374_000, random.Random(0), 1e9, lambda *a: None)
    p.refill(10**7, 500, 0, 0)
    p.prime("drug")
    p.set_dead_volume(400_000)
    assert sum(v for v, _c in p.path.segs) == 400_000 == p.path.dead_volume_nl
    p.set_dead_volume(100_000)
    assert sum(v for v, _c in p.path.segs) == 100_000


def test_port_injection_counts_in_the_delivered_figures():
    """Attack finding (SR-30): an access-port injection reaches the patient at the
    catheter: it is in the true mass delivered (totals, days, worst windows), not
    only in the patient model."""
    s = scenario('[[events]]\nat = "12h"\nport_injection_ug = 100\n', days=2)
    _sim, res, _lines = run(s)
    summ = res.summary
    assert summ["max_delivered_ug_any_1h"] >= 100 + 16  # the injection and an hour of basal
    assert summ["daily"][0]["delivered_ug"] == pytest.approx(500, abs=5)
    assert summ["totals"]["delivered_ug"] == pytest.approx(900, abs=5)


def test_a_cut_while_off_extends_the_outage():
    """Attack finding: a second power cut during an outage lasts to its own end
    (the outage is the union), and is listed among the simulator events."""
    s = scenario('[[events]]\nat = "1h"\npower_cut = { duration = "5h" }\n'
                 '[[events]]\nat = "3h"\npower_cut = { duration = "10h" }\n', days=1)
    sim, res, lines = run(s)
    assert [r["t"] for r in records(lines, "power_on")] == [13 * H]
    assert not [t for t in sim.del_t if H <= t < 13 * H]
    assert [e["event"] for e in res.summary["sim_events"]] == ["power_cut", "power_cut"]


def test_a_flat_battery_turns_a_stopped_pump_off():
    """Attack finding: the battery running out while the pump is stopped turns it
    off at once (next hourly sample), not at a stroke that never comes; a later
    resume meets a pump without power."""
    s = scenario('[[events]]\nat = "1h"\nstop = "procedure"\n'
                 '[[events]]\nat = "2d 12h"\nresume = true\n', pump="battery_life_days = 1",
                 days=3)
    sim, res, _lines = run(s)
    off = [r["t_h"] for r in res.rows if r["state"] == "OFF"]
    # half the budget is time: a stopped pump's battery lasts 2 days (an hour of
    # strokes first takes a little)
    assert off and 46 <= off[0] <= 49
    assert res.summary["commands"][1]["reason"] == engine.POWERED_OFF


def test_a_refused_established_program_leaves_the_patient_drug_naive():
    s = scenario(dose=3000)  # over the hard maximum daily dose: refused at set-up
    _sim, res, _lines = run(s)
    assert [r["accepted"] for r in res.setup] == [True, True, False]
    assert res.rows[0]["csf_ng_per_ml"] == 0


def test_a_zero_screening_dose_is_refused_at_set_up():
    """Attack finding: a zero screening dose with an effect would have passed as an
    established therapy (SR-10 off for a new patient); the controller refuses the
    program, the run records it and the patient stays drug-naive."""
    s = scenario(rx="screening_dose_ug = 0\nscreening_effect_h = 6", dose=800)
    _sim, res, _lines = run(s)
    assert [(r["command"], r["reason"]) for r in res.setup if not r["accepted"]] == [
        ("program", "BAD_ARGUMENT")]
    assert res.summary["totals"]["delivered_ug"] == 0
