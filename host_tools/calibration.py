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

A stroke whose mass did not rise (V_i <= 0), or one outside 0.5-1.5 times the median
stroke (``OUTLIER``: air, a drop left on the tip, a mistyped reading, a disturbed
balance, a stroke that did not move), makes the readings unusable:
``GravimetryError`` naming it, and nothing is written to the board. The confidence
level is at least 95 % (``MIN_CONFIDENCE``: the board checks the interval's width,
which a lower level would shrink). The evaporation added back is shown as a share of
the mass weighed, with a warning above 1 %.

The board takes the result as ``set_calibration`` (``strokes``, ``measured_nl``, the
mean rounded to the nearest nL, and ``ci_nl``, the half-width rounded up); it checks
that the measurement is of its own strokes and within its limits (
``MAX_ERROR_PCT`` and ``MAX_CI_PCT`` in ``itb.calibration``) and scales its
volume-to-motion factor (the Pico's ``steps_per_ml``).

**Result** (``analyse``): a plain dict: ``strokes``, ``stroke_nl``, ``volumes_nl``
(list), ``mean_nl``, ``sd_nl``, ``cv_pct``, ``error_pct``, ``confidence``,
``t_quantile``, ``ci_nl``, ``temperature_c``, ``density_g_per_ml``,
``evaporation_mg_per_h``, ``evaporation_pct``, ``duration_s`` and ``command`` (the
``set_calibration`` arguments but the measurement's id).
"""

import math
import secrets
import statistics
import time

from itb import commands as cmds
from itb.calibration import MAX_CI_PCT, MAX_ERROR_PCT, limits_broken
from itb.units import mass_ng_up
from scipy.stats import t as student_t

from host_tools.gravimetry import GravimetryError, water_density

MIN_STROKES = 2  # a standard deviation needs two; the board asks for 10 (set_calibration)
# set_calibration's schema minimum (ISO 8655-6 weighs 10)
BOARD_MIN_STROKES = [p["lo"] for p in cmds.params("set_calibration")
                     if p["name"] == "strokes"][0]
MIN_CONFIDENCE = 0.95  # a lower level would shrink the interval the board checks
OUTLIER = (0.5, 1.5)  # a stroke outside these times the median is not a whole stroke
EVAPORATION_WARN_PCT = 1.0  # a larger correction is shown as a warning
MAX_MEASUREMENT_ID = 10**9  # the schema's ceiling (itb.commands.BIG)


def _finite(values, what):
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise GravimetryError(f"{what} {i}: {v!r} is not a finite number")


def analyse(times_s, masses_g, *, stroke_nl, temperature_c=20.0, evaporation_mg_per_h=0.0,
            confidence=0.95):
    """The calibration result (module docstring) of readings ``masses_g`` (g) at
    ``times_s`` (s): the first before any stroke, one after each stroke.
    ``stroke_nl``: the nominal stroke (nL, > 0). GravimetryError: fewer than
    ``MIN_STROKES`` + 1 readings, lists of different lengths, a value that is not a
    finite number, a confidence outside [0.95, 1), a temperature outside 0-40 °C, a
    stroke whose mass did not rise, or one outside ``OUTLIER`` times the median stroke
    (air, a drop left on the tip, a disturbed balance, a stroke that did not move)."""
    n = len(masses_g) - 1
    if len(times_s) != len(masses_g):
        raise GravimetryError(f"{len(times_s)} times for {len(masses_g)} masses")
    _finite(times_s, "time")
    _finite(masses_g, "mass")
    _finite([evaporation_mg_per_h], "evaporation")
    if n < MIN_STROKES:
        raise GravimetryError(f"{len(masses_g)} reading(s): one before the first stroke and"
                              f" one after each of at least {MIN_STROKES} strokes are needed")
    if not MIN_CONFIDENCE <= confidence < 1.0:
        raise GravimetryError(f"confidence {confidence:g}: from {MIN_CONFIDENCE:g} to below 1"
                              " (a lower level would narrow the interval the board checks)")
    if not stroke_nl > 0:
        raise GravimetryError(f"nominal stroke {stroke_nl} nL must be positive")
    d = water_density(temperature_c)
    volumes = []
    evaporated_mg = 0.0
    for i in range(1, n + 1):
        mg = (masses_g[i] - masses_g[i - 1]) * 1000.0
        lost = evaporation_mg_per_h * (times_s[i] - times_s[i - 1]) / 3600.0
        evaporated_mg += lost
        mg += lost
        if mg <= 0:
            raise GravimetryError(
                f"stroke {i} (readings {i} and {i + 1}): the mass did not rise"
                f" ({masses_g[i - 1]:.5f} g, then {masses_g[i]:.5f} g): a mistyped reading, a"
                " disturbed balance or a stroke that did not deliver")
        volumes.append(mg / d * 1000.0)  # mg / (g/mL) = uL; nL
    median = statistics.median(volumes)
    for i, v in enumerate(volumes, 1):
        if not OUTLIER[0] * median <= v <= OUTLIER[1] * median:
            raise GravimetryError(
                f"stroke {i} (readings {i} and {i + 1}): {v / 1000:.4f} uL against a median of"
                f" {median / 1000:.4f} uL: not a whole stroke (air, a drop left on the tip, a"
                " mistyped reading, a disturbed balance, a stroke that did not move)")
    mean = sum(volumes) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in volumes) / (n - 1))
    tq = float(student_t.ppf((1.0 + confidence) / 2.0, n - 1))
    ci = tq * sd / math.sqrt(n)
    weighed_mg = (masses_g[-1] - masses_g[0]) * 1000.0
    return {
        "strokes": n, "stroke_nl": stroke_nl, "volumes_nl": volumes, "mean_nl": mean,
        "sd_nl": sd, "cv_pct": 100.0 * sd / mean,
        "error_pct": 100.0 * (mean - stroke_nl) / stroke_nl,
        "confidence": confidence, "t_quantile": tq, "ci_nl": ci,
        "temperature_c": float(temperature_c), "density_g_per_ml": d,
        "evaporation_mg_per_h": float(evaporation_mg_per_h),
        "evaporation_pct": 100.0 * evaporated_mg / (weighed_mg + evaporated_mg),
        "duration_s": times_s[-1] - times_s[0],
        "command": {"strokes": n, "measured_nl": int(round(mean)), "ci_nl": int(math.ceil(ci))},
    }


def board_verdict(result):
    """What the board will say of ``result`` (its limits, ``itb.calibration``): a list
    of reasons it would refuse, empty when it takes it."""
    why = []
    cmd = result["command"]
    if cmd["strokes"] < BOARD_MIN_STROKES:
        why.append(f"{cmd['strokes']} strokes: the board takes {BOARD_MIN_STROKES} or more")
    why += [message for _reason, message in
            limits_broken(result["stroke_nl"], cmd["measured_nl"], cmd["ci_nl"])]
    if cmd["measured_nl"] > 100 * result["stroke_nl"]:
        why.append("about 1000 times the nominal stroke: masses in mg under a mass_g header?")
    return why


def summary_text(result):
    """Lines for a person: the mean stroke, its errors and confidence interval, and
    whether the board would take it."""
    r = result
    pct = round(100 * r["confidence"], 6)
    inside = abs(r["mean_nl"] - r["stroke_nl"]) <= r["ci_nl"]
    lines = [
        f"{r['strokes']} strokes over {r['duration_s'] / 60:.1f} min, water at"
        f" {r['temperature_c']:g} °C ({r['density_g_per_ml']:.5f} g/mL), evaporation"
        f" {r['evaporation_mg_per_h']:g} mg/h added back ({r['evaporation_pct']:.2f} % of the"
        " mass)",
        f"mean stroke {r['mean_nl'] / 1000:.4f} uL (nominal {r['stroke_nl'] / 1000:.4f} uL):"
        f" systematic error {r['error_pct']:+.2f} %",
        f"standard deviation {r['sd_nl'] / 1000:.4f} uL: random error (CV) {r['cv_pct']:.2f} %",
        f"{pct:g} % confidence interval of the mean: {r['mean_nl'] / 1000:.4f} +-"
        f" {r['ci_nl'] / 1000:.4f} uL ({100 * r['ci_nl'] / r['mean_nl']:.2f} %;"
        f" t = {r['t_quantile']:.3f}, {r['strokes'] - 1} degrees of freedom): the nominal"
        f" stroke is {'inside' if inside else 'outside'} it",
    ]
    if r["evaporation_pct"] > EVAPORATION_WARN_PCT:
        lines.append(f"WARNING: the evaporation correction is {r['evaporation_pct']:.2f} % of the"
                     " mass: check the blank run (a drop, mg for g?) and cover the vessel")
    why = board_verdict(r)
    lines.append("the board would refuse it: " + "; ".join(why) if why else
                 f"within the board's limits ({MAX_ERROR_PCT} % error, {MAX_CI_PCT} % interval)")
    return "\n".join(lines)


# ---------------------------------------------------------------------- the bench run
POLL_S = 0.5


class RunError(RuntimeError):
    """The calibration run stopped (the message says why; the board's measurement is
    then incomplete and ``set_calibration`` refuses it)."""


def check_board(st, strokes):
    """RunError unless the board's ``status`` ``st`` allows ``strokes`` calibration
    strokes now: UNPROGRAMMED, its fill recorded with room for them, and the caps'
    room (SR-5: each stroke's mass counts, at the fill's concentration)."""
    if st["state"] != "UNPROGRAMMED":
        raise RunError(f"the pump is {st['state']}: calibration runs only on an UNPROGRAMMED"
                       " pump (a bench board before its first program; a programmed bench"
                       " board needs a new store, a virtual board a new --state folder)")
    stroke_nl = st["stroke_nl"]
    if st["concentration_ug_per_ml"] <= 0 or st["reservoir_nl"] < strokes * stroke_nl:
        raise RunError(f"the reservoir holds {st['reservoir_nl'] / 1000:g} uL: record the"
                       f" syringe's fill first (itbctl refill), {strokes * stroke_nl / 1000:g}"
                       " uL are needed")
    stroke_ng = mass_ng_up(stroke_nl, st["concentration_ug_per_ml"])
    room = min((cap - used) // stroke_ng for cap, used in zip(st["caps_ng"], st["window_ng"],
                                                               strict=True))
    if room < strokes:
        raise RunError(f"the caps leave room for {max(room, 0)} strokes now (24 h"
                       f" {st['window_ng'][0] / 1000:g} of {st['caps_ng'][0] / 1000:g} ug, 1 h"
                       f" {st['window_ng'][1] / 1000:g} of {st['caps_ng'][1] / 1000:g} ug; each"
                       " stroke counts, SR-5): weigh fewer strokes, or wait")


def new_measurement_id():
    """A random measurement id (1..10^9): the board's measurement is named by the host,
    so readings of another board or of an earlier store never match it."""
    return secrets.randbelow(MAX_MEASUREMENT_ID) + 1


def run_strokes(board, strokes, read_mass, record, *, settle_s=10.0, stroke_timeout_s=60.0,
                say=print, sleep=time.sleep, clock=time.monotonic, measurement=None):
    """Make ``strokes`` calibration strokes on ``board`` (``link.Board``, service
    key), one at a time, and weigh after each: ``read_mass(label, previous_g) ->
    grams`` is called before the first stroke (``previous_g`` None) and ``settle_s``
    after each stroke has completed; ``record(time_s, mass_g)`` gets every reading
    (time from the first). Each stroke is a two-phase ``calibration_run`` of one
    stroke under one new random ``measurement`` id (the first starts the measurement,
    the others add to it). Returns ``(measurement, times_s, masses_g)``
    (``set_calibration`` quotes the id). RunError: ``check_board`` refuses, the
    board's measurement was ended under way (a reset, a refill), a stroke did not end
    ``ok``, or the board did not make it within ``stroke_timeout_s`` after it was due
    (the board's maximum rate may delay it: ``next_wake``). ``link.Refused`` /
    ``LinkError`` pass through."""
    check_board(board.status(), strokes)
    times, masses = [], []
    t0 = clock()

    def weigh(label):
        grams = read_mass(label, masses[-1] if masses else None)
        times.append(clock() - t0)
        masses.append(grams)
        record(times[-1], grams)

    weigh("before the first stroke")
    measurement = measurement or new_measurement_id()
    for i in range(1, strokes + 1):
        if i > 1 and board.status()["calibration"] != [i - 1, 0, measurement]:
            raise RunError("the board's measurement ended under way (a reset, a refill or a"
                           " program): weigh a new run")
        board.change("calibration_run", {"strokes": 1, "measurement": measurement})
        st = board.status()
        due_s = max(0, st["next_wake"] - st["t"]) / 1000 if st["next_wake"] >= 0 else 0
        if due_s > 5:
            say(f"stroke {i} is due in {due_s:.0f} s (the board's maximum rate)")
        end = clock() + due_s + stroke_timeout_s
        while True:
            ok, bad, _mid = board.status()["calibration"]
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
    return measurement, times, masses
