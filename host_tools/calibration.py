"""Gravimetric stroke calibration: the volume of one stroke from balance readings
taken before the first stroke and after each stroke (``itbctl calibrate``).

    from host_tools import calibration, gravimetry
    t_s, m_g = gravimetry.read_readings("calibration.csv")
    result = calibration.analyse(t_s, m_g, stroke_nl=2000, temperature_c=21.5)
    print(calibration.summary_text(result))

**Method** (the gravimetric method of ISO 8655-6 for piston-operated volumetric
apparatus, applied to a pump's strokes): readings W_0 before the first stroke and W_i
after stroke i (settled), i = 1..n, at times t_i. Each stroke's volume is

    V_i = (W_i - W_{i-1} + E (t_i - t_{i-1})) / d

with E the evaporation rate (mg/h, a blank run: ``gravimetry.evaporation_from_blank``)
and d the density of water at the bench's temperature (``gravimetry.water_density``;
no air-buoyancy correction, about +0.1 %). Reported, ISO 8655 terms:

- mean volume V (nL) and its systematic error 100 (V - v) / v (%), v the nominal
  stroke (the controller's ``stroke_nl``);
- standard deviation s of the V_i (n - 1 degrees of freedom) and the random error
  (coefficient of variation) 100 s / V (%);
- the confidence interval of the mean, V +- t s / sqrt(n), t the two-sided Student-t
  quantile for the chosen confidence (default 95 %) with n - 1 degrees of freedom
  (``scipy.stats.t``). Successive differences share a reading, so reading noise
  counts twice in s: the interval is, if anything, too wide (the safe side).

A stroke whose mass did not rise (V_i <= 0: the balance was disturbed, or the stroke
did not deliver) makes the readings unusable: ``GravimetryError`` naming it, and
nothing is written to the board.

The board takes the result as ``set_calibration`` (``strokes``, ``measured_nl``, the
mean rounded to the nearest nL, and ``ci_nl``, the half-width rounded up); it checks
that the measurement is of its own strokes and within its limits (
``MAX_ERROR_PCT`` and ``MAX_CI_PCT`` in ``itb.calibration``) and scales its
volume-to-motion factor (the Pico's ``steps_per_ml``).

**Result** (``analyse``): a plain dict: ``strokes``, ``stroke_nl``, ``volumes_nl``
(list), ``mean_nl``, ``sd_nl``, ``cv_pct``, ``error_pct``, ``confidence``,
``t_quantile``, ``ci_nl``, ``temperature_c``, ``density_g_per_ml``,
``evaporation_mg_per_h``, ``duration_s`` and ``command`` (the ``set_calibration``
arguments).
"""

import math
import time

from scipy.stats import t as student_t

from host_tools.gravimetry import GravimetryError, water_density

MIN_STROKES = 2  # a standard deviation needs two; the board asks for 10 (set_calibration)


def analyse(times_s, masses_g, *, stroke_nl, temperature_c=20.0, evaporation_mg_per_h=0.0,
            confidence=0.95):
    """The calibration result (module docstring) of readings ``masses_g`` (g) at
    ``times_s`` (s): the first before any stroke, one after each stroke.
    ``stroke_nl``: the nominal stroke (nL, > 0). GravimetryError: fewer than
    ``MIN_STROKES`` + 1 readings, lists of different lengths, a confidence outside
    (0, 1), a temperature outside 0-40 °C, a stroke whose mass did not rise."""
    n = len(masses_g) - 1
    if len(times_s) != len(masses_g):
        raise GravimetryError(f"{len(times_s)} times for {len(masses_g)} masses")
    if n < MIN_STROKES:
        raise GravimetryError(f"{len(masses_g)} reading(s): one before the first stroke and"
                              f" one after each of at least {MIN_STROKES} strokes are needed")
    if not 0.0 < confidence < 1.0:
        raise GravimetryError(f"confidence {confidence:g} must be between 0 and 1 (e.g. 0.95)")
    if not stroke_nl > 0:
        raise GravimetryError(f"nominal stroke {stroke_nl} nL must be positive")
    d = water_density(temperature_c)
    volumes = []
    for i in range(1, n + 1):
        mg = (masses_g[i] - masses_g[i - 1]) * 1000.0
        mg += evaporation_mg_per_h * (times_s[i] - times_s[i - 1]) / 3600.0
        if mg <= 0:
            raise GravimetryError(
                f"stroke {i}: the mass did not rise ({masses_g[i - 1]:.5f} g, then"
                f" {masses_g[i]:.5f} g): a disturbed balance or a stroke that did not"
                " deliver; weigh a new run")
        volumes.append(mg / d * 1000.0)  # mg / (g/mL) = uL; nL
    mean = sum(volumes) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in volumes) / (n - 1))
    tq = float(student_t.ppf((1.0 + confidence) / 2.0, n - 1))
    ci = tq * sd / math.sqrt(n)
    return {
        "strokes": n, "stroke_nl": stroke_nl, "volumes_nl": volumes, "mean_nl": mean,
        "sd_nl": sd, "cv_pct": 100.0 * sd / mean,
        "error_pct": 100.0 * (mean - stroke_nl) / stroke_nl,
        "confidence": confidence, "t_quantile": tq, "ci_nl": ci,
        "temperature_c": float(temperature_c), "density_g_per_ml": d,
        "evaporation_mg_per_h": float(evaporation_mg_per_h),
        "duration_s": times_s[-1] - times_s[0],
        "command": {"strokes": n, "measured_nl": int(round(mean)), "ci_nl": int(math.ceil(ci))},
    }


def summary_text(result):
    """Lines for a person: the mean stroke, its errors and confidence interval."""
    r = result
    pct = round(100 * r["confidence"], 6)
    return "\n".join([
        f"{r['strokes']} strokes over {r['duration_s'] / 60:.1f} min, water at"
        f" {r['temperature_c']:g} °C ({r['density_g_per_ml']:.5f} g/mL), evaporation"
        f" {r['evaporation_mg_per_h']:g} mg/h added back",
        f"mean stroke {r['mean_nl'] / 1000:.4f} uL (nominal {r['stroke_nl'] / 1000:.4f} uL):"
        f" systematic error {r['error_pct']:+.2f} %",
        f"standard deviation {r['sd_nl'] / 1000:.4f} uL: random error (CV) {r['cv_pct']:.2f} %",
        f"{pct:g} % confidence interval of the mean: {r['mean_nl'] / 1000:.4f} +-"
        f" {r['ci_nl'] / 1000:.4f} uL ({100 * r['ci_nl'] / r['mean_nl']:.2f} %;"
        f" t = {r['t_quantile']:.3f}, {r['strokes'] - 1} degrees of freedom)",
    ])


# ---------------------------------------------------------------------- the bench run
POLL_S = 0.5


class RunError(RuntimeError):
    """The calibration run stopped (the message says why; the board's measurement is
    then incomplete and ``set_calibration`` refuses it)."""


def run_strokes(board, strokes, read_mass, record, *, settle_s=10.0, stroke_timeout_s=60.0,
                say=print, sleep=time.sleep, clock=time.monotonic):
    """Make ``strokes`` calibration strokes on ``board`` (``link.Board``, service
    key), one at a time, and weigh after each: ``read_mass(label) -> grams`` is
    called before the first stroke and ``settle_s`` after each stroke has completed;
    ``record(time_s, mass_g)`` gets every reading (time from the first). Each stroke
    is a two-phase ``calibration_run`` of one stroke (the first starts a new
    measurement). Returns ``(times_s, masses_g)``. RunError: the pump is not
    UNPROGRAMMED, a stroke did not end ``ok``, or the board did not make it within
    ``stroke_timeout_s``. ``link.Refused`` / ``LinkError`` pass through."""
    st = board.status()
    if st["state"] != "UNPROGRAMMED":
        raise RunError(f"the pump is {st['state']}: calibration runs only on an UNPROGRAMMED"
                       " pump (a bench board with water, never a patient)")
    times, masses = [], []
    t0 = clock()

    def weigh(label):
        grams = read_mass(label)
        times.append(clock() - t0)
        masses.append(grams)
        record(times[-1], grams)

    weigh("before the first stroke")
    for i in range(1, strokes + 1):
        board.change("calibration_run", {"strokes": 1, "new": 1 if i == 1 else 0})
        end = clock() + stroke_timeout_s
        while True:
            ok, bad = board.status()["calibration"]
            if bad:
                raise RunError(f"stroke {i} did not end ok (stall, occlusion or unknown):"
                               " see itbctl alarms and status board.hw.last_stroke")
            if ok >= i:
                break
            if clock() > end:
                raise RunError(f"stroke {i} was not made within {stroke_timeout_s:g} s")
            sleep(POLL_S)
        say(f"stroke {i} of {strokes} made; weighing in {settle_s:g} s")
        sleep(settle_s)
        weigh(f"after stroke {i}")
    return times, masses
