"""Example tests, one or more per safety rule SR-1..SR-30 (SR-25 excepted: no
storage slots in the controller yet), through the runner with a fake board.

Reference numbers used throughout (computed by hand, not by the firmware):
at 500 ug/mL one 2 uL stroke holds 1 ug; 100 ug/day = 0.2 mL/day = 100 strokes a
day, one every 864 s; default caps for 100 ug/day: 24 h = 2 x 100 + 100 = 300 ug,
1 h = 100 bolus strokes + ceil(4.17 ug / 1 ug) = 5 basal strokes = 105 ug.
"""

import itertools
import json

import pytest
from helpers import DAY, HOUR, MIN, ML, SEC, Bench, setup
from itb import alarms as al

D100 = 100_000  # ng/day
IV = 864 * SEC  # stroke interval at 100 ug/day, 500 ug/mL


def _max_at_strokes(strokes, others, w):
    """Largest sum over (p - w, p] of all counted masses, for p at each stroke
    (strokes and others: time-ordered (t, mass)); each stroke counts the strokes
    issued before it and itself."""
    best = 0
    for i, (p, _m) in enumerate(strokes):
        s = sum(m for t, m in strokes[: i + 1] if t > p - w)
        s += sum(m for t, m in others if p - w < t <= p)
        best = max(best, s)
    return best


# ====================================================================== SR-1


@pytest.mark.sr("SR-1", "SR-14")
def test_sr1_dose_resolution_and_types_refused_by_controller():
    b = setup(D100)
    b.advance(DAY)

    def direct(value):  # straight to the controller (the trace cannot encode a float)
        cmd = {
            "name": "prepare",
            "id": b.fresh_id(),
            "role": "clinician",
            "args": {"command": "set_daily_dose", "args": {"daily_dose_ng": value}},
        }
        return lambda: b.ctrl.handle(cmd, DAY)

    b.assert_refused(
        "OUT_OF_RANGE", lambda: b.prepare("set_daily_dose", {"daily_dose_ng": 100_050})
    )
    b.assert_refused("BAD_ARGUMENT", direct(100_000.0))
    b.assert_refused("BAD_ARGUMENT", direct(True))
    b.assert_refused("BAD_ARGUMENT", direct("100000"))
    # 0.1 ug/day steps are accepted
    assert b.prepare("set_daily_dose", {"daily_dose_ng": 100_100})["ok"] == 1


@pytest.mark.sr("SR-1", "SR-14")
def test_sr1_float_argument_through_runner_is_refused_and_logged():
    b = setup(D100)
    b.advance(DAY)
    b.assert_refused(
        "BAD_ARGUMENT", lambda: b.prepare("set_daily_dose", {"daily_dose_ng": 100_000.0})
    )


@pytest.mark.sr("SR-1")
def test_sr1_audit_records_are_integers_and_short_ascii():
    b = setup(D100)
    b.advance(DAY)
    b.prepare("set_daily_dose", {"daily_dose_ng": 100_050})
    for rec in b.ctrl.store.records():
        for v in rec.values():
            assert v is None or type(v) is int or (type(v) is str and v.isascii()), rec


# ====================================================================== SR-2


@pytest.mark.sr("SR-2", "SR-14")
def test_sr2_max_daily_dose_is_a_hard_limit():
    b = Bench()
    b.confirm(
        "refill", {"aspirated_nl": 0, "volume_nl": 20 * ML, "concentration_ug_per_ml": 2000}, 0
    )
    b.confirm("prime", {"contents": "drug"}, 0)
    res = b.assert_refused(
        "HARD_LIMIT",
        lambda: b.prepare("program", {"daily_dose_ng": 2_000_100, "origin": "spinal"}),
        0,
    )
    assert res["allowed"] == 2_000_000
    # a prescription cap can not lift the hard limit either
    res = b.assert_refused(
        "HARD_LIMIT",
        lambda: b.prepare(
            "program", {"daily_dose_ng": 100_000, "origin": "spinal", "cap_24h_ng": 2_000_100}
        ),
        0,
    )
    assert res["allowed"] == 2_000_000


@pytest.mark.sr("SR-2", "SR-21")
@pytest.mark.parametrize("conc", [50, 750, 5000])
def test_sr2_only_library_concentrations_fill_the_pump(conc):
    b = Bench()
    b.assert_refused(
        "BAD_CONCENTRATION",
        lambda: b.prepare(
            "refill", {"aspirated_nl": 0, "volume_nl": 20 * ML, "concentration_ug_per_ml": conc}
        ),
        0,
    )


@pytest.mark.sr("SR-2")
def test_sr2_max_single_bolus():
    b = setup(D100)
    b.advance(HOUR)
    res = b.assert_refused(
        "HARD_LIMIT", lambda: b.prepare("bolus", {"dose_ng": 100_100, "duration_ms": HOUR})
    )
    assert res["allowed"] == 100_000


@pytest.mark.sr("SR-2")
def test_sr2_bolus_too_short_for_max_rate_offers_shortest_duration():
    b = setup(D100)
    b.advance(HOUR)
    # 10 ug = 10 strokes of 2 uL; 1 mL/min -> 120 ms a stroke -> 1200 ms
    res = b.assert_refused(
        "BOLUS_TOO_SHORT", lambda: b.prepare("bolus", {"dose_ng": 10_000, "duration_ms": 1199})
    )
    assert res["allowed"] == 1200
    assert b.prepare("bolus", {"dose_ng": 10_000, "duration_ms": 1200})["ok"] == 1


@pytest.mark.sr("SR-2")
def test_sr2_minimum_rate():
    b = setup(D100)
    b.advance(DAY)
    # 20 uL/day at 500 ug/mL = 10 ug/day: 9.9 ug/day is below the pump's minimum rate
    res = b.assert_refused(
        "HARD_LIMIT", lambda: b.prepare("set_daily_dose", {"daily_dose_ng": 9_900})
    )
    assert res["allowed"] == 10_000
    res = b.assert_refused("HARD_LIMIT", lambda: b.prepare("min_rate", {"rate_nl_per_day": 19_999}))
    assert res["allowed"] == 20_000
    assert b.prepare("min_rate", {"rate_nl_per_day": 20_000})["ok"] == 1


# ====================================================================== SR-3


@pytest.mark.sr("SR-3")
def test_sr3_program_reports_stroke_mass_and_default_caps_at_2000():
    b = Bench()
    b.confirm(
        "refill", {"aspirated_nl": 0, "volume_nl": 20 * ML, "concentration_ug_per_ml": 2000}, 0
    )
    b.confirm("prime", {"contents": "drug"}, 0)
    res = b.confirm("program", {"daily_dose_ng": D100, "origin": "spinal"}, 0)
    e = res["effect"]
    assert e["stroke_ng"] == 4000  # 2 uL x 2000 ug/mL = 4 ug
    assert e["strokes_per_day"] == 25  # 0.05 mL/day / 2 uL
    # 24 h: 2 x 100 + 100 = 300 ug; 1 h: ceil(100/4) = 25 + ceil(4.167/4) = 2 -> 27 x 4 ug
    assert (e["cap_24h_ng"], e["cap_1h_ng"]) == (300_000, 108_000)
    assert b.status()["caps_ng"] == [300_000, 108_000]


@pytest.mark.sr("SR-3")
def test_sr3_default_caps_recomputed_at_each_change():
    b = setup(D100)
    assert b.status()["caps_ng"] == [300_000, 105_000]
    b.advance(2 * DAY)
    assert b.confirm("set_daily_dose", {"daily_dose_ng": 130_000})["ok"]
    # 2 x 130 + 100 = 360 ug; 1 h: 100 + ceil(5.417) = 6 strokes -> 106 ug
    assert b.status()["caps_ng"] == [360_000, 106_000]


@pytest.mark.sr("SR-3")
def test_sr3_prescription_caps_and_stroke_must_fit():
    b = Bench()
    b.confirm(
        "refill", {"aspirated_nl": 0, "volume_nl": 20 * ML, "concentration_ug_per_ml": 2000}, 0
    )
    b.confirm("prime", {"contents": "drug"}, 0)
    b.assert_refused(
        "STROKE_TOO_LARGE",
        lambda: b.prepare(
            "program", {"daily_dose_ng": D100, "origin": "spinal", "cap_1h_ng": 3_900}
        ),
        0,
    )
    res = b.confirm(
        "program",
        {"daily_dose_ng": D100, "origin": "spinal", "cap_24h_ng": 250_000, "cap_1h_ng": 20_000},
        0,
    )
    assert res["ok"] and b.status()["caps_ng"] == [250_000, 20_000]


# ====================================================================== SR-4


@pytest.mark.sr("SR-4", "SR-28")
def test_sr4_stalled_strokes_are_counted_but_not_delivered():
    b = setup(D100)
    b.board.outcome = "stall"
    b.advance(3 * IV)
    assert len(b.strokes) == 3
    st = b.status()
    assert st["window_ng"] == [3000, 3000]  # every commanded stroke counts
    assert st["reservoir_nl"] == 20 * ML  # none left the reservoir
    assert b.active("MOTOR_STALL") and b.alarm("MOTOR_STALL")[1] == "high"


@pytest.mark.sr("SR-4", "SR-26")
def test_sr4_unknown_completion_counted_and_assumed_delivered():
    b = setup(D100)
    b.board.queue = ["unknown"]
    b.advance(IV)
    st = b.status()
    assert st["window_ng"] == [1000, 1000]
    assert st["reservoir_nl"] == 20 * ML - 2000
    assert b.alarm("STROKE_UNCONFIRMED") is not None


@pytest.mark.sr("SR-4", "SR-21")
def test_sr4_uncertain_tip_counts_the_higher_concentration():
    b = setup(D100)
    b.advance(HOUR)
    n0 = len(b.stroke_recs)
    assert b.confirm(
        "refill",
        {"aspirated_nl": 19_990_000, "volume_nl": 20 * ML, "concentration_ug_per_ml": 2000},
    )["ok"]
    b.advance(HOUR + 2 * DAY)
    recs = b.stroke_recs[n0:]
    # dead volume 374 uL, band 74.8 uL. Stroke k leaves 374 - 2k uL of old fluid at the
    # tip; uncertain once that is below 74.8 uL: k >= 150 counts 2 uL at 2000 = 4 ug
    assert [r["ng_hi"] for r in recs[:149]] == [1000] * 149
    assert recs[149]["ng_hi"] == 4000
    # the window counts the upper bound
    assert all(r["ng_hi"] >= r["ng_lo"] for r in recs)


# ====================================================================== SR-5


@pytest.mark.sr("SR-5", "SR-29", "SR-30")
def test_sr5_no_stroke_makes_any_window_exceed_its_cap():
    b = setup(D100, patient_bolus_ng=10_000, patient_lockout_ms=HOUR, patient_max_per_24h=6)
    injections = []
    t = 2000 * SEC
    b.advance(t)
    for k in range(6):
        b.send("patient_bolus", {}, t + k * HOUR, role="patient")
        if k == 3:
            ti = t + 3 * HOUR + 30 * MIN
            assert b.confirm("port_injection", {"dose_ng": 100_000}, ti)["ok"]
            injections.append((ti, 100_000))
    b.advance(2 * DAY)
    strokes = [(r["t"], r["ng_hi"]) for r in b.stroke_recs]
    assert _max_at_strokes(strokes, injections, HOUR) <= 105_000
    assert _max_at_strokes(strokes, injections, DAY) <= 300_000
    assert b.alarm("CAP_HOLD") is not None  # the caps were actually reached


# ====================================================================== SR-6


@pytest.mark.sr("SR-6", "SR-14", "SR-30")
def test_sr6_bolus_refused_with_largest_feasible_value():
    b = setup(D100)
    t = 1000 * SEC  # basal strokes at 864, 1728, 2592, 3456, 4320 s ...
    b.advance(t)
    assert b.confirm("port_injection", {"dose_ng": 50_000}, t)["ok"]
    # 1 h window ending at 4320 s holds 5 basal strokes + 50 ug injection + the bolus:
    # 5 + 50 + X <= 105 -> X <= 50 ug
    res = b.assert_refused(
        "CAP_EXCEEDED", lambda: b.prepare("bolus", {"dose_ng": 51_000, "duration_ms": MIN})
    )
    assert res["allowed"] == 50_000
    assert b.prepare("bolus", {"dose_ng": 50_000, "duration_ms": MIN})["ok"] == 1


@pytest.mark.sr("SR-6", "SR-14")
def test_sr6_basal_change_checked_against_future_windows():
    b = setup(D100, cap_24h_ng=120_000)
    b.advance(2 * DAY)
    # 130 ug/day reaches 130 ug in the window ending 24 h from now: over 120
    res = b.assert_refused(
        "CAP_EXCEEDED", lambda: b.prepare("set_daily_dose", {"daily_dose_ng": 130_000})
    )
    a = res["allowed"]
    assert 100_000 < a <= 120_000
    assert b.prepare("set_daily_dose", {"daily_dose_ng": a})["ok"] == 1
    assert b.prepare("set_daily_dose", {"daily_dose_ng": a + 100})["reason"] == "CAP_EXCEEDED"


@pytest.mark.sr("SR-6", "SR-14")
def test_sr6_a_flex_program_over_the_cap_is_refused_without_an_allowed_value():
    """A flex program (several steps) that would exceed the 24 h cap is refused
    whole: there is no single largest value to offer for a schedule."""
    b = setup(D100, cap_24h_ng=120_000)
    b.advance(2 * DAY)
    res = b.assert_refused("CAP_EXCEEDED", lambda: b.prepare("flex", {"steps": [
        [0, 100_000], [480, 150_000], [1200, 100_000]]}))
    assert "allowed" not in res
    assert b.prepare("flex", {"steps": [[0, 100_000], [480, 110_000], [1200, 100_000]]})["ok"]


# ====================================================================== SR-7 / SR-30


@pytest.mark.sr("SR-7", "SR-30", "SR-12", "SR-28")
def test_sr7_cap_hold_alarm_and_release_at_the_window_edge():
    b = setup(D100)
    t = 1000 * SEC
    b.advance(t)
    assert b.strokes == [(IV, "basal")]
    assert b.confirm("port_injection", {"dose_ng": 105_000}, t)["ok"]
    assert b.status()["window_ng"] == [106_000, 106_000]  # SR-30: mass enters the caps
    release = t + HOUR  # the injection leaves (p - 1 h, p] at exactly t + 1 h
    b.advance(release - 1)
    assert b.strokes == [(IV, "basal")]  # the stroke due at 1728 s is withheld
    a = b.alarm("CAP_HOLD")
    assert a[1] == "high" and a[2] == 1 and a[4] == 2 * IV
    assert (2 * IV + 5 * MIN, "CAP_HOLD", "repeat") in b.alarm_events
    b.advance(release)
    assert b.strokes[-1] == (release, "basal")
    assert not b.active("CAP_HOLD")
    # SR-12: only one stroke at release, then the normal interval (nothing made up)
    b.advance(release + IV - 1)
    assert len(b.strokes) == 2
    b.advance(release + IV)
    assert b.strokes[-1] == (release + IV, "basal")


@pytest.mark.sr("SR-5", "SR-7", "SR-30")
def test_sr5_24h_cap_holds_basal_when_the_window_is_exactly_full():
    """SR-5 with only the 24 h window binding: port injections bring the 24 h window
    to exactly its 140 ug cap at the next basal due time (one old stroke leaves then,
    one would enter; the 1 h window is empty); that stroke is withheld with
    CAP_HOLD, and no stroke ever makes any (p - 24 h, p] exceed the cap (recomputed
    here from the stroke records)."""
    b = setup(20_000)  # 20 strokes a day of 1 ug, one every 72 min; caps 140 / 101 ug
    b.advance(DAY)
    assert b.status()["caps_ng"] == [140_000, 101_000]
    t1 = DAY + MIN
    assert b.confirm("port_injection", {"dose_ng": 60_000}, t1)["ok"]
    b.advance(t1 + 2 * HOUR)
    n = len(b.strokes)
    while len(b.strokes) == n:  # wake-up by wake-up up to the next basal stroke
        b.advance(b.ctrl.next_wake())
    last = b.strokes[-1][0]
    assert last == b.t
    t2, due = last + MIN, last + 72 * MIN  # the 1 h window is empty at `due`
    b.advance(t2)
    # at `due` the stroke at due - 24 h leaves the window: the sum is then the cap
    inj = 140_000 - b.status()["window_ng"][0] + 1_000
    assert b.confirm("port_injection", {"dose_ng": inj}, t2)["ok"]
    b.advance(due)
    assert b.ctrl.window.sums(due) == [140_000, 0]
    assert b.strokes[-1][0] == last and b.active("CAP_HOLD")
    b.advance(due + 6 * HOUR)
    events = sorted([(r["t"], r["ng_hi"]) for r in b.stroke_recs] + [(t1, 60_000), (t2, inj)])
    for p, _m in events:
        if p not in (t1, t2):  # injections are recorded, never refused (SR-30)
            assert sum(m for q, m in events if p - DAY < q <= p) <= 140_000, p


@pytest.mark.sr("SR-6", "SR-29", "SR-7")
def test_sr6_patient_boluses_accepted_after_a_reduction_are_all_deliverable():
    """SR-6 with caps that change inside the projection: after a 20 % reduction the
    default 24 h cap shrinks a day later (it follows the highest dose in 24 h).
    Patient boluses accepted hourly after the reduction must all fit the caps in
    effect when their strokes come, so no basal or bolus stroke is ever withheld
    (no CAP_HOLD) in the next 4 days. (Attack finding: a projection that froze the
    caps of its first stroke accepted two boluses too many.)"""
    b = setup(1_000_000, conc=2000, patient_bolus_ng=100_000, patient_lockout_ms=0,
              patient_max_per_24h=48)
    b.advance(2 * DAY)
    assert b.confirm("set_daily_dose", {"daily_dose_ng": 800_000}, 2 * DAY)["ok"]
    accepted = 0
    for k in range(21):
        t = 2 * DAY + HOUR + k * 65 * MIN
        accepted += b.send("patient_bolus", {}, t, role="patient")["ok"]
        b.advance(t)
    assert 0 < accepted < 21  # some were refused (CAP_EXCEEDED), not clamped
    b.advance(6 * DAY)
    assert not b.alarm("CAP_HOLD"), b.alarm("CAP_HOLD")


# ====================================================================== SR-8


@pytest.mark.sr("SR-8", "SR-14")
@pytest.mark.parametrize(
    "origin,ceiling", [("spinal", 130_000), ("cerebral", 115_000), ("paediatric", 115_000)]
)
def test_sr8_up_cap_by_origin(origin, ceiling):
    b = setup(D100, origin=origin)
    b.advance(2 * DAY)
    res = b.assert_refused(
        "UP_CAP", lambda: b.prepare("set_daily_dose", {"daily_dose_ng": ceiling + 100})
    )
    assert res["allowed"] == ceiling
    assert b.confirm("set_daily_dose", {"daily_dose_ng": ceiling})["ok"]


@pytest.mark.sr("SR-8")
def test_sr8_window_edge_plus_minus_1ms():
    b = setup(D100)
    e = 2 * DAY
    b.advance(e)
    assert b.confirm("set_daily_dose", {"daily_dose_ng": 130_000})["ok"]
    # at e + 24 h - 1 the 100 (in effect until e) is still in (t - 24 h, t]
    res = b.assert_refused(
        "UP_CAP", lambda: b.prepare("set_daily_dose", {"daily_dose_ng": 169_000}), e + DAY - 1
    )
    assert res["allowed"] == 130_000
    # at e + 24 h it is out: base 130 -> 169
    b.advance(e + DAY)
    assert b.prepare("set_daily_dose", {"daily_dose_ng": 169_100})["reason"] == "UP_CAP"
    assert b.confirm("set_daily_dose", {"daily_dose_ng": 169_000})["ok"]


@pytest.mark.sr("SR-8")
def test_sr8_no_stacking_of_unsettled_increases():
    b = setup(D100)
    b.advance(2 * DAY)
    assert b.confirm("set_daily_dose", {"daily_dose_ng": 130_000})["ok"]
    b.advance(2 * DAY + 2 * HOUR)
    res = b.assert_refused(
        "UP_CAP", lambda: b.prepare("set_daily_dose", {"daily_dose_ng": 130_100})
    )
    assert res["allowed"] == 130_000


@pytest.mark.sr("SR-8", "SR-17")
def test_sr8_interruption_is_not_the_lowest_dose():
    b = setup(D100)
    b.advance(2 * DAY)
    assert b.confirm("stop", {"reason": "procedure"})["ok"]
    b.advance(2 * DAY + HOUR)
    assert b.confirm("resume", {"daily_dose_ng": 0})["ok"]  # 1 h: no restart cap
    assert b.dose() == D100
    # the stop (0 ug/day) is excluded: base stays 100
    assert b.confirm("set_daily_dose", {"daily_dose_ng": 130_000})["ok"]


@pytest.mark.sr("SR-8", "SR-24")
def test_sr8_flex_compares_daily_doses_not_step_rates():
    b = setup(D100)
    b.advance(2 * DAY)
    # (60 x 12 h + 200 x 12 h) / 24 h = 130 ug/day: allowed although a step is 200
    assert b.prepare("flex", {"steps": [[0, 60_000], [720, 200_000]]})["ok"] == 1
    # 130.1 ug/day average: over +30 %
    b.assert_refused("UP_CAP", lambda: b.prepare("flex", {"steps": [[0, 60_200], [720, 200_000]]}))


# ====================================================================== SR-9 / SR-14


@pytest.mark.sr("SR-9", "SR-14")
def test_sr9_down_cap_refused_with_allowed_value_and_taper_offer():
    b = setup(D100)
    b.advance(2 * DAY)
    res = b.assert_refused(
        "DOWN_CAP", lambda: b.prepare("set_daily_dose", {"daily_dose_ng": 79_900})
    )
    assert res["allowed"] == 80_000
    offer = res["offer"]
    assert offer["command"] == "taper" and offer["target_daily_dose_ng"] == 79_900
    assert offer["step_pct"] == 20
    assert b.confirm("set_daily_dose", {"daily_dose_ng": 80_000})["ok"]


@pytest.mark.sr("SR-9")
def test_sr9_mistyped_increase_can_be_corrected_until_settled():
    b = setup(D100)
    t = 2 * DAY
    b.advance(t)
    assert b.confirm("set_daily_dose", {"daily_dose_ng": 130_000})["ok"]
    # 130 in effect 1 h - 1 ms: not settled; highest settled is 100 -> 80 allowed
    b.advance(t + HOUR - 1)
    assert b.prepare("set_daily_dose", {"daily_dose_ng": 80_000})["ok"] == 1
    # at exactly 1 h it is settled: 0.8 x 130 = 104
    res = b.assert_refused(
        "DOWN_CAP", lambda: b.prepare("set_daily_dose", {"daily_dose_ng": 80_000}), t + HOUR
    )
    assert res["allowed"] == 104_000


@pytest.mark.sr("SR-9")
def test_sr9_settled_dose_leaves_the_window():
    b = setup(D100)
    e = 2 * DAY
    b.advance(e)
    assert b.confirm("set_daily_dose", {"daily_dose_ng": 80_000})["ok"]
    # 100 (until e) has exactly 1 h inside (t - 24 h, t] at t = e + 23 h: still settled
    t = e + DAY - HOUR
    res = b.assert_refused(
        "DOWN_CAP", lambda: b.prepare("set_daily_dose", {"daily_dose_ng": 64_000}), t
    )
    assert res["allowed"] == 80_000
    b.advance(t + 1)
    assert b.confirm("set_daily_dose", {"daily_dose_ng": 64_000})["ok"]


@pytest.mark.sr("SR-9", "SR-11")
def test_sr9_doses_before_an_interruption_are_excluded():
    b = setup(D100)
    b.advance(2 * DAY)
    b.confirm("stop", {"reason": "procedure"})
    b.advance(2 * DAY + HOUR)
    assert b.confirm("resume", {"daily_dose_ng": 0})["ok"]
    # the 100 before the stop does not count and the resumed 100 is not settled yet
    assert b.prepare("set_daily_dose", {"daily_dose_ng": 50_000})["ok"] == 1
    b.advance(2 * DAY + 2 * HOUR)
    res = b.assert_refused(
        "DOWN_CAP", lambda: b.prepare("set_daily_dose", {"daily_dose_ng": 50_000})
    )
    assert res["allowed"] == 80_000


# ====================================================================== SR-10


@pytest.mark.sr("SR-10")
@pytest.mark.parametrize(
    "effect_ms,rule,limit",
    [
        (6 * HOUR, "us", 100_000),
        (8 * HOUR, "us", 100_000),
        (8 * HOUR + 1, "us", 50_000),
        (10 * HOUR, "eu", 100_000),
        (12 * HOUR + 1, "eu", 50_000),
    ],
)
def test_sr10_start_dose_from_screening(effect_ms, rule, limit):
    b = Bench()
    b.confirm(
        "refill", {"aspirated_nl": 0, "volume_nl": 20 * ML, "concentration_ug_per_ml": 500}, 0
    )
    b.confirm("prime", {"contents": "drug"}, 0)
    args = {
        "origin": "spinal",
        "screening_dose_ng": 50_000,
        "screening_effect_ms": effect_ms,
        "start_rule": rule,
    }
    res = b.assert_refused(
        "START_RULE", lambda: b.prepare("program", dict(args, daily_dose_ng=limit + 100)), 0
    )
    assert res["allowed"] == limit
    assert b.confirm("program", dict(args, daily_dose_ng=limit))["ok"]


@pytest.mark.sr("SR-10")
def test_sr10_no_increase_during_first_24h_boluses_allowed():
    t0 = 5 * MIN
    b = setup(50_000, t=t0, screening_dose_ng=50_000, screening_effect_ms=10 * HOUR)
    b.advance(t0 + HOUR)
    assert b.confirm("bolus", {"dose_ng": 5_000, "duration_ms": 10 * MIN})["ok"]
    res = b.assert_refused(
        "NO_INCREASE", lambda: b.prepare("set_daily_dose", {"daily_dose_ng": 50_100}), t0 + DAY - 1
    )
    assert res["allowed"] == 50_000
    b.advance(t0 + DAY)
    assert b.confirm("set_daily_dose", {"daily_dose_ng": 65_000})["ok"]  # +30 %


@pytest.mark.sr("SR-10", "SR-14")
def test_sr10_screening_effect_without_its_dose_is_refused():
    """A screening effect marks the first program after implant; with a zero
    screening dose the start rule could not apply and 800 ug/day would pass as an
    established therapy on day 0 (found attacking the simulator): refused, and the
    pump stays unprogrammed."""
    b = Bench()
    b.confirm(
        "refill", {"aspirated_nl": 0, "volume_nl": 20 * ML, "concentration_ug_per_ml": 500}, 0
    )
    b.confirm("prime", {"contents": "drug"}, 0)
    args = {"origin": "spinal", "daily_dose_ng": 800_000, "screening_dose_ng": 0,
            "screening_effect_ms": 6 * HOUR}
    res = b.assert_refused("BAD_ARGUMENT", lambda: b.prepare("program", args), 0)
    assert "screening" in res["message"]
    assert b.r.ctrl.state == "UNPROGRAMMED"


@pytest.mark.sr("SR-10")
def test_sr10_established_therapy_has_no_start_limit():
    b = setup(D100)  # no screening dose: no first-24 h hold
    b.advance(2 * HOUR)
    assert b.confirm("set_daily_dose", {"daily_dose_ng": 130_000})["ok"]


# ====================================================================== SR-11


@pytest.mark.sr("SR-11", "SR-17")
@pytest.mark.parametrize(
    "gap,pct", [(4 * HOUR, 100), (4 * HOUR + 1, 75), (DAY - 1, 75), (DAY, 50), (48 * HOUR + 1, 50)]
)
def test_sr11_resume_after_stop_capped_by_duration(gap, pct):
    b = setup(D100)
    ts = 2 * DAY
    b.advance(ts)
    assert b.confirm("stop", {"reason": "procedure"})["ok"]
    cap = D100 * pct // 100
    if pct < 100:
        res = b.assert_refused(
            "RESTART_CAP", lambda: b.prepare("resume", {"daily_dose_ng": cap + 100}), ts + gap
        )
        assert res["allowed"] == cap
    res = b.confirm("resume", {"daily_dose_ng": 0}, ts + gap)
    assert res["ok"] and b.dose() == cap and b.state() == "RUNNING"


@pytest.mark.sr("SR-11")
def test_sr11_no_increase_for_24h_after_capped_restart():
    b = setup(D100)
    b.advance(2 * DAY)
    b.confirm("stop", {"reason": "procedure"})
    r = 2 * DAY + 5 * HOUR
    assert b.confirm("resume", {"daily_dose_ng": 0}, r)["ok"]
    assert b.dose() == 75_000
    res = b.assert_refused(
        "NO_INCREASE", lambda: b.prepare("set_daily_dose", {"daily_dose_ng": 75_100}), r + DAY - 1
    )
    assert res["allowed"] == 75_000
    b.advance(r + DAY)
    # then SR-8 from the restart dose: 75 x 1.3 = 97.5
    assert b.prepare("set_daily_dose", {"daily_dose_ng": 97_600})["reason"] == "UP_CAP"
    assert b.confirm("set_daily_dose", {"daily_dose_ng": 97_500})["ok"]


@pytest.mark.sr("SR-11", "SR-23")
@pytest.mark.parametrize(
    "upper,dose", [(4 * HOUR, 100_000), (4 * HOUR + 1, 75_000), (DAY, 50_000), (None, 50_000)]
)
def test_sr11_reset_resumes_by_itself_under_restart_rule(upper, dose):
    b = setup(D100)
    b.advance(2 * DAY)
    tc = 2 * DAY + 1000
    b.power_cut(tc)
    lower = 0 if upper is None else upper
    b.power_on(tc + lower, upper)
    assert b.state() == "RUNNING"
    assert b.dose() == dose
    if dose < D100:
        a = b.alarm("RESTART_REDUCED")
        assert a is not None and a[1] == "high" and a[2] == 1
    else:
        assert b.alarm("RESTART_REDUCED") is None
    n = len(b.strokes)
    b.advance(tc + lower + DAY)
    assert len(b.strokes) > n  # it never waits silently


@pytest.mark.sr("SR-11", "SR-23")
def test_sr11_restart_uses_the_upper_bound_of_the_outage():
    b = setup(D100)
    b.advance(2 * DAY)
    tc = 2 * DAY
    b.power_cut(tc)
    b.power_on(tc + HOUR, 5 * HOUR)  # lower 1 h, upper 5 h
    assert b.dose() == 75_000


@pytest.mark.sr("SR-11", "SR-4", "SR-28")
def test_sr11_motor_stall_longer_than_4h_restarts_reduced():
    b = setup(D100)
    b.advance(2 * DAY)  # last good stroke at exactly 2 d
    b.board.outcome = "stall"
    b.advance(2 * DAY + 5 * HOUR)
    b.board.outcome = "ok"
    b.advance(2 * DAY + 6 * HOUR)
    assert b.dose() == 75_000
    assert b.active("RESTART_REDUCED")


@pytest.mark.sr("SR-11", "SR-23")
def test_sr11_outage_while_stopped_adds_its_upper_bound():
    b = setup(D100)
    ts = 2 * DAY
    b.advance(ts)
    b.confirm("stop", {"reason": "procedure"})
    b.power_cut(ts + HOUR)
    b.power_on(ts + HOUR, 4 * HOUR)  # RTC invalid: lower 0, upper 4 h
    # interruption upper bound = 1 h stopped + 4 h outage + 1 min = 5 h 1 min -> 75 %
    res = b.confirm("resume", {"daily_dose_ng": 0}, ts + HOUR + MIN)
    assert res["ok"] and b.dose() == 75_000


@pytest.mark.sr("SR-11", "SR-23", "SR-27")
@pytest.mark.parametrize("lower,upper,cap", [(0, None, 50_000), (HOUR, 5 * HOUR, 75_000)])
def test_sr11_resume_from_safe_uses_the_outage_upper_bound(lower, upper, cap):
    b = setup(D100)
    b.advance(2 * DAY)
    tc = 2 * DAY + 1000
    b.power_cut(tc)
    b.power_on(tc + lower, upper, boot_loop=1)
    assert b.state() == "SAFE"
    p = b.prepare("resume", {"daily_dose_ng": 0}, tc + lower + MIN)
    assert p["ok"] and p["effect"]["daily_dose_ng"] == cap
    b.send("confirm", {"hash": p["hash"]})
    assert b.dose() == cap


# ====================================================================== SR-12


@pytest.mark.sr("SR-12", "SR-17")
def test_sr12_no_catch_up_after_a_stop():
    b = setup(D100)
    ts = DAY + 100 * SEC
    b.advance(ts)
    b.confirm("stop", {"reason": "procedure"})
    r = ts + 2 * HOUR
    b.confirm("resume", {"daily_dose_ng": 0}, r)
    b.advance(r + IV - 1)
    assert b.strokes_between(ts, r + IV - 1) == []
    b.advance(r + IV)
    assert b.strokes_between(ts, r + IV) == [(r + IV, "basal")]


@pytest.mark.sr("SR-12", "SR-4")
def test_sr12_owed_volume_bounded_during_stall():
    b = setup(D100)
    b.advance(DAY)
    b.board.outcome = "stall"
    b.advance(DAY + 3 * HOUR)
    acc = b.ctrl.acc
    assert acc.owed_at(DAY + 3 * HOUR) < acc.thr + acc.inc
    b.board.outcome = "ok"
    n = len(b.strokes)
    b.advance(DAY + 6 * HOUR)
    times = [s[0] for s in b.strokes[n - 1 :]]
    assert all(b2 - a2 >= IV - 1 for a2, b2 in itertools.pairwise(times))
    assert len(times) - 1 <= 3 * HOUR // IV + 1  # no burst of missed strokes


# ====================================================================== SR-13


@pytest.mark.sr("SR-13", "SR-8")
def test_sr13_titration_at_the_limit_runs_on_schedule():
    b = setup(D100)
    t = 2 * DAY
    b.advance(t)
    res = b.confirm("titrate", {"target_daily_dose_ng": 200_000, "step_pct": 30, "every_ms": DAY})
    assert res["ok"]
    assert res["effect"]["plan_doses_ng"] == [130_000, 169_000, 200_000]
    assert b.dose() == 130_000  # the first step applies when the plan starts
    b.advance(t + DAY - 1)
    assert b.dose() == 130_000
    b.advance(t + DAY)
    assert b.dose() == 169_000
    b.advance(t + 2 * DAY)
    assert b.dose() == 200_000 and b.ctrl.plan is None


@pytest.mark.sr("SR-13", "SR-8", "SR-14")
def test_sr13_plan_steps_checked_at_creation():
    b = setup(D100)
    b.advance(2 * DAY)
    res = b.assert_refused(
        "UP_CAP",
        lambda: b.prepare(
            "titrate", {"target_daily_dose_ng": 200_000, "step_pct": 30, "every_ms": DAY - 1}
        ),
    )
    assert "step 2" in res["message"]
    b.assert_refused(
        "UP_CAP",
        lambda: b.prepare(
            "titrate", {"target_daily_dose_ng": 200_000, "step_pct": 31, "every_ms": DAY}
        ),
    )
    b.assert_refused(
        "PLAN_INVALID",
        lambda: b.prepare(
            "titrate", {"target_daily_dose_ng": 90_000, "step_pct": 10, "every_ms": DAY}
        ),
    )


@pytest.mark.sr("SR-13", "SR-9")
def test_sr13_taper_doses_rounded_toward_previous():
    b = setup(D100)
    b.advance(2 * DAY)
    res = b.confirm("taper", {"target_daily_dose_ng": 50_000, "step_pct": 20, "every_ms": DAY})
    # 80, 64, 51.2 then the target
    assert res["effect"]["plan_doses_ng"] == [80_000, 64_000, 51_200, 50_000]
    b.advance(2 * DAY + 3 * DAY)
    assert b.dose() == 50_000


@pytest.mark.sr("SR-13", "SR-6", "SR-28", "SR-30")
def test_sr13_step_refused_at_run_time_holds_with_plan_held():
    b = setup(D100, cap_24h_ng=250_000)
    t = 2 * DAY
    b.advance(t)
    assert b.confirm("titrate", {"target_daily_dose_ng": 169_000, "step_pct": 30, "every_ms": DAY})[
        "ok"
    ]
    # 90 ug injected 1 h before step 2: no hold now (about 130 + 90 < 250), but the
    # window ending 23 h after the step would hold about 5 + 90 + 169 x 23/24 > 250
    assert b.confirm("port_injection", {"dose_ng": 90_000}, t + DAY - HOUR)["ok"]
    assert b.alarm("CAP_HOLD") is None
    b.advance(t + DAY)
    assert b.dose() == 130_000
    a = b.alarm("PLAN_HELD")
    assert a is not None and a[1] == "medium" and a[2] == 1
    assert b.ctrl.plan is not None
    # retried one interval later, once the injection has left the window
    b.advance(t + 2 * DAY)
    assert b.dose() == 169_000 and not b.active("PLAN_HELD")


@pytest.mark.sr("SR-13")
def test_sr13_manual_change_cancels_plan():
    b = setup(D100)
    b.advance(2 * DAY)
    b.confirm("titrate", {"target_daily_dose_ng": 169_000, "step_pct": 30, "every_ms": DAY})
    n = b.cmd_count()
    res = b.confirm("set_daily_dose", {"daily_dose_ng": 110_000}, 2 * DAY + HOUR)
    assert res["ok"] and res["effect"]["plan_cancelled"] == 1
    assert b.ctrl.plan is None
    assert b.cmd_count() == n + 2  # prepare + confirm, both logged
    b.advance(4 * DAY)
    assert b.dose() == 110_000


# ====================================================================== SR-14


@pytest.mark.sr("SR-14")
def test_sr14_refusals_change_nothing_and_log_once():
    b = setup(D100)
    b.advance(DAY)
    p = b.prepare("set_daily_dose", {"daily_dose_ng": 110_000})
    b.assert_refused("HASH_MISMATCH", lambda: b.send("confirm", {"hash": p["hash"] ^ 1}))
    b.assert_refused("WRONG_ROLE", lambda: b.send("emergency_stop", {}, role="patient"))
    b.assert_refused("WRONG_STATE", lambda: b.prepare("prime", {"contents": "drug"}))
    b.assert_refused("UNKNOWN_COMMAND", lambda: b.send("fly", {}))
    b.assert_refused("PATIENT_BOLUS_DISABLED", lambda: b.send("patient_bolus", {}, role="patient"))


# ====================================================================== SR-15


@pytest.mark.sr("SR-15")
def test_sr15_prepare_shows_effect_and_does_not_apply():
    b = setup(D100)
    b.advance(DAY)
    before = b.ctrl.therapy_state()
    p = b.prepare("set_daily_dose", {"daily_dose_ng": 120_000})
    assert p["ok"] and type(p["hash"]) is int
    assert b.ctrl.therapy_state() == before
    e = p["effect"]
    assert e["daily_dose_ng"] == 120_000
    assert e["volume_nl_per_day"] == 240_000  # 120 ug / 500 ug/mL
    assert e["concentration_ug_per_ml"] == 500
    assert 119_000 <= e["mass_24h_ng"] <= 121_000
    assert e["low_reservoir_in_ms"] > 0 and e["empty_in_ms"] > e["low_reservoir_in_ms"]


@pytest.mark.sr("SR-15")
def test_sr15_confirm_window_edge():
    b = setup(D100)
    t = DAY
    b.advance(t)
    p = b.prepare("set_daily_dose", {"daily_dose_ng": 120_000})
    res = b.assert_refused(
        "CONFIRM_EXPIRED", lambda: b.send("confirm", {"hash": p["hash"]}), t + 60_001
    )
    b2 = setup(D100)
    b2.advance(t)
    p = b2.prepare("set_daily_dose", {"daily_dose_ng": 120_000})
    res = b2.send("confirm", {"hash": p["hash"]}, t + 60_000)
    assert res["ok"] and b2.dose() == 120_000


@pytest.mark.sr("SR-15", "SR-14")
def test_sr15_two_phase_commands_need_confirm():
    b = setup(D100)
    b.advance(DAY)
    b.assert_refused("NEEDS_CONFIRM", lambda: b.send("set_daily_dose", {"daily_dose_ng": 110_000}))
    b.assert_refused("NEEDS_CONFIRM", lambda: b.send("stop", {"reason": "other"}))
    b.assert_refused("NOTHING_PREPARED", lambda: b.send("confirm", {"hash": 1}))
    p = b.prepare("set_daily_dose", {"daily_dose_ng": 110_000})
    assert b.send("confirm", {"hash": p["hash"]})["ok"]
    b.assert_refused("NOTHING_PREPARED", lambda: b.send("confirm", {"hash": p["hash"]}))
    p = b.prepare("set_daily_dose", {"daily_dose_ng": 120_000})
    b.assert_refused("WRONG_ROLE", lambda: b.send("confirm", {"hash": p["hash"]}, role="patient"))


# ====================================================================== SR-16


@pytest.mark.sr("SR-16", "SR-28")
def test_sr16_emergency_stop_and_repeating_withdrawal_alarm():
    b = setup(D100)
    t = DAY + 10 * SEC
    b.advance(t)
    res = b.send("emergency_stop", {})
    assert res["ok"] and b.state() == "EMERGENCY_STOPPED"
    n = len(b.strokes)
    b.advance(t + HOUR)
    assert len(b.strokes) == n
    a = b.alarm("WITHDRAWAL_RISK")
    assert a[1] == "high" and a[2] == 1
    b.send("acknowledge", {"code": "WITHDRAWAL_RISK"})
    assert b.alarm("WITHDRAWAL_RISK")[3] == 1
    b.advance(t + HOUR + 5 * MIN)
    assert b.alarm("WITHDRAWAL_RISK")[3] == 0  # re-annunciated while stopped
    repeats = [e for e in b.alarm_events if e[1] == "WITHDRAWAL_RISK" and e[2] == "repeat"]
    assert len(repeats) >= 12
    assert b.confirm("resume", {"daily_dose_ng": 0})["ok"]
    assert not b.active("WITHDRAWAL_RISK")


@pytest.mark.sr("SR-16")
def test_sr16_emergency_stop_single_phase_clinician_only_no_cap():
    b = setup(D100)
    b.advance(HOUR)
    b.confirm("port_injection", {"dose_ng": 300_000})  # far over the caps
    b.assert_refused("WRONG_ROLE", lambda: b.send("emergency_stop", {}, role="patient"))
    assert b.send("emergency_stop", {})["ok"]
    assert b.state() == "EMERGENCY_STOPPED"


@pytest.mark.sr("SR-16", "SR-18")
def test_sr16_emergency_stop_to_min_rate_when_configured():
    b = setup(D100, config={"emergency_min_rate": 1})
    b.advance(DAY)
    assert b.send("emergency_stop", {})["ok"]
    assert b.state() == "MIN_RATE"
    assert b.active("WITHDRAWAL_RISK")
    n = len(b.strokes)
    b.advance(2 * DAY)
    # 20 uL/day = 10 strokes of 2 uL
    assert len(b.strokes) - n == 10
    assert {s[1] for s in b.strokes[n:]} == {"min_rate"}


# ====================================================================== SR-17


@pytest.mark.sr("SR-17", "SR-14")
def test_sr17_stop_needs_a_reason_and_stops_motion():
    b = setup(D100)
    b.advance(DAY)
    b.assert_refused("BAD_ARGUMENT", lambda: b.prepare("stop", {}))
    assert b.confirm("stop", {"reason": "procedure"})["ok"]
    n = len(b.strokes)
    b.advance(2 * DAY)
    assert len(b.strokes) == n and b.state() == "STOPPED"


@pytest.mark.sr("SR-17", "SR-28")
def test_sr17_pump_stopped_alarm_at_session_end_and_repeats():
    b = setup(D100)
    t = DAY
    b.advance(t)
    b.confirm("stop", {"reason": "procedure"})
    assert b.alarm("PUMP_STOPPED") is None  # session still open
    b.r.session_end(t + MIN)
    a = b.alarm("PUMP_STOPPED")
    assert a[1] == "high" and a[2] == 1 and a[4] == t + MIN
    b.advance(t + MIN + 5 * MIN)
    assert (t + 6 * MIN, "PUMP_STOPPED", "repeat") in b.alarm_events


@pytest.mark.sr("SR-17")
def test_sr17_session_timeout_edge():
    b = setup(D100)
    t = DAY
    b.advance(t)
    b.confirm("stop", {"reason": "other"})  # last accepted clinician command at t
    b.advance(t + 15 * MIN - 1)
    assert b.alarm("PUMP_STOPPED") is None
    b.advance(t + 15 * MIN)
    assert b.active("PUMP_STOPPED")


@pytest.mark.sr("SR-17")
def test_sr17_mri_stop_needs_post_scan_check():
    b = setup(D100)
    b.advance(DAY)
    b.confirm("stop", {"reason": "mri"})
    b.assert_refused(
        "MRI_CHECK_REQUIRED", lambda: b.prepare("resume", {"daily_dose_ng": 0}), DAY + HOUR
    )
    assert b.send("post_scan_check", {})["ok"]
    assert b.confirm("resume", {"daily_dose_ng": 0})["ok"]
    assert b.state() == "RUNNING" and b.dose() == D100


# ====================================================================== SR-18


@pytest.mark.sr("SR-18")
def test_sr18_min_rate_shows_ug_per_day_and_runs_at_volume_rate():
    b = setup(D100)
    t = DAY
    b.advance(t)
    res = b.confirm("min_rate", {"rate_nl_per_day": 40_000})
    assert res["ok"] and b.state() == "MIN_RATE"
    assert res["effect"]["min_rate_ng_per_day"] == 20_000  # 40 uL/day x 500 ug/mL
    n = len(b.strokes)
    b.advance(t + DAY)
    assert len(b.strokes) - n == 20  # 40 uL/day / 2 uL


@pytest.mark.sr("SR-18", "SR-11")
def test_sr18_min_rate_counts_as_interruption_for_restart():
    b = setup(D100)
    t = 2 * DAY
    b.advance(t)
    b.confirm("min_rate", {"rate_nl_per_day": 20_000})
    res = b.confirm("resume", {"daily_dose_ng": 0}, t + 5 * HOUR)
    assert res["ok"] and b.dose() == 75_000


@pytest.mark.sr("SR-18", "SR-8")
def test_sr18_min_rate_is_not_a_basal_dose_for_up_cap():
    b = setup(D100)
    t = 2 * DAY
    b.advance(t)
    b.confirm("min_rate", {"rate_nl_per_day": 20_000})
    assert b.confirm("resume", {"daily_dose_ng": 0}, t + HOUR)["ok"]
    assert b.dose() == D100
    # had the 10 ug/day min rate been a dose, the base would be 10 ug/day
    assert b.confirm("set_daily_dose", {"daily_dose_ng": 130_000})["ok"]


# ====================================================================== SR-19


@pytest.mark.sr("SR-19")
def test_sr19_low_reservoir_counts_maximum_patient_boluses():
    # 5 mL fill; planned = 0.2 mL basal + 10 x 0.1 mL boluses = 1.2 mL/day; 5 days = 6 mL
    b = Bench()
    b.setup(
        D100,
        fill_nl=5 * ML,
        patient_bolus_ng=50_000,
        patient_lockout_ms=HOUR,
        patient_max_per_24h=10,
    )
    a = b.alarm("LOW_RESERVOIR")
    assert a is not None and a[1] == "medium"
    # basal alone: 5 mL is neither <= 4 mL nor <= 5 x 0.2 mL
    b2 = Bench()
    b2.setup(D100, fill_nl=5 * ML)
    assert b2.alarm("LOW_RESERVOIR") is None


@pytest.mark.sr("SR-19")
def test_sr19_delivery_continues_past_computed_empty_until_optimistic_zero():
    b = Bench()
    b.setup(250_000, fill_nl=1 * ML)  # 1 mL, 250 strokes a day
    b.advance(3 * DAY)
    # R_o after n strokes = 1 mL - 2 uL n + ceil(0.145 x 2 uL n) = 1e6 - 1710 n nL
    # > 0 up to n = 584, so stroke 585 is the last
    assert len(b.strokes) == 585
    assert b.status()["reservoir_nl"] == 1 * ML - 585 * 2000  # computed R went negative
    assert b.active("RESERVOIR_EMPTY") and b.alarm("RESERVOIR_EMPTY")[1] == "high"
    assert b.active("RESERVOIR_EMPTY_SOON")


@pytest.mark.sr("SR-19")
def test_sr19_empty_switch_stops_and_refill_restarts():
    b = setup(D100)
    b.advance(DAY)
    b.r.empty_switch(DAY + 1, 1)
    assert b.active("RESERVOIR_EMPTY")
    n = len(b.strokes)
    b.advance(2 * DAY)
    assert len(b.strokes) == n
    assert b.confirm(
        "refill", {"aspirated_nl": 19_800_000, "volume_nl": 20 * ML, "concentration_ug_per_ml": 500}
    )["ok"]
    assert not b.active("RESERVOIR_EMPTY")
    b.advance(3 * DAY)
    assert len(b.strokes) > n


@pytest.mark.sr("SR-28")
def test_sr28_battery_low_is_a_medium_alarm_that_never_changes_dosing():
    """The board's battery monitor (issue 7) raises MEDIUM BATTERY_LOW; dosing goes on
    exactly as without it (a low battery is no reason to withdraw); the alarm stays
    latched after the battery recovers until acknowledged, and the input replays."""
    quiet, low = setup(D100), setup(D100)
    low.r.battery(HOUR, 1)
    assert low.active("BATTERY_LOW") and low.alarm("BATTERY_LOW")[1] == "medium"
    low.r.battery(2 * HOUR, 0)
    assert low.alarm("BATTERY_LOW") is not None and not low.active("BATTERY_LOW")
    for b in (quiet, low):
        b.advance(DAY)
    assert low.strokes == quiet.strokes
    low.send("acknowledge", {"code": "all"})
    assert low.alarm("BATTERY_LOW") is None
    assert [e[1:] for e in low.alarm_events if e[1] == "BATTERY_LOW"] == [
        ("BATTERY_LOW", "raise"), ("BATTERY_LOW", "clear")]
    assert {"k": "battery", "t": HOUR, "low": 1} in [json.loads(x) for x in low.lines]


@pytest.mark.sr("SR-26", "SR-14")
def test_sr26_an_id_far_above_the_last_is_refused_and_the_id_space_stays_usable():
    """Found by the attacker: one command with id 2^31-1 (any role) used up the id
    space: every later command, an emergency stop included, had no id left. An id more
    than ID_STEP_MAX above the highest taken is refused (one audit record, nothing
    changed); the next ids still work, up to exactly ID_STEP_MAX above."""
    from itb.controller import ID_MAX, ID_STEP_MAX

    b = setup(D100)
    top = b.ctrl.top_id()
    for cid in (ID_MAX, top + ID_STEP_MAX + 1):
        res = b.assert_refused("ID_JUMP", lambda cid=cid: b.send(
            "acknowledge", {"code": "all"}, role="patient", cid=cid))
        assert res["id"] == cid
    assert b.send("acknowledge", {"code": "all"}, cid=top + ID_STEP_MAX)["ok"]
    assert b.send("emergency_stop", {}, cid=top + ID_STEP_MAX + 1)["ok"]
    assert b.state() == "EMERGENCY_STOPPED"


@pytest.mark.sr("SR-19", "SR-15")
def test_sr19_projected_low_reservoir_date_matches_the_alarm():
    b = setup(1_000_000)  # 2 mL/day at 500 ug/mL
    e = b.results[-1]["effect"]
    # LOW when R_p = 20 - 1.145 V <= 5 days x 2 mL = 10 mL: V >= 8.734 mL -> 4.367 days
    # (the 4 mL level would be reached only at 16/2.29 = 6.99 days)
    expected = 10 / 2.29 * DAY
    assert abs(e["low_reservoir_in_ms"] - expected) <= HOUR


# ====================================================================== SR-20


@pytest.mark.sr("SR-20", "SR-28")
def test_sr20_refill_discrepancy_half_ml_floor():
    b = setup(D100)
    t = 2 * DAY  # 200 strokes: V = 0.4 mL; limit = max(0.058, 0.5) = 0.5 mL
    b.advance(t)
    assert b.status()["reservoir_nl"] == 20 * ML - 400_000
    ok = b.prepare(
        "refill", {"aspirated_nl": 19_100_000, "volume_nl": 20 * ML, "concentration_ug_per_ml": 500}
    )  # removed 0.9: off by 0.5
    assert ok["effect"]["discrepancy_nl"] == 500_000
    assert ok["effect"]["discrepancy_flagged"] == 0
    bad = b.prepare(
        "refill", {"aspirated_nl": 19_099_999, "volume_nl": 20 * ML, "concentration_ug_per_ml": 500}
    )
    assert bad["effect"]["discrepancy_flagged"] == 1
    assert b.send("confirm", {"hash": bad["hash"]})["ok"]
    a = b.alarm("REFILL_DISCREPANCY")
    assert a[1] == "medium"


# ====================================================================== SR-21


@pytest.mark.sr("SR-21", "SR-14")
def test_sr21_concentration_change_needs_full_aspiration():
    b = setup(D100)
    b.advance(DAY)
    b.assert_refused(
        "PARTIAL_CONC_CHANGE",
        lambda: b.prepare(
            "refill",
            {
                "aspirated_nl": 1 * ML,
                "volume_nl": 5 * ML,
                "concentration_ug_per_ml": 1000,
                "partial": 1,
            },
        ),
    )
    assert b.prepare(
        "refill",
        {"aspirated_nl": 1 * ML, "volume_nl": 1 * ML, "concentration_ug_per_ml": 500, "partial": 1},
    )["ok"]


@pytest.mark.sr("SR-21", "SR-22")
def test_sr21_saline_priming_stops_at_80_percent_of_dead_volume():
    b = Bench()
    b.confirm(
        "refill", {"aspirated_nl": 0, "volume_nl": 20 * ML, "concentration_ug_per_ml": 500}, 0
    )
    res = b.confirm("prime", {"contents": "saline"}, 0)
    # 80 % of 374 uL = 299.2 uL -> 150 strokes of 2 uL (149 would be 298 uL)
    e = res["effect"]
    assert e["prime_strokes"] == 150 and e["dead_volume_nl"] == 374_000
    b.advance(HOUR)
    assert len(b.strokes) == 150 and {s[1] for s in b.strokes} == {"prime"}
    # SR-22: the drug mass of the priming delivery was shown before confirmation
    assert e["prime_mass_ng"] == sum(r["ng_hi"] for r in b.stroke_recs)
    assert b.status()["reservoir_nl"] == 20 * ML - 300_000


@pytest.mark.sr("SR-21")
def test_sr21_rate_follows_fluid_at_the_tip():
    b = setup(D100)
    t = 100 * SEC
    b.advance(t)
    assert b.confirm(
        "refill", {"aspirated_nl": 20 * ML, "volume_nl": 20 * ML, "concentration_ug_per_ml": 2000}
    )["ok"]
    b.advance(t + 3 * DAY)
    times = [s[0] for s in b.strokes]
    iv = [y - x for x, y in itertools.pairwise(times)]
    # 374 uL of 500 ug/mL ahead: 187 strokes at 0.2 mL/day, then 2000 ug/mL at 0.05 mL/day
    assert iv[:186] == [IV] * 186  # strokes 1..187
    assert iv[186] == 4 * IV  # stroke 188 pushes 2000 ug/mL


# ====================================================================== SR-22


@pytest.mark.sr("SR-22")
def test_sr22_dead_volume_from_configured_catheter_length():
    b = Bench({"catheter_length_mm": 500, "tubing_nl": 140_000})
    b.confirm(
        "refill", {"aspirated_nl": 0, "volume_nl": 20 * ML, "concentration_ug_per_ml": 500}, 0
    )
    res = b.prepare("prime", {"contents": "empty"}, 0)
    # 0.140 mL + 50 cm x 0.0026 mL/cm = 0.270 mL; 80 % = 216 uL -> 108 strokes
    assert res["effect"]["dead_volume_nl"] == 270_000
    assert res["effect"]["prime_strokes"] == 108
    assert "prime_mass_ng" in res["effect"]


# ====================================================================== SR-23


@pytest.mark.sr("SR-23", "SR-14")
@pytest.mark.parametrize("via", ["controller", "runner"])
def test_sr23_time_earlier_than_last_is_refused(via):
    """A command dated 1 ms before the last time is refused (CLOCK_BACKWARDS) with one
    audit record and no change, whether sent to the controller or through the runner."""
    b = setup(D100)
    b.advance(DAY)
    before = b.ctrl.therapy_state()
    n = b.cmd_count()
    send = b.ctrl.handle if via == "controller" else b.r.command
    res = send({"name": "emergency_stop", "id": 9999, "role": "clinician", "args": {}}, DAY - 1)
    assert res["ok"] == 0 and res["reason"] == "CLOCK_BACKWARDS"
    assert b.ctrl.therapy_state() == before and b.cmd_count() == n + 1


@pytest.mark.sr("SR-23")
@pytest.mark.parametrize("entry", ["wake", "tick", "empty_switch", "set_wall_clock", "reboot"])
def test_sr23_time_entry_points_reject_1ms_back_and_accept_same_ms(entry):
    """Every controller entry point that takes ``now`` raises ClockError for a time
    1 ms earlier than the last one and changes nothing; the same ms is accepted."""
    from itb.controller import ClockError

    b = setup(D100)
    b.advance(DAY)
    last = b.ctrl.last_now
    calls = {
        "wake": lambda t: b.ctrl.wake(t),
        "tick": lambda t: b.ctrl.tick(t),
        "empty_switch": lambda t: b.ctrl.empty_switch(t, 0),
        "set_wall_clock": lambda t: b.ctrl.set_wall_clock(t, 1_700_000_000_000),
        "reboot": lambda t: b.ctrl.reboot(t, 0),
    }
    before = b.ctrl.therapy_state()
    with pytest.raises(ClockError):
        calls[entry](last - 1)
    assert b.ctrl.therapy_state() == before and b.ctrl.last_now == last
    calls[entry](last)
    assert b.ctrl.last_now == last


@pytest.mark.sr("SR-23", "SR-29")
def test_sr23_wall_clock_changes_never_move_windows():
    b = setup(D100, patient_bolus_ng=5_000, patient_lockout_ms=2 * HOUR, patient_max_per_24h=4)
    t = HOUR
    b.r.set_rtc(t, 1_700_000_000_000)
    assert b.send("patient_bolus", {}, t, role="patient")["ok"]
    w = b.status()["window_ng"]
    # the RTC jumps 3 h ahead, then back: the therapy clock and the lockout do not move
    b.r.set_rtc(t + MIN, 1_700_000_000_000 + 3 * HOUR)
    b.r.set_rtc(t + 2 * MIN, 1_700_000_000_000 - 5 * HOUR)
    res = b.send("patient_bolus", {}, t + 2 * MIN, role="patient")
    assert res["reason"] == "LOCKOUT" and res["allowed"] == 2 * HOUR - 2 * MIN
    assert b.status()["window_ng"][0] >= w[0]


@pytest.mark.sr("SR-23", "SR-28")
def test_sr23_invalid_rtc_raises_clock_invalid():
    b = setup(D100)
    b.r.set_rtc(HOUR, None)
    assert b.active("CLOCK_INVALID")
    b.r.set_rtc(2 * HOUR, 1_700_000_000_000)
    assert not b.active("CLOCK_INVALID")


@pytest.mark.sr("SR-23", "SR-5")
def test_sr23_outage_windows_use_the_lower_bound():
    b = setup(D100)
    b.advance(DAY)
    w = b.status()["window_ng"][0]
    assert w == 100_000
    b.power_cut(DAY)
    b.power_on(DAY, None)  # RTC invalid: lower bound 0 -> windows keep every stroke
    assert b.status()["window_ng"][0] == w
    assert b.dose() == 50_000  # ... while the restart rule takes the unknown = long


@pytest.mark.sr("SR-23")
def test_sr23_heartbeat_every_15_min():
    b = setup(D100)
    b.advance(HOUR)
    assert b.ctrl.store.counts.get("heartbeat", 0) >= 4


# ====================================================================== SR-24


@pytest.mark.sr("SR-24")
def test_sr24_flex_follows_local_time_offset_and_falls_back():
    b = setup(D100)
    t = DAY
    b.advance(t)
    b.r.set_rtc(t, 10 * DAY)  # UTC midnight at therapy time t; offset 0
    res = b.confirm("flex", {"steps": [[0, 50_000], [720, 150_000]]})
    assert res["ok"] and res["effect"]["daily_dose_ng"] == D100
    n0 = len(b.strokes)
    b.advance(t + 12 * HOUR)
    n1 = len(b.strokes)
    b.advance(t + DAY)
    n2 = len(b.strokes)
    # 50 ug/day for 12 h = 25 strokes; 150 ug/day for 12 h = 75 strokes (+-1)
    assert abs((n1 - n0) - 25) <= 1 and abs((n2 - n1) - 75) <= 1
    # offset +12 h: local noon at UTC midnight -> the high step now runs first
    assert b.confirm("set_clock_offset", {"utc_offset_min": 720})["ok"]
    b.advance(t + DAY + 12 * HOUR)
    n3 = len(b.strokes)
    assert abs((n3 - n2) - 75) <= 1
    # local time unknown: the 24 h average (100 strokes a day)
    b.r.set_rtc(t + DAY + 12 * HOUR, None)
    b.advance(t + 2 * DAY + 12 * HOUR)
    assert abs((len(b.strokes) - n3) - 100) <= 1


# ====================================================================== SR-25


@pytest.mark.sr("SR-25")
def test_sr25_ledger_records_every_accepted_generation_and_nothing_else():
    """SR-25 (ledger half; the A/B slots are the persistence issue): every confirmed
    therapy change appends one ``rx`` record with the next generation and the basal
    dose and concentration it left in effect; a prepare, a refused confirm and a
    refused command add none."""

    def rx_records(b):
        return [r for r in b.ctrl.store.records() if r["k"] == "rx"]

    b = setup(D100)  # refill + prime + program: three generations
    gens = rx_records(b)
    assert [r["gen"] for r in gens] == [1, 2, 3]
    assert [r["name"] for r in gens] == ["refill", "prime", "program"]
    assert gens[-1]["ng_day"] == D100 and gens[-1]["conc"] == 500
    assert gens[-1]["state"] == "RUNNING"
    b.advance(DAY)  # (the in-memory store keeps only its last records: count them)
    b.prepare("set_daily_dose", {"daily_dose_ng": 120_000})
    assert b.ctrl.store.counts["rx"] == 3  # prepared, not accepted
    b.send("confirm", {"hash": 1}, role="clinician")  # wrong hash: refused
    b.assert_refused("UP_CAP", lambda: b.confirm("set_daily_dose", {"daily_dose_ng": 200_000}))
    assert b.ctrl.store.counts["rx"] == 3
    b.confirm("set_daily_dose", {"daily_dose_ng": 120_000})
    assert b.ctrl.store.counts["rx"] == 4
    last = rx_records(b)[-1]
    assert (last["gen"], last["name"], last["ng_day"]) == (4, "set_daily_dose", 120_000)
    assert last["t"] == b.t


# ====================================================================== SR-26


@pytest.mark.sr("SR-26")
def test_sr26_intent_is_durable_before_the_motor_moves():
    b = setup(D100)
    seen = []

    def check(n, volume_nl, now):
        last = b.ctrl.store.records()[-1]
        seen.append((last["k"], last["n"], n))

    b.board.on_stroke = check
    b.advance(DAY)
    assert len(seen) == 100
    assert all(k == "intent" and rn == n for k, rn, n in seen)
    assert b.ctrl.store.counts["intent"] == b.ctrl.store.counts["done"] == 100


@pytest.mark.sr("SR-26")
def test_sr26_repeated_command_id_is_not_applied_twice():
    b = setup(D100)
    t = 1000 * SEC
    b.advance(t)
    p = b.prepare("bolus", {"dose_ng": 5_000, "duration_ms": 10 * MIN})
    first = b.send("confirm", {"hash": p["hash"]}, cid=777)
    again = b.send("confirm", {"hash": p["hash"]}, t + SEC, cid=777)
    assert first["ok"] and again["ok"] and again.get("replayed") == 1
    b.advance(t + HOUR)
    assert len([s for s in b.strokes if s[1] == "bolus"]) == 5


@pytest.mark.sr("SR-26")
def test_sr26_remembered_results_stay_small_and_a_retry_still_gets_its_outcome():
    """Only the newest few results are kept whole; an older retried id gets its
    outcome (ok, reason, message, hash) without the effect, and is still never
    applied twice. Memory: a long plan's effect is kilobytes; 256 of them filled
    the virtual board's heap (found by the attacker)."""
    from itb.controller import FULL_RESULTS, KEPT_FIELDS

    b = setup(D100)
    t = 1000 * SEC
    b.advance(t)
    first = b.send("prepare", {"command": "taper", "args": {
        "target_daily_dose_ng": 40_000, "step_pct": 1, "every_ms": MIN}}, cid=500)
    assert first["ok"] and len(repr(first["effect"])) > 500
    for i in range(FULL_RESULTS + 3):
        b.send("acknowledge", {"code": "all"}, cid=501 + i)
    ctrl = b.r.ctrl
    assert set(ctrl.seen[500]) <= set(KEPT_FIELDS)
    again = b.send("prepare", {"command": "taper", "args": {}}, cid=500)
    assert again.get("replayed") == 1 and again["hash"] == first["hash"]
    assert again["ok"] == first["ok"] and "effect" not in again
    newest = ctrl.seen_order[-1]
    assert "effect" in ctrl.seen[newest] or ctrl.seen[newest]["name"] == "acknowledge"
    whole = [cid for cid in ctrl.seen_order if set(ctrl.seen[cid]) - set(KEPT_FIELDS)]
    assert len(whole) <= FULL_RESULTS


@pytest.mark.sr("SR-26")
def test_sr26_a_recorded_result_names_its_command_by_crc():
    """The CRC tells commands apart by name, role and args, survives the trace's
    round trip (floats are written as text), and is 0 for what cannot be written."""
    from itb.controller import command_crc
    from itb.trace import decode, encode

    a = {"name": "bolus", "role": "clinician", "args": {"dose_ng": 10_000, "x": 1.5}}
    assert command_crc(a) == command_crc(decode(encode({"k": "cmd", "t": 0, "cmd": a}))["cmd"])
    for other in (dict(a, role="patient"), dict(a, name="prime"),
                  dict(a, args={"dose_ng": 10_100, "x": 1.5})):
        assert command_crc(other) != command_crc(a)
    assert command_crc({"name": "x", "args": {"v": 10 ** 5000}}) == 0
    b = setup(D100)
    res = b.send("acknowledge", {"code": "all"}, cid=900)
    assert res["command_crc"] == command_crc({"name": "acknowledge", "role": "clinician",
                                              "args": {"code": "all"}})


@pytest.mark.sr("SR-26", "SR-4")
def test_sr26_stroke_without_completion_counts_after_reset():
    b = setup(D100)
    b.board.queue = ["ok", "power_cut"]
    b.advance(DAY)
    assert len(b.strokes) == 2 and b.r.powered is False
    b.power_on(2 * IV + MIN, MIN)
    st = b.status()
    assert st["window_ng"] == [2000, 2000]
    assert st["reservoir_nl"] == 20 * ML - 4000  # assumed delivered
    assert b.alarm("STROKE_UNCONFIRMED") is not None
    assert b.state() == "RUNNING"


# ====================================================================== SR-27


@pytest.mark.sr("SR-27", "SR-28")
def test_sr27_boot_loop_enters_safe_without_motor():
    b = setup(D100)
    b.advance(DAY)
    b.power_cut(DAY)
    b.power_on(DAY + MIN, MIN, boot_loop=1)
    assert b.state() == "SAFE"
    a = b.alarm("SAFE_STATE")
    assert a[1] == "high" and a[2] == 1
    n = len(b.strokes)
    b.advance(2 * DAY)
    assert len(b.strokes) == n
    b.assert_refused(
        "WRONG_STATE", lambda: b.prepare("program", {"daily_dose_ng": D100, "origin": "spinal"})
    )


@pytest.mark.sr("SR-27")
def test_sr27_maintenance_service_only_no_dosing_until_boot():
    b = setup(D100)
    b.advance(HOUR)
    b.assert_refused("WRONG_STATE", lambda: b.send("maintenance", {}, role="service"))
    b.confirm("stop", {"reason": "other"})
    b.assert_refused("WRONG_ROLE", lambda: b.send("maintenance", {}))
    assert b.send("maintenance", {}, role="service")["ok"]
    assert b.state() == "MAINTENANCE"
    a = b.alarm("NOT_DOSING")
    assert a[1] == "high" and a[2] == 1
    n = len(b.strokes)
    b.advance(DAY)
    assert len(b.strokes) == n
    b.power_cut(DAY)
    b.power_on(DAY + MIN, MIN)
    assert b.state() == "STOPPED" and not b.active("NOT_DOSING")


# ====================================================================== SR-28


@pytest.mark.sr("SR-28")
def test_sr28_alarm_priorities():
    high = (
        "CAP_HOLD",
        "WITHDRAWAL_RISK",
        "PUMP_STOPPED",
        "RESTART_REDUCED",
        "RESERVOIR_EMPTY_SOON",
        "RESERVOIR_EMPTY",
        "MOTOR_STALL",
        "OCCLUSION",
        "SAFE_STATE",
        "NOT_DOSING",
        "PRESCRIPTION_ROLLBACK",
        "STORAGE_CORRUPT",
    )
    medium = ("PLAN_HELD", "LOW_RESERVOIR", "REFILL_DISCREPANCY")
    for c in high:
        assert al.CODES[c][0] == al.HIGH, c
    for c in medium:
        assert al.CODES[c][0] == al.MEDIUM, c


@pytest.mark.sr("SR-28")
def test_sr28_latched_until_acknowledged_and_high_reannunciates():
    a = al.Alarms(5 * MIN)
    assert a.set("REFILL_DISCREPANCY", 1, 0)
    a.set("REFILL_DISCREPANCY", 0, 10)
    assert a.listing() == [["REFILL_DISCREPANCY", "medium", 0, 0, 0]]  # latched
    assert a.due(DAY) == []  # medium: annunciated once
    a.acknowledge("REFILL_DISCREPANCY")
    assert a.listing() == []
    a.set("OCCLUSION", 1, 0)
    a.acknowledge("OCCLUSION")
    assert a.listing()[0][3] == 1
    assert a.due(5 * MIN - 1) == []
    assert a.due(5 * MIN) == ["OCCLUSION"]
    assert a.listing()[0][3] == 0
    assert a.due(10 * MIN) == ["OCCLUSION"]
    a.set("OCCLUSION", 0, 11 * MIN)
    assert a.due(20 * MIN) == []  # condition over: no more re-annunciation


@pytest.mark.sr("SR-28", "SR-4")
def test_sr28_occlusion_alarm_latched_after_recovery():
    b = setup(D100)
    b.board.queue = ["occlusion"]
    b.advance(IV)
    assert b.active("OCCLUSION") and b.alarm("OCCLUSION")[1] == "high"
    b.advance(2 * IV)
    a = b.alarm("OCCLUSION")
    assert a is not None and a[2] == 0  # condition ended, still latched
    b.send("acknowledge", {"code": "all"})
    assert b.alarm("OCCLUSION") is None


# ====================================================================== SR-29


@pytest.mark.sr("SR-29", "SR-14")
def test_sr29_patient_bolus_lockout_edge():
    b = setup(D100, patient_bolus_ng=10_000, patient_lockout_ms=HOUR, patient_max_per_24h=3)
    t = 1000 * SEC
    b.advance(t)
    res = b.send("patient_bolus", {}, role="patient")
    assert res["ok"] and res["effect"]["bolus_ng"] == 10_000
    res = b.assert_refused(
        "LOCKOUT", lambda: b.send("patient_bolus", {}, role="patient"), t + HOUR - 1
    )
    assert res["allowed"] == 1  # ms until the next allowed request
    assert b.send("patient_bolus", {}, t + HOUR, role="patient")["ok"]
    assert len([s for s in b.strokes if s[1] == "patient_bolus"]) == 10


@pytest.mark.sr("SR-29")
def test_sr29_patient_maximum_per_24h_window_edge():
    b = setup(D100, patient_bolus_ng=5_000, patient_lockout_ms=MIN, patient_max_per_24h=2)
    t = 1000 * SEC
    b.advance(t)
    assert b.send("patient_bolus", {}, t, role="patient")["ok"]
    assert b.send("patient_bolus", {}, t + HOUR, role="patient")["ok"]
    res = b.assert_refused(
        "PATIENT_MAX", lambda: b.send("patient_bolus", {}, role="patient"), t + DAY - 1
    )
    assert res["allowed"] == 1
    assert b.send("patient_bolus", {}, t + DAY, role="patient")["ok"]


@pytest.mark.sr("SR-29", "SR-4")
def test_sr29_patient_bolus_counted_in_caps_and_role():
    b = setup(D100, patient_bolus_ng=10_000, patient_lockout_ms=HOUR, patient_max_per_24h=3)
    t = 1000 * SEC
    b.advance(t)
    b.assert_refused("WRONG_ROLE", lambda: b.send("patient_bolus", {}))
    w0 = b.status()["window_ng"][1]
    b.send("patient_bolus", {}, role="patient")
    b.advance(t + 11 * MIN)
    assert b.status()["window_ng"][1] == w0 + 10_000


# ====================================================================== SR-30


@pytest.mark.sr("SR-30")
def test_sr30_port_injection_is_a_bolus_event_in_the_caps():
    b = setup(D100)
    t = 1000 * SEC
    b.advance(t)
    b.assert_refused("NEEDS_CONFIRM", lambda: b.send("port_injection", {"dose_ng": 20_000}))
    w = b.status()["window_ng"]
    assert b.confirm("port_injection", {"dose_ng": 20_000})["ok"]
    assert b.status()["window_ng"] == [w[0] + 20_000, w[1] + 20_000]
    b.advance(t + HOUR)
    assert b.status()["window_ng"][1] < 20_000  # left the 1 h window at t + 1 h
    assert b.status()["window_ng"][0] >= 20_000


@pytest.mark.sr("SR-11")
def test_sr11_resume_after_a_short_stop_may_not_increase_the_dose():
    """A stop shorter than the restart-rule bands resumes at most the dose in effect."""
    b = setup(D100)
    b.advance(DAY)
    assert b.confirm("stop", {"reason": "procedure"})["ok"]
    b.advance(DAY + MIN)
    res = b.assert_refused("RESTART_CAP",
                           lambda: b.prepare("resume", {"daily_dose_ng": D100 + 1000}))
    assert res["allowed"] == D100
