"""ITB_REFERENCE.md "Worked values for tests" 1-6, one test each, through the runner.
Expected numbers are the reference's own arithmetic, redone by hand in comments."""

import itertools

import pytest
from helpers import DAY, HOUR, ML, SEC, Bench, setup
from itb import units
from itb.drugs import DeviceConfig


def _fresh(conc=500):
    b = Bench()
    assert b.confirm(
        "refill", {"aspirated_nl": 0, "volume_nl": 20 * ML, "concentration_ug_per_ml": conc}, 0
    )["ok"]
    assert b.confirm("prime", {"contents": "drug"}, 0)["ok"]
    return b


@pytest.mark.sr("SR-10")
@pytest.mark.parametrize(
    "effect_h,rule,start_ug", [(6, "us", 100), (10, "us", 50), (10, "eu", 100)]
)
def test_sr10_worked_value_1_start_dose(effect_h, rule, start_ug):
    # screening 50 ug: 6 h effect -> 2 x 50 = 100 ug/day; 10 h (> 8 h US) -> 1 x 50;
    # 10 h under the EU 12 h rule -> 100
    b = _fresh()
    args = {
        "origin": "spinal",
        "screening_dose_ng": 50_000,
        "screening_effect_ms": effect_h * HOUR,
        "start_rule": rule,
    }
    res = b.assert_refused(
        "START_RULE",
        lambda: b.prepare("program", dict(args, daily_dose_ng=start_ug * 1000 + 100)),
        0,
    )
    assert res["allowed"] == start_ug * 1000
    res = b.confirm("program", dict(args, daily_dose_ng=start_ug * 1000))
    assert res["ok"] and b.dose() == start_ug * 1000


@pytest.mark.sr("SR-8")
@pytest.mark.parametrize("origin,ceiling_ug_x10", [("spinal", 1300), ("cerebral", 1150)])
def test_sr8_worked_value_2_next_day_ceiling(origin, ceiling_ug_x10):
    # 100 ug/day spinal -> 130 (+30 %); cerebral -> 115 (+15 %)
    ceiling = ceiling_ug_x10 * 100
    b = setup(100_000, origin=origin)
    b.advance(DAY + HOUR)  # the next day
    res = b.assert_refused(
        "UP_CAP", lambda: b.prepare("set_daily_dose", {"daily_dose_ng": ceiling + 100})
    )
    assert res["allowed"] == ceiling
    assert b.confirm("set_daily_dose", {"daily_dose_ng": ceiling})["ok"]
    assert b.dose() == ceiling


@pytest.mark.sr("SR-21", "SR-3")
@pytest.mark.parametrize("conc,ml_per_day_x1000,strokes_per_day", [(500, 200, 100), (2000, 50, 25)])
def test_sr21_worked_value_3_volume_rate(conc, ml_per_day_x1000, strokes_per_day):
    # 100 ug/day / 500 ug/mL = 0.200 mL/day; / 2000 ug/mL = 0.050 mL/day (2 uL strokes)
    b = _fresh(conc)
    res = b.confirm("program", {"daily_dose_ng": 100_000, "origin": "spinal"}, 0)
    assert res["effect"]["volume_nl_per_day"] == ml_per_day_x1000 * 1000
    b.advance(DAY)
    assert len(b.strokes) == strokes_per_day
    assert b.status()["reservoir_nl"] == 20 * ML - ml_per_day_x1000 * 1000


@pytest.mark.sr("SR-19")
def test_sr19_worked_value_4_reservoir_alarms_and_delivery_to_the_switch():
    # 20 mL at 0.5 mL/day (250 ug/day at 500 ug/mL), tol 10 %: R_p = 20 - 1.10 V
    b = setup(250_000, config={"volume_accuracy_permille": 100})
    stroke_ms = 345_600  # 2 uL at 0.5 mL/day
    b.advance(29 * DAY)
    assert b.alarm("LOW_RESERVOIR") is None
    b.advance(29 * DAY + DAY // 5)
    low = b.alarm("LOW_RESERVOIR")
    assert low is not None and low[1] == "medium"
    assert 29 * DAY < low[4] <= 29 * DAY + DAY // 5
    # 1.1 V >= 16 mL -> V >= 14.545 mL -> stroke 7273 (ceil of 7272.7)
    assert low[4] == 7273 * stroke_ms
    # nominal remainder: 4 mL after 32 days, 2 mL after 36 days
    b.advance(32 * DAY)
    assert b.status()["reservoir_nl"] == 4 * ML
    b.advance(36 * DAY)
    assert b.status()["reservoir_nl"] == 2 * ML
    assert b.alarm("RESERVOIR_EMPTY_SOON") is None
    b.advance(36 * DAY + DAY // 2)
    soon = b.alarm("RESERVOIR_EMPTY_SOON")
    assert soon is not None and soon[1] == "high"
    assert 36 * DAY + 3 * DAY // 10 < soon[4] <= 36 * DAY + DAY // 2
    # 1.1 V >= 20 mL -> V >= 18.18 mL -> stroke 9091
    assert soon[4] == 9091 * stroke_ms
    # 40 days: computed empty; delivery goes on (the controller never stops on a number)
    b.advance(40 * DAY)
    assert b.status()["reservoir_nl"] == 0
    n = len(b.strokes)
    b.advance(41 * DAY)
    assert len(b.strokes) - n == 250
    assert b.alarm("RESERVOIR_EMPTY") is None
    # ... until the syringe-empty switch trips
    b.r.empty_switch(41 * DAY + 1, 1)
    assert b.active("RESERVOIR_EMPTY") and b.alarm("RESERVOIR_EMPTY")[1] == "high"
    n = len(b.strokes)
    b.advance(43 * DAY)
    assert len(b.strokes) == n


@pytest.mark.sr("SR-22", "SR-21")
def test_sr22_worked_value_5_dead_volume_after_trimming():
    # catheter 110 cm trimmed by 20 cm -> 90 cm x 0.0026 mL/cm = 0.234 mL; + 0.140 mL
    assert units.dead_volume_nl(140_000, 900) - 140_000 == 234_000
    assert units.dead_volume_nl(140_000, 900) == 374_000
    assert DeviceConfig({"catheter_length_mm": 1100 - 200}).dead_volume_nl == 374_000
    # at 0.2 mL/day the old concentration keeps reaching the patient for
    # 0.374 / 0.2 = 1.87 days after a refill (187 strokes of 2 uL)
    b = setup(100_000)
    t = 100 * SEC
    b.advance(t)
    assert b.confirm(
        "refill", {"aspirated_nl": 20 * ML, "volume_nl": 20 * ML, "concentration_ug_per_ml": 1000}
    )["ok"]
    b.advance(t + 4 * DAY)
    after = [s[0] for s in b.strokes if s[0] > t]
    iv = [y - x for x, y in itertools.pairwise(after)]
    old = 1 + iv.index(2 * 864 * SEC)  # strokes at the old 0.2 mL/day rate
    assert old == 187
    span = after[old - 1] - t  # refill to the last stroke of old fluid
    assert 1.87 * DAY - 864 * SEC < span <= 1.87 * DAY


@pytest.mark.sr("SR-20")
def test_sr20_worked_value_6_refill_reconciliation():
    # 20 mL, 30 days at 0.5 mL/day -> 15 mL should have left
    b = setup(250_000)
    b.advance(30 * DAY)
    assert b.status()["reservoir_nl"] == 5 * ML
    refill = {"volume_nl": 20 * ML, "concentration_ug_per_ml": 500}
    # aspirated 2.0 mL -> 18 mL removed; |15 - 18| = 3 > max(2.175, 0.5) -> flagged
    bad = b.prepare("refill", dict(refill, aspirated_nl=2 * ML))
    assert bad["effect"]["discrepancy_nl"] == 3 * ML
    assert bad["effect"]["discrepancy_flagged"] == 1
    # aspirated 4.0 mL -> 16 mL removed; 1 mL -> no flag
    good = b.prepare("refill", dict(refill, aspirated_nl=4 * ML))
    assert good["effect"]["discrepancy_nl"] == 1 * ML
    assert good["effect"]["discrepancy_flagged"] == 0
    assert b.alarm("REFILL_DISCREPANCY") is None
    bad = b.prepare("refill", dict(refill, aspirated_nl=2 * ML))
    assert b.send("confirm", {"hash": bad["hash"]})["ok"]
    a = b.alarm("REFILL_DISCREPANCY")
    assert a is not None and a[1] == "medium"
    assert b.status()["reservoir_nl"] == 20 * ML
