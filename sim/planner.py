"""The clinician's titration planner (``itbsim titrate``): a day-by-day plan from
screening to a target dose, with the refill calendar.

Rules, all computed by the controller's own functions (no rule written twice):

- start dose: SR-10 (``itb.limits.start_limit_ng``): 2 x the effective screening
  dose, or 1 x if its effect lasted longer than 8 h (US label) / 12 h (EU label),
  held for the first 24 h (no increase in the first 24 h, US label);
- then one step per 24 h (SR-8/SR-13, ``itb.therapy.plan_doses``): each step is the
  previous dose x (100 + step) / 100, rounded toward the previous dose, the last
  step the target. The step must lie in the label's titration range for the origin
  (spinal +10-30 %, cerebral and children +5-15 % per 24 h, US label) and within
  the device's SR-8 up-cap; default: the middle of the label range (20 % / 10 %);
- volumes: daily dose / concentration, rounded up to whole nL; the reservoir
  after each day at nominal volume and at SR-19's pessimistic volume
  (``itb.reservoir.Reservoir``, tolerance from the device configuration); the
  low-reservoir alarm day is the first day SR-19's LOW_RESERVOIR condition holds;
  a refill is planned ``refill_lead_days`` (default 4, the reference's "3-5 days
  before the alarm date") before it, refilling to the fill volume.

``plan(...)`` returns a ``Plan`` (rows and the refill calendar);
``Plan.scenario_toml()`` writes the same plan as a scenario the simulator runs
(the controller then executes it as a ``titrate`` plan). Errors: ``PlanError``
(a ``ValueError``) naming the rule.
"""

import math

from itb import drugs, limits, therapy
from itb.reservoir import Reservoir
from itb.units import HOUR_MS, volume_nl_up

# US label titration ranges per 24 h (ITB_REFERENCE "Drug and labelled dosing")
LABEL_STEP_PCT = {"spinal": (10, 30), "cerebral": (5, 15), "paediatric": (5, 15)}
DEFAULT_STEP_PCT = {"spinal": 20, "cerebral": 10, "paediatric": 10}
REFILL_LEAD_DAYS = 4
MAX_EFFECT_H = 168  # the program's screening_effect range (7 days)


class PlanError(ValueError):
    """The plan asked for breaks a label rule (message names it)."""


class Plan:
    """``rows``: one dict per day (``day``, ``daily_dose_ug``, ``daily_ml``,
    ``reservoir_ml``, ``reservoir_pess_ml``, ``note``); ``refills``: planned refill
    days; ``low_reservoir_days``: days the LOW_RESERVOIR alarm would start;
    ``start_dose_ug`` (and the SR-10 ``start_limit_ug``), ``target_reached_day``,
    ``warnings``; the inputs as attributes."""

    def scenario_toml(self, name="titration plan", model="typical", seed=0):
        """The plan as a scenario file (TOML text) for ``itbsim run``."""
        lines = [
            f'name = "{name}"',
            f"duration_days = {len(self.rows)}",
            f"seed = {seed}",
            "",
            "[pump]",
            f"reservoir_capacity_ml = {_num(self.capacity_ml)}",
            "",
            "[drug]",
            f"concentration_ug_per_ml = {self.concentration_ug_per_ml}",
            f"fill_volume_ml = {_num(self.fill_ml)}",
            "",
            "[patient]",
            f'origin = "{self.origin}"',
            f'model = "{model}"',
            "",
            "[prescription]",
            f"daily_dose_ug = {_num(self.start_dose_ug)}",
            f"screening_dose_ug = {_num(self.screening_dose_ug)}",
            f"screening_effect_h = {_num(self.screening_effect_h)}",
            f'start_rule = "{self.rule}"',
        ]
        if self.target_ug > self.start_dose_ug:
            lines += ["", "[[events]]", 'at = "1d"',
                      f"titrate = {{ target_daily_dose_ug = {_num(self.target_ug)}, "
                      f'step_pct = {self.step_pct}, every = "24h" }}']
        for day in self.refills:
            lines += ["", "[[events]]", f'at = "{day}d 10h"',
                      f"refill = {{ volume_ml = {_num(self.fill_ml)}, "
                      f"concentration_ug_per_ml = {self.concentration_ug_per_ml} }}"]
        return "\n".join(lines) + "\n"


def _num(x):
    return f"{x:g}"


def plan(origin, screening_dose_ug, screening_effect_h, target_ug, concentration_ug_per_ml,
         fill_ml, days=None, rule="us", step_pct=None, capacity_ml=None, config=None,
         refill_lead_days=REFILL_LEAD_DAYS):
    """A titration plan. Amounts in ug (0.1 ug resolution), mL, hours; ``days``:
    plan length (default: until the target plus 14 days). Raises PlanError."""
    if origin not in LABEL_STEP_PCT:
        raise PlanError(f"origin must be one of {', '.join(LABEL_STEP_PCT)}")
    if rule not in ("us", "eu"):
        raise PlanError("rule must be us (8 h) or eu (12 h)")
    if not drugs.is_pump_concentration(concentration_ug_per_ml):
        lib = ", ".join(str(c) for c in drugs.PUMP_CONCENTRATIONS_UG_PER_ML)
        raise PlanError(f"{concentration_ug_per_ml} ug/mL is not in the drug library ({lib})")
    cfg = drugs.DeviceConfig(config)
    capacity_ml = cfg.reservoir_capacity_nl / 1e6 if capacity_ml is None else capacity_ml
    lo, hi = LABEL_STEP_PCT[origin]
    step = DEFAULT_STEP_PCT[origin] if step_pct is None else step_pct
    if not lo <= step <= hi:
        raise PlanError(f"step {step} % is outside the label range for {origin} origin"
                        f" ({lo}-{hi} % per 24 h)")
    if step > cfg.up_pct(origin):
        raise PlanError(f"step {step} % exceeds the device's SR-8 up-cap"
                        f" ({cfg.up_pct(origin)} %)")
    for name, v in (("screening dose", screening_dose_ug), ("target", target_ug),
                    ("screening effect", screening_effect_h), ("fill volume", fill_ml),
                    ("reservoir capacity", capacity_ml)):
        if not math.isfinite(v):
            raise PlanError(f"the {name} must be a finite number, got {v}")
    screening_ng = _ng(screening_dose_ug, "screening dose")
    if screening_ng <= 0:
        raise PlanError("the screening dose must be positive (SR-10)")
    if not 0 <= screening_effect_h <= MAX_EFFECT_H:
        raise PlanError(f"the screening effect duration must be 0 to {MAX_EFFECT_H} h"
                        " (the program's range)")
    if capacity_ml <= 0:
        raise PlanError("the reservoir capacity must be positive")
    if not 0 < fill_ml <= capacity_ml:
        raise PlanError(f"fill volume must be in (0, {capacity_ml:g}] mL")
    target = _ng(target_ug, "target")
    if target <= 0:
        raise PlanError("the target daily dose must be positive")
    if target > cfg.max_daily_dose_ng:
        raise PlanError(f"target exceeds the hard maximum daily dose"
                        f" ({cfg.max_daily_dose_ng / 1000:g} ug/day, SR-2)")
    # SR-10 is a ceiling: a target below it is the start dose itself
    limit = limits.start_limit_ng(screening_ng, int(round(screening_effect_h * HOUR_MS)), rule)
    start = min(target, limit)
    steps = therapy.plan_doses(start, target, step, True) if target > start else []
    # day 0: the start dose, held 24 h (SR-10); the plan's first step applies at 24 h
    doses = [start] + steps
    n = days if days is not None else len(doses) + 14
    if n < 1:
        raise PlanError("days must be at least 1")
    p = Plan()
    p.origin, p.rule, p.step_pct = origin, rule, step
    p.screening_dose_ug, p.screening_effect_h = screening_ng / 1000, screening_effect_h
    p.start_dose_ug = start / 1000
    p.start_limit_ug = limit / 1000  # SR-10; the start is lower when the target is
    p.target_ug = doses[-1] / 1000
    p.concentration_ug_per_ml = concentration_ug_per_ml
    p.fill_ml, p.capacity_ml = fill_ml, capacity_ml
    p.target_reached_day = len(doses) - 1 if steps else 0
    p.rows, p.refills, p.low_reservoir_days = [], [], []
    fill_nl = int(round(fill_ml * 1e6))
    daily_nl = [volume_nl_up(doses[min(d, len(doses) - 1)], concentration_ug_per_ml)
                for d in range(n + 400)]
    res = Reservoir(cfg.volume_accuracy_permille)
    res.concentration, res.fill_nl = concentration_ug_per_ml, fill_nl
    for day in range(n):
        dose = doses[min(day, len(doses) - 1)]
        notes = []
        if day == 0:
            notes.append("start (SR-10), held 24 h")
        elif day < len(doses) and dose != doses[day - 1]:
            notes.append(f"+{(dose - doses[day - 1]) * 100 / doses[day - 1]:.0f} %")
            if day == len(doses) - 1:
                notes.append("target")
        alarm = _alarm_day(res, daily_nl, day, cfg)
        if alarm is not None and alarm - refill_lead_days <= day and res.delivered_nl > 0:
            p.low_reservoir_days.append(alarm)
            p.refills.append(day)
            notes.append(f"refill to {fill_ml:g} mL (alarm due day {alarm})")
            res.fill_nl, res.delivered_nl = fill_nl, 0
        res.delivered_nl += daily_nl[day]
        p.rows.append({
            "day": day, "daily_dose_ug": dose / 1000, "daily_ml": daily_nl[day] / 1e6,
            "reservoir_ml": res.remaining_nl() / 1e6,
            "reservoir_pess_ml": res.pessimistic_nl() / 1e6, "note": "; ".join(notes),
        })
    p.next_low_reservoir_day = _alarm_day(res, daily_nl, n, cfg)
    p.warnings = []
    gaps = [b - a for a, b in zip(p.refills, p.refills[1:], strict=False)]
    if gaps and min(gaps) <= refill_lead_days + 1:
        p.warnings.append(f"refills {min(gaps)} day(s) apart: a {fill_ml:g} mL fill does not"
                          " last at this dose and concentration (a stronger concentration or"
                          " a larger fill is needed)")
    return p


def _alarm_day(res, daily_nl, day, cfg):
    """First day (from ``day``) at whose end SR-19's LOW_RESERVOIR condition holds
    without a refill; None if not within the horizon."""
    r = res.copy()
    for d in range(day, len(daily_nl)):
        r.delivered_nl += daily_nl[d]
        low, _soon = r.levels(daily_nl[d], cfg.low_reservoir_nl, cfg.low_reservoir_days)
        if low:
            return d
    return None


def _ng(ug, what):
    ng = round(ug * 1000)
    if abs(ng - ug * 1000) > 1e-6 or ng % 100:
        raise PlanError(f"{what} {ug} ug is not a multiple of 0.1 ug (SR-1)")
    return int(ng)


