"""The titration planner (sim/planner.py): label rules (reference worked values 1-2),
SR-8/SR-10 on every day of any plan, the refill calendar, and the plan as a
scenario that the controller itself executes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim import engine, planner
from sim import scenario as sc

UP_PCT = {"spinal": 30, "cerebral": 15, "paediatric": 15}  # SR-8 defaults
LABEL = {"spinal": (10, 30), "cerebral": (5, 15), "paediatric": (5, 15)}  # US label


@pytest.mark.parametrize("effect_h, rule, start", [
    (6, "us", 100), (10, "us", 50), (10, "eu", 100), (8, "us", 100), (12, "eu", 100),
    (12.5, "eu", 50)])
def test_worked_value_1_start_dose(effect_h, rule, start):
    """Reference worked value 1 (SR-10): screening 50 ug with 6 h effect -> 100 ug/day;
    10 h -> 50 (US 8 h rule) or 100 (EU 12 h rule)."""
    p = planner.plan("spinal", 50, effect_h, 400, 500, 20, rule=rule)
    assert p.start_dose_ug == start
    assert p.rows[0]["daily_dose_ug"] == start


@pytest.mark.parametrize("origin, step, day1", [("spinal", 30, 130), ("cerebral", 15, 115)])
def test_worked_value_2_next_day_ceiling(origin, step, day1):
    """Reference worked value 2 (SR-8): at 100 ug/day the next-day ceiling is 130
    (spinal) or 115 (cerebral) ug/day: a plan at the largest step reaches it."""
    p = planner.plan(origin, 50, 6, 400, 500, 20, step_pct=step)
    assert [r["daily_dose_ug"] for r in p.rows[:2]] == [100, day1]


@pytest.mark.parametrize("origin, step", [("spinal", 35), ("spinal", 5), ("cerebral", 20),
                                          ("paediatric", 16), ("cerebral", 0)])
def test_steps_outside_the_label_range_are_refused(origin, step):
    with pytest.raises(planner.PlanError, match="label range"):
        planner.plan(origin, 50, 6, 400, 500, 20, step_pct=step)


def test_a_target_below_the_start_limit_is_the_start():
    """Attack finding: SR-10 is a ceiling, never a floor: 100 ug screening with an 8 h
    effect allows 200 ug/day, but a 100 ug/day target starts (and stays) at 100."""
    p = planner.plan("spinal", 100, 8, 100, 500, 20, days=3)
    assert (p.start_limit_ug, p.start_dose_ug) == (200, 100)
    assert [r["daily_dose_ug"] for r in p.rows] == [100, 100, 100]


def test_a_fill_that_does_not_last_is_said():
    p = planner.plan("spinal", 50, 8, 1500, 500, 20, days=60)
    assert p.warnings and "does not last" in p.warnings[0]


@pytest.mark.parametrize("kwargs, match", [
    ({"concentration_ug_per_ml": 50}, "drug library"),
    ({"origin": "lumbar"}, "origin"),
    ({"rule": "uk"}, "rule"),
    ({"screening_dose_ug": 0}, "positive"),
    ({"screening_dose_ug": 50.05}, "0.1 ug"),
    ({"target_ug": 2500}, "hard maximum"),
    ({"fill_ml": 30}, "fill volume"),
    ({"days": 0}, "at least 1"),
    ({"target_ug": 0}, "positive"),
    ({"target_ug": -5}, "positive"),
    ({"target_ug": float("inf")}, "finite"),
    ({"screening_effect_h": float("nan")}, "finite"),
    ({"screening_effect_h": 200}, "0 to 168 h"),
    ({"capacity_ml": 0}, "capacity must be positive"),
])
def test_bad_plans_name_the_rule(kwargs, match):
    args = dict(origin="spinal", screening_dose_ug=50, screening_effect_h=6, target_ug=400,
                concentration_ug_per_ml=500, fill_ml=20)
    args.update(kwargs)
    with pytest.raises(planner.PlanError, match=match):
        planner.plan(**args)


@given(origin=st.sampled_from(sorted(LABEL)), screening=st.integers(250, 1000),
       effect_min=st.integers(0, 24 * 60), rule=st.sampled_from(["us", "eu"]),
       target=st.integers(200, 8000), conc=st.sampled_from([500, 1000, 2000]),
       step_frac=st.floats(0, 1), fill=st.integers(10, 20))
def test_every_plan_obeys_the_label_rules(origin, screening, effect_min, rule, target, conc,
                                          step_frac, fill):
    """Invariant (SR-8, SR-10, SR-19): day 0 is 2 x the screening dose (1 x when the
    effect outlasted 8 h, US, or 12 h, EU), or the target if lower, held for 24 h;
    each later
    day rises by at most the origin's up-cap and never falls; the plan ends at the
    target; mL/day is the dose at the concentration; with its refills the
    pessimistic reservoir never reaches the low-reservoir threshold (4 mL) again.
    Expectations are computed here, not by the planner."""
    screening_ug, target_ug, effect_h = screening / 10, target / 10, effect_min / 60
    lo, hi = LABEL[origin]
    step = round(lo + step_frac * (hi - lo))
    p = planner.plan(origin, screening_ug, effect_h, target_ug, conc, fill, rule=rule,
                     step_pct=step)
    limit_h = 12 if rule == "eu" else 8
    # SR-10 is a ceiling: the start is the lower of it and the target
    start = min(target_ug, screening_ug * (1 if effect_min > limit_h * 60 else 2))
    doses = [r["daily_dose_ug"] for r in p.rows]
    assert doses[0] == pytest.approx(start)
    for a, b in zip(doses, doses[1:], strict=False):
        assert a <= b <= a * (1 + UP_PCT[origin] / 100) + 1e-9
    assert doses[-1] == pytest.approx(target_ug)
    for r in p.rows:
        assert r["daily_ml"] == pytest.approx(r["daily_dose_ug"] / conc, abs=1e-6)
    for r in p.rows[1:]:
        assert r["reservoir_pess_ml"] > 4 or r["day"] in p.refills


def test_refill_calendar_leads_the_alarm():
    """The refill comes 4 days before the day the LOW_RESERVOIR alarm would start
    (reference: refill 3-5 days before the alarm date)."""
    p = planner.plan("spinal", 50, 6, 400, 500, 20, days=60)
    assert p.refills and len(p.refills) == len(p.low_reservoir_days)
    for refill, alarm in zip(p.refills, p.low_reservoir_days, strict=True):
        assert alarm - refill == planner.REFILL_LEAD_DAYS
    assert "refill" in p.rows[p.refills[0]]["note"]


def test_the_plan_runs_as_a_scenario_and_the_controller_executes_it():
    """The plan's scenario (prescription with the screening dose, a titrate event,
    refills) runs in the simulator: every command is accepted and the controller's
    programmed dose at the end of each day is the plan's dose for that day."""
    p = planner.plan("spinal", 50, 6, 300, 500, 20, days=30)
    s = sc.loads(p.scenario_toml(), "plan.toml")
    res = engine.Simulation(s).run()
    assert all(c["accepted"] for c in res.summary["commands"])
    got = [d["programmed_daily_dose_ug"] for d in res.summary["daily"]]
    assert got == pytest.approx([r["daily_dose_ug"] for r in p.rows])
    assert "LOW_RESERVOIR" not in [a["code"] for a in res.summary["alarms"]]
