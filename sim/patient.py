"""Patient model for the simulator: intrathecal baclofen kinetics, effect, tolerance.

ILLUSTRATIVE, NOT VALIDATED. Every model-derived output (spasticity on the Modified
Ashworth Scale, withdrawal risk, sedation) is marked with ``MODEL_NOTE`` (``state()``
carries it under "note"). The numbers are shaped to the published ranges in
shared/reference/ITB_REFERENCE.md ("Pharmacokinetics" and its consistency notes), not
fitted to patient data; they must never be read as a clinical prediction.

State and equations
-------------------
Three linear states, all in ng/mL, time t in hours:

* ``C``, lumbar CSF concentration at the catheter tip: one compartment of volume ``V`` mL
  with clearance ``CL`` mL/h, elimination rate ``k = CL / V = ln 2 / t1/2``. A dose of
  ``m`` ng arriving at the tip is an impulse::

      dC/dt = -k C                  dose:  C += m / V

* ``Ce``, effect-site concentration (delayed-effect compartment, rate ``ke0``; the MAS
  effect of intrathecal baclofen fits such a model, Heetla et al. 2016)::

      dCe/dt = ke0 (C - Ce)

* ``A``, adapted level (tolerance), following Ce with a time constant of weeks::

      dA/dt = (Ce - A) / tau_tol

The system is a lower-triangular cascade with rates ``a = k``, ``b = ke0``,
``c = 1 / tau_tol``, so between doses it is propagated EXACTLY (never integrated
numerically). With ``f(x) = exp(-x t)`` and its divided differences::

      C(t)  = e^{-a t} C0
      Ce(t) = e^{-b t} Ce0 + b D(a, b) C0
      A(t)  = e^{-c t} A0  + c D(b, c) Ce0 + b c f[a, b, c] C0

      D(a, b)    = -f[a, b] = (e^{-a t} - e^{-b t}) / (b - a)      (t e^{-a t} if a = b)
      f[a, b, c] = sum_i e^{-r_i t} / prod_{j != i} (r_j - r_i)    (t^2 e^{-a t} / 2 if all equal)

Both are evaluated in forms that stay accurate (to a few units in the last place) for
equal and nearly equal rates: ``_d2`` uses a sinh form, ``_d3`` a power series around the
mean rate unless the rates are well apart. The six coefficients depend only on the step
length, so they are cached per step (strokes are regular; the cache is bounded): ``dose``
costs a dictionary look-up and a few multiplications.

Outputs (all ``MODEL_NOTE``)::

      EC50_eff   = EC50 + g A                                    tolerance, gain g
      E          = Ce^h / (EC50_eff^h + Ce^h)                      sigmoid Emax, Hill h
      MAS        = MAS_baseline - (MAS_baseline - MAS_floor) E
      sedation   = Ce^s / ((F EC50_eff)^s + Ce^s)                  F = sed_factor, s = sed_hill
      withdrawal = w(A) * clamp(1 - Ce / (theta A), 0, 1)
      w(A)       = A^2 / (A^2 + (w50 EC50)^2)                      adaptation weight

The withdrawal risk is 0 while ``Ce >= theta A`` and rises linearly to ``w(A)`` as
``Ce -> 0``. The weight keeps a drug-naive patient given a screening bolus (A of about
1 ng/mL) at essentially no risk, while an established patient (A comparable to EC50)
reaches 0.9 or more once the drug is gone. Sedation and the tolerance share EC50_eff, so
restarting the pre-holiday dose after tolerance has decayed sedates (ITB_REFERENCE
"restart after interruption").

Parameters (typical patient) and sources
----------------------------------------
"project choice" marks a value that is not a published figure.

* CL = 25 mL/h: the label's steady-state pairs (130 ng/mL at 50 ug/day, 1240 ng/mL at
  1200 ug/day) imply CL of 16 and 40 mL/h; 25 is their geometric mean and lies inside the
  measured 13-80 mL/h. (ITB_REFERENCE rows "CSF clearance", "steady-state lumbar CSF
  concentration".)
* t1/2 = 2.7 h, inside 1-5 h ("CSF half-life after bolus"); V = CL t1/2 / ln 2 = 97 mL,
  inside 22-157 mL ("CSF volume of distribution").
* ke0 = 0.26 /h: with k = 0.257 /h the effect-site peak after a bolus is at
  ln(b / a) / (b - a) = 3.9 h (label: "peak about 4 h"). The Bateman shape is symmetric in
  (k, ke0) and narrowest for a given peak time when k = ke0, which is what lets one
  curve meet onset, peak and duration together. ("bolus onset / peak / duration" row.)
* EC50 = 200 ng/mL, Hill h = 2.7: project choice, shaped to the bolus and infusion time
  courses below; a 50 ug screening bolus gives a 1.4-point MAS reduction (a positive
  screening test) and the label's starting dose (2 x 50 ug/day) about 1.1 points.
* MAS baseline 3.5, floor 0.5 (paediatric baseline 3.0): project choice, an untreated
  spastic patient and residual tone the drug does not remove.
* tau_tol = 1500 h (about 9 weeks), g = 0.65: project choice shaped to Heetla 2009 ("dose
  rises over the first 18 months then plateaus near 350 ug/day", "tolerance" row). A
  clinician holding the effect at E = r^h / (1 + r^h) sets Ce = r (EC50 + g A), so
  dA/dt = (r EC50 - (1 - r g) A) / tau_tol: the dose rises from r EC50 CL to
  r EC50 CL / (1 - r g) with the time constant tau_tol / (1 - r g). For a 1.5-point target
  (r = 1) that is 2.9 x tau_tol = 6 months (plateau after about 18 months) and a plateau of
  2.9 x the starting dose; a weekly-titration simulation of the typical patient gives
  about 145 ug/day at month 1 and 345 ug/day from month 15 on.
* sed_factor F = 5, sed_hill s = 4: project choice ("overdose" row): sedation is
  negligible at maintenance and after a 50 ug bolus, about 0.45 after 250 ug and above 0.9
  after 500 ug in a drug-naive typical patient.
* theta = 0.5, w50 = 0.2: project choice ("withdrawal time course" row: early signs within
  hours to a day, severe over 24-72 h). After an abrupt stop of an established therapy the
  risk starts to rise about 6-8 h later and exceeds 0.9 by 24 h; a single 20 % reduction
  (the project's taper cap per 24 h) keeps Ce above theta A.

Readings chosen where the published figures need one
----------------------------------------------------
* Bolus time course (50 ug screening bolus, drug-naive typical patient; "reduction" is the
  MAS drop below the pre-dose score): onset = first time the reduction reaches 25 % of its
  peak; peak = time of the largest reduction; duration = time the reduction stays at or
  above 50 % of its peak (full width at half maximum). One fraction for both onset and
  duration cannot fit 0.5-1 h / about 4 h / 4-8 h with a first-order cascade (the fall is
  always slower than the rise), so onset uses "first noticeable" and duration "half
  maximum". Typical: onset 0.9 h, peak 3.9 h, duration 7.0 h.
* Continuous infusion (drug-naive typical patient on the label's starting dose, 2 x the
  50 ug screening dose = 100 ug/day): "effect from 6-8 h" = the reduction reaches 25 % of
  its maximum over the first 7 days (the bolus onset fraction); "maximal at 24-48 h" = that
  maximum occurs between 24 and 48 h (the label's "maximum activity is observed in 24 to
  48 hours"). Tolerance makes it a true maximum: the effect then declines slowly.
  Typical: onset 6.7 h, maximum at 34 h; 95 % of the maximum is reached at 20 h. The
  stricter reading "95 % of the final effect not before 24 h" was tried and not chosen:
  it needs the slower of k and ke0 at about 0.14 /h (k about 0.42 /h for a 4 h bolus
  peak), which puts the bolus onset and duration, the infusion onset and the time of the
  maximum all within 5-10 % of their range limits, and cohort medians outside them.
* Steady state: the model is linear, so one patient cannot sit at 130 ng/mL at 50 ug/day
  and at 1240 ng/mL at 1200 ug/day (CL 16 and 40 mL/h). The labelled ranges are read as a
  population statement (consistency notes): in a cohort of patients on doses spread over
  50-1200 ug/day the median steady-state lumbar concentration lies in 130-1240 ng/mL and
  at least 75 % of individuals do. The doses are drawn log-normal around the range's
  geometric centre (245 ug/day) with 95 % of them inside 50-1200 ug/day, truncated to it:
  clinical doses cluster mid-range (label maintenance rows: typical 300-800 spinal,
  90-703 cerebral), and the range's ends are rare. Seeded cohorts of 200 give medians of
  376-456 ng/mL with 82-87 % inside. With log-uniform doses 69-74 % lie inside: the
  ceiling for a cohort sharing one clearance is ln 9.5 / ln 24 = 71 %, because the
  concentration range (x 9.5) is narrower than the dose range (x 24); in practice doses
  are titrated to effect, so high-clearance patients receive the high doses.
* Cohort: CL and t1/2 are drawn jointly (bivariate log-normal, correlation -0.4, SDs in
  ``COHORT_SD``), truncated to 13-80 mL/h and 1-5 h, and kept only if the derived V lies in
  22-157 mL; independent sampling of the published ranges would give half-lives of 0.2-8 h
  and concentrations far outside the labelled range (consistency notes). PD values vary
  log-normally around the named model. Cohort medians stay in the labelled ranges (100
  patients: bolus onset 0.9 h, peak 3.8 h, duration 7.2 h; infusion onset 6.3 h, maximum
  at 34 h).
"""

import math
import random

MODEL_NOTE = "illustrative, not validated"

ORIGINS = ("spinal", "cerebral", "paediatric")

# Published ranges the cohort is kept inside (ITB_REFERENCE "Pharmacokinetics").
CL_RANGE_ML_PER_H = (13.0, 80.0)
HALF_LIFE_RANGE_H = (1.0, 5.0)
V_RANGE_ML = (22.0, 157.0)

_MS_PER_H = 3_600_000.0
_CACHE_MAX = 256  # distinct step lengths kept; strokes are regular, so a few suffice


class PatientParams:
    """One patient's parameters (floats) with its name and origin; ``v_ml`` is derived.

    Fields (sources and values in the module docstring):

    * name, origin ("spinal", "cerebral" or "paediatric")
    * cl_ml_per_h (CL), half_life_h (CSF t1/2); v_ml = CL t1/2 / ln 2 and
      k_per_h = ln 2 / t1/2 are properties
    * ke0_per_h (effect-site rate), ec50_ng_per_ml, hill (sigmoid Emax on the MAS)
    * mas_baseline (untreated score), mas_floor (score at full effect), both 0-4
    * tol_tau_h (time constant of the adapted level A), tol_gain (EC50_eff = EC50 + g A)
    * sed_factor, sed_hill (sedation half-point at sed_factor x EC50_eff, steepness)
    * withdrawal_theta (risk starts when Ce < theta A), withdrawal_a50 (A at which the
      adaptation weight is 1/2, as a fraction of EC50)

    Values are checked on construction (ValueError naming the field)."""

    __slots__ = (
        "name",
        "origin",
        "cl_ml_per_h",
        "half_life_h",
        "ke0_per_h",
        "ec50_ng_per_ml",
        "hill",
        "mas_baseline",
        "mas_floor",
        "tol_tau_h",
        "tol_gain",
        "sed_factor",
        "sed_hill",
        "withdrawal_theta",
        "withdrawal_a50",
    )

    def __init__(
        self,
        name,
        origin,
        cl_ml_per_h,
        half_life_h,
        ke0_per_h,
        ec50_ng_per_ml,
        hill,
        mas_baseline=3.5,
        mas_floor=0.5,
        tol_tau_h=1260.0,
        tol_gain=0.5,
        sed_factor=5.0,
        sed_hill=4.0,
        withdrawal_theta=0.5,
        withdrawal_a50=0.2,
    ):
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {', '.join(ORIGINS)}, got {origin!r}")
        self.name = str(name)
        self.origin = origin
        self.cl_ml_per_h = _positive("cl_ml_per_h", cl_ml_per_h)
        self.half_life_h = _positive("half_life_h", half_life_h)
        self.ke0_per_h = _positive("ke0_per_h", ke0_per_h)
        self.ec50_ng_per_ml = _positive("ec50_ng_per_ml", ec50_ng_per_ml)
        self.hill = _positive("hill", hill)
        self.mas_baseline = float(mas_baseline)
        self.mas_floor = float(mas_floor)
        if not 0.0 <= self.mas_floor < self.mas_baseline <= 4.0:
            raise ValueError("need 0 <= mas_floor < mas_baseline <= 4 (Modified Ashworth Scale)")
        self.tol_tau_h = _positive("tol_tau_h", tol_tau_h)
        self.tol_gain = float(tol_gain)
        if not self.tol_gain >= 0.0:
            raise ValueError(f"tol_gain must be >= 0, got {tol_gain!r}")
        self.sed_factor = _positive("sed_factor", sed_factor)
        self.sed_hill = _positive("sed_hill", sed_hill)
        self.withdrawal_theta = float(withdrawal_theta)
        if not 0.0 < self.withdrawal_theta <= 1.0:
            raise ValueError(f"withdrawal_theta must be in (0, 1], got {withdrawal_theta!r}")
        self.withdrawal_a50 = _positive("withdrawal_a50", withdrawal_a50)

    @property
    def v_ml(self):
        """CSF volume of distribution, derived: CL * t1/2 / ln 2."""
        return self.cl_ml_per_h * self.half_life_h / math.log(2.0)

    @property
    def k_per_h(self):
        """Elimination rate constant CL / V = ln 2 / t1/2."""
        return math.log(2.0) / self.half_life_h

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        unknown = set(changes) - set(fields)
        if unknown:
            raise ValueError(f"unknown PatientParams field(s): {', '.join(sorted(unknown))}")
        fields.update(changes)
        return PatientParams(**fields)

    def as_dict(self):
        out = {name: getattr(self, name) for name in self.__slots__}
        out["v_ml"] = self.v_ml
        return out

    def __eq__(self, other):
        if not isinstance(other, PatientParams):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __hash__(self):
        return hash(tuple(getattr(self, n) for n in self.__slots__))

    def __repr__(self):
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"PatientParams({inner})"


def _positive(field, value):
    value = float(value)
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{field} must be a positive finite number, got {value!r}")
    return value


def _d2(a, b, t):
    """(e^{-a t} - e^{-b t}) / (b - a), i.e. -f[a, b] for f(x) = e^{-x t}; t e^{-a t} if a = b.

    With m = (a + b) / 2 and x = (b - a) t / 2 it equals t e^{-m t} sinh(x) / x, which has
    no cancellation and is used for |x| < 1; beyond that the difference of exponentials
    is itself well conditioned (and sinh could overflow)."""
    x = 0.5 * (b - a) * t
    if x == 0.0:
        return t * math.exp(-a * t)
    if abs(x) < 1.0:
        return t * math.exp(-0.5 * (a + b) * t) * (math.sinh(x) / x)
    return (math.exp(-a * t) - math.exp(-b * t)) / (b - a)


def _d3(a, b, c, t):
    """Second divided difference f[a, b, c] of f(x) = e^{-x t} (positive; symmetric).

    Equals sum_i e^{-r_i t} / prod_{j != i} (r_j - r_i) for distinct rates and t^2 e^{-a t} / 2
    when all are equal. When the rates are spread (spread x t >= 1) it is computed as
    (D(r0, r1) - D(r1, r2)) / (r2 - r0) with the rates sorted, which is well conditioned
    there. Otherwise (equal or close rates, where that difference would cancel twice) the
    power series around the mean m is summed: with e_i = (m - r_i) t,
    f[a, b, c] = t^2 e^{-m t} sum_{n >= 0} h_n(e_0, e_1, e_2) / (n + 2)!, h_n the complete
    homogeneous symmetric polynomial of degree n; |e_i| < 1 makes it converge fast."""
    r0, r1, r2 = sorted((a, b, c))
    spread_t = (r2 - r0) * t
    if spread_t >= 1.0:
        return (_d2(r0, r1, t) - _d2(r1, r2, t)) / (r2 - r0)
    m = (r0 + r1 + r2) / 3.0
    e0, e1, e2 = (m - r0) * t, (m - r1) * t, (m - r2) * t
    h1 = h2 = h3 = 1.0  # h_n of (e0), (e0, e1), (e0, e1, e2); h_0 = 1
    fact = 2.0
    total = 0.5
    for n in range(1, 30):
        h1 *= e0
        h2 = h2 * e1 + h1
        h3 = h3 * e2 + h2
        fact *= n + 2
        total += h3 / fact
        # |h_n| <= (n + 1)(n + 2) / 2 * spread_t^n bounds every remaining term
        if (n + 2) * (n + 3) * 0.5 * spread_t ** (n + 1) / (fact * (n + 3)) < 1e-18:
            break
    return t * t * math.exp(-m * t) * total


def _sigmoid(ratio, hill):
    """ratio^hill / (1 + ratio^hill) without overflow (ratio >= 0)."""
    if ratio >= 1.0:
        return 1.0 / (1.0 + (1.0 / ratio) ** hill)
    x = ratio**hill
    return x / (1.0 + x)


def propagator(params, dt_h):
    """Exact one-step coefficients (ek, p_ce_c, ee, p_a_c, p_a_ce, et) for a step of dt_h hours.

    New state: C' = ek C; Ce' = ee Ce + p_ce_c C; A' = et A + p_a_ce Ce + p_a_c C."""
    a = params.k_per_h
    b = params.ke0_per_h
    c = 1.0 / params.tol_tau_h
    t = float(dt_h)
    return (
        math.exp(-a * t),
        b * _d2(a, b, t),
        math.exp(-b * t),
        b * c * _d3(a, b, c, t),
        c * _d2(b, c, t),
        math.exp(-c * t),
    )


class Patient:
    """One simulated patient driven by drug masses arriving at the catheter tip.

    ``t_ms`` is the simulator's clock in integer milliseconds; it never goes back.
    ``steady_daily_dose_ug > 0`` starts an established therapy: C and Ce at the steady
    state of that continuous dose and, with ``adapted=True``, the adapted level A equal to
    it (tolerance at equilibrium); ``adapted=False`` gives the same concentrations with no
    tolerance (A = 0, as after a long drug holiday). 0 starts a drug-naive patient."""

    __slots__ = (
        "params",
        "_t",
        "_c",
        "_ce",
        "_a",
        "_inv_v",
        "_cache",
    )

    def __init__(self, params, t_ms=0, steady_daily_dose_ug=0.0, adapted=True):
        if not isinstance(params, PatientParams):
            raise ValueError("params must be a PatientParams (see patient_params / cohort)")
        if steady_daily_dose_ug < 0:
            raise ValueError(f"steady_daily_dose_ug must be >= 0, got {steady_daily_dose_ug!r}")
        self.params = params
        self._t = t_ms
        self._inv_v = 1.0 / params.v_ml
        self._cache = {}
        c_ss = self.steady_state_csf_ng_per_ml(steady_daily_dose_ug)
        self._c = c_ss
        self._ce = c_ss
        self._a = c_ss if adapted else 0.0

    @property
    def t_ms(self):
        return self._t

    def steady_state_csf_ng_per_ml(self, daily_dose_ug):
        """Mean lumbar CSF concentration at steady state of a continuous dose: R / CL."""
        return daily_dose_ug * 1000.0 / 24.0 / self.params.cl_ml_per_h

    def _coefficients(self, dt):
        coef = self._cache.get(dt)
        if coef is None:
            if dt < 0:
                raise ValueError(
                    f"time went back: t_ms {self._t + dt} is before the patient's {self._t}"
                )
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            coef = propagator(self.params, dt / _MS_PER_H)
            self._cache[dt] = coef
        return coef

    def advance(self, t_ms):
        """Propagate the state exactly to ``t_ms`` (ValueError if before the current time)."""
        dt = t_ms - self._t
        if dt:
            ek, p_ce_c, ee, p_a_c, p_a_ce, et = self._coefficients(dt)
            c = self._c
            ce = self._ce
            self._a = et * self._a + p_a_ce * ce + p_a_c * c
            self._ce = ee * ce + p_ce_c * c
            self._c = ek * c
            self._t = t_ms

    def dose(self, t_ms, mass_ng):
        """Advance to ``t_ms``, then add ``mass_ng`` ng at the catheter tip (impulse into C)."""
        if mass_ng < 0:
            raise ValueError(f"mass_ng must be >= 0, got {mass_ng!r}")
        dt = t_ms - self._t
        if dt:
            coef = self._cache.get(dt)
            if coef is None:
                coef = self._coefficients(dt)
            ek, p_ce_c, ee, p_a_c, p_a_ce, et = coef
            c = self._c
            ce = self._ce
            self._a = et * self._a + p_a_ce * ce + p_a_c * c
            self._ce = ee * ce + p_ce_c * c
            self._c = ek * c + mass_ng * self._inv_v
            self._t = t_ms
        else:
            self._c += mass_ng * self._inv_v

    def effective_ec50_ng_per_ml(self):
        """EC50 raised by tolerance: EC50 + g A (MODEL_NOTE)."""
        p = self.params
        return p.ec50_ng_per_ml + p.tol_gain * self._a

    def state(self):
        """Concentrations (ng/mL) and the model indices; "note" carries MODEL_NOTE."""
        p = self.params
        ce = self._ce
        a = self._a
        ec50 = p.ec50_ng_per_ml + p.tol_gain * a
        effect = _sigmoid(ce / ec50, p.hill)
        sedation = _sigmoid(ce / (p.sed_factor * ec50), p.sed_hill)
        withdrawal = 0.0
        limit = p.withdrawal_theta * a
        if ce < limit:  # hence limit > 0
            a50 = p.withdrawal_a50 * p.ec50_ng_per_ml
            withdrawal = a * a / (a * a + a50 * a50) * (1.0 - ce / limit)
        return {
            "t_ms": self._t,
            "csf_ng_per_ml": self._c,
            "effect_ng_per_ml": ce,
            "adapted_ng_per_ml": a,
            "ec50_effective_ng_per_ml": ec50,
            "mas": p.mas_baseline - (p.mas_baseline - p.mas_floor) * effect,
            "withdrawal_risk": withdrawal,
            "sedation": sedation,
            "note": MODEL_NOTE,
        }


# Named models (MODEL_NOTE). PK values are inside the published ranges; PD values are the
# project's shaping of the label's time course (see the module docstring).
_TYPICAL = dict(
    origin="spinal",
    cl_ml_per_h=25.0,
    half_life_h=2.7,
    ke0_per_h=0.26,
    ec50_ng_per_ml=200.0,
    hill=2.7,
    mas_baseline=3.5,
    mas_floor=0.5,
    tol_tau_h=1500.0,
    tol_gain=0.65,
    sed_factor=5.0,
    sed_hill=4.0,
    withdrawal_theta=0.5,
    withdrawal_a50=0.2,
)

PATIENTS = {
    "typical": PatientParams("typical", **_TYPICAL),
    "fast-clearance": PatientParams(
        "fast-clearance", **{**_TYPICAL, "cl_ml_per_h": 60.0, "half_life_h": 1.6}
    ),
    "slow-clearance": PatientParams(
        "slow-clearance", **{**_TYPICAL, "cl_ml_per_h": 14.0, "half_life_h": 4.5}
    ),
    "high-tolerance": PatientParams(
        "high-tolerance", **{**_TYPICAL, "tol_tau_h": 1000.0, "tol_gain": 0.85}
    ),
    "paediatric": PatientParams(
        "paediatric",
        **{
            **_TYPICAL,
            "origin": "paediatric",
            "cl_ml_per_h": 15.0,
            "half_life_h": 2.5,
            "mas_baseline": 3.0,
        },
    ),
}


def patient_params(name):
    """The named model ``name``; ValueError listing the known names otherwise."""
    try:
        return PATIENTS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(PATIENTS))
        raise ValueError(f"unknown patient model {name!r}; known: {known}") from None


# Between-patient variability (log-normal SDs unless stated). Project choices: wide enough
# that a 200-patient cohort spans most of the published PK ranges, narrow enough that
# the cohort medians of the bolus time course stay in the labelled ranges.
COHORT_SD = {
    "cl": 0.35,  # ln CL; with the truncation covers 13-80 mL/h
    "half_life": 0.30,  # ln t1/2
    "rho_cl_half_life": -0.4,  # V (anatomical) varies less than CL and t1/2 alone would give
    "ke0": 0.20,
    "ec50": 0.30,
    "hill": 0.10,
    "mas_baseline": 0.25,  # additive, uniform +/- 2 x this, clipped to [floor + 1, 4]
    "tol_tau": 0.30,
    "tol_gain": 0.15,  # clipped to <= 0.95
    "sed_factor": 0.20,
}
_MAX_DRAWS = 10_000


def cohort(n, seed, model="typical"):
    """``n`` patients around the named ``model`` (its values are the centres); deterministic
    for a seed. CL and t1/2 are drawn jointly (bivariate log-normal), truncated to the
    published 13-80 mL/h and 1-5 h, and kept only if the derived V lies in 22-157 mL."""
    centre = patient_params(model)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    rng = random.Random(seed)
    sd = COHORT_SD
    rho = sd["rho_cl_half_life"]
    ln2 = math.log(2.0)
    out = []
    for i in range(n):
        for _ in range(_MAX_DRAWS):
            z1 = rng.gauss(0.0, 1.0)
            z2 = rho * z1 + math.sqrt(1.0 - rho * rho) * rng.gauss(0.0, 1.0)
            cl = centre.cl_ml_per_h * math.exp(sd["cl"] * z1)
            half = centre.half_life_h * math.exp(sd["half_life"] * z2)
            v = cl * half / ln2
            if (
                CL_RANGE_ML_PER_H[0] <= cl <= CL_RANGE_ML_PER_H[1]
                and HALF_LIFE_RANGE_H[0] <= half <= HALF_LIFE_RANGE_H[1]
                and V_RANGE_ML[0] <= v <= V_RANGE_ML[1]
            ):
                break
        else:  # pragma: no cover - only with a centre far outside the published ranges
            raise ValueError(f"model {model!r} is too far outside the published PK ranges")
        baseline = centre.mas_baseline + rng.uniform(-2.0, 2.0) * sd["mas_baseline"]
        baseline = min(4.0, max(centre.mas_floor + 1.0, baseline))
        out.append(
            centre.replace(
                name=f"{model}-{i:03d}",
                cl_ml_per_h=cl,
                half_life_h=half,
                ke0_per_h=centre.ke0_per_h * math.exp(sd["ke0"] * rng.gauss(0.0, 1.0)),
                ec50_ng_per_ml=centre.ec50_ng_per_ml * math.exp(sd["ec50"] * rng.gauss(0.0, 1.0)),
                hill=centre.hill * math.exp(sd["hill"] * rng.gauss(0.0, 1.0)),
                mas_baseline=baseline,
                tol_tau_h=centre.tol_tau_h * math.exp(sd["tol_tau"] * rng.gauss(0.0, 1.0)),
                tol_gain=min(
                    0.95, centre.tol_gain * math.exp(sd["tol_gain"] * rng.gauss(0.0, 1.0))
                ),
                sed_factor=centre.sed_factor * math.exp(sd["sed_factor"] * rng.gauss(0.0, 1.0)),
            )
        )
    return out
