"""Balance readings of a run: what a laboratory balance under the catheter tip would
show, for rehearsing the bench analysis (IEC 60601-2-24 start-up and trumpet curves,
``host_tools/trumpet.py``, from a CSV of ``time_s,mass_g``) without hardware.

The model, reading by reading (``iter_readings``):

- **fluid**: the volume the pump model really moved at each stroke
  (``sim/pump.py``: nominal x (1 + bias) x (1 + e), with the stroke error and bias
  of the scenario; what an empty syringe or a stall or occlusion did not move is not
  there), in whole nL as it enters the fluid path (the rounding remainder carried to
  the next stroke, so the sum is the true total to under 1 nL and equals
  ``summary.json``'s ``delivered_ml``). The catheter and tubing are full of
  incompressible fluid, so each stroke pushes the same volume out of the tip at the
  same instant: the balance collects the pump's output, stroke by stroke, whatever
  drug it carries. A port injection (SR-30, a dose with no volume in the schema) is
  not on the balance;
- **mass**: that volume times the density of air-free water at the bench temperature
  (``host_tools.gravimetry.water_density``, the analysis's own: Tanaka et al. 2001, the
  CIPM formula, 0-40 C); the balance shows true mass (no air-buoyancy correction, about 0.1 %);
- **timing**: a reading at ``t`` weighs the strokes in ``[start, t)`` (half-open, as
  the run's hourly and daily windows); readings at ``start, start + interval, ...``
  up to ``end`` inclusive;
- **evaporation**: the collecting vessel, tared at ``start`` with some water already
  in it (as a bench set-up has), loses ``evaporation_mg_per_h`` at a constant rate
  from ``start``: readings may go below zero before the first drop;
- **noise**: independent Gaussian noise of sd ``noise_mg`` on every reading, drawn
  from its own random stream (``rng_for(seed)``) so that exporting readings leaves
  the run itself unchanged;
- **resolution**: the reading rounded to a multiple of ``resolution_mg`` (0: no
  rounding).

``write(path, readings, resolution_mg)`` writes the CSV (header ``time_s,mass_g``
and nothing else); ``write_sidecar`` writes the settings next to it (``FILE.json``).
"""

import csv
import json
import math
import random
from decimal import Decimal
from pathlib import Path

from host_tools.gravimetry import water_density  # the analysis's own: one formula

HOUR_MS = 3_600_000

# CLI defaults (``itbsim run --balance-*``)
DEFAULTS = {
    "interval_s": 30.0,  # IEC 60601-2-24 start-up curve: 30 s samples
    "noise_mg": 0.1,  # sd, a 0.1 mg-readability analytical balance
    "evaporation_mg_per_h": 0.5,
    "resolution_mg": 0.01,
    "temperature_c": 20.0,
}
MAX_READINGS = 10_000_000  # a CSV of a few hundred MB: more is a mistaken interval

WHERE = ("the fluid leaving the pump at each stroke: the catheter and tubing are full,"
         " so each stroke pushes the same volume out of the catheter tip at once")


def rng_for(seed):
    """The balance's own random stream for a scenario seed (the run's is
    ``random.Random(seed)``; this one never touches it)."""
    return random.Random(f"itbsim balance {seed}")


def interval_ms(interval_s):
    """The reading interval in whole ms (> 0), else ValueError."""
    if not (isinstance(interval_s, (int, float)) and math.isfinite(interval_s)):
        raise ValueError(f"the interval must be a finite number of seconds, got {interval_s!r}")
    ms = round(interval_s * 1000)
    if ms < 1:
        raise ValueError(f"the interval must be at least 1 ms, got {interval_s!r} s")
    return ms


def count(start_ms, end_ms, interval_s):
    """How many readings ``iter_readings`` gives for these times."""
    return (end_ms - start_ms) // interval_ms(interval_s) + 1 if end_ms >= start_ms else 0


def check(noise_mg, evaporation_mg_per_h, resolution_mg, temperature_c):
    """ValueError unless every setting is a finite non-negative number (the
    temperature within the density formula's range)."""
    for name, v in (("noise", noise_mg), ("evaporation", evaporation_mg_per_h),
                    ("resolution", resolution_mg)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"the {name} must be a finite non-negative number, got {v!r}")
    water_density(temperature_c)


def iter_readings(stroke_events, start_ms, end_ms, interval_s, noise_mg,
                  evaporation_mg_per_h, resolution_mg, temperature_c, rng):
    """Yield ``(t_ms, mass_g)`` for ``t_ms`` in ``start_ms, start_ms + interval, ...
    <= end_ms``: the mass of the fluid of ``stroke_events`` (``(t_ms,
    true_volume_nl)``, any order; whole nL keep the sums exact) delivered in
    ``[start_ms, t_ms)``, times the water density, minus evaporation since
    ``start_ms``, plus N(0, ``noise_mg``) from ``rng``, rounded to ``resolution_mg``.

    Without noise, evaporation and rounding a reading is exactly
    ``cumulative_nl * water_density(temperature_c) / 1e6``."""
    check(noise_mg, evaporation_mg_per_h, resolution_mg, temperature_c)
    step = interval_ms(interval_s)
    rho = water_density(temperature_c)
    events = sorted(e for e in stroke_events if e[0] >= start_ms)
    i, n = 0, len(events)
    cum_nl = 0
    gauss = rng.gauss
    for k in range(count(start_ms, end_ms, interval_s)):
        t = start_ms + k * step
        while i < n and events[i][0] < t:
            cum_nl += events[i][1]
            i += 1
        if not (noise_mg or evaporation_mg_per_h or resolution_mg):
            yield t, cum_nl * rho / 1e6
            continue
        mg = cum_nl * rho / 1e3
        if evaporation_mg_per_h:
            mg -= evaporation_mg_per_h * (t - start_ms) / HOUR_MS
        if noise_mg:
            mg += gauss(0.0, noise_mg)
        if resolution_mg:
            mg = round(mg / resolution_mg) * resolution_mg
        yield t, mg / 1e3


def readings(stroke_events, start_ms, end_ms, interval_s, noise_mg, evaporation_mg_per_h,
             resolution_mg, temperature_c, rng):
    """``iter_readings`` as a list of ``(t_ms, mass_g)``."""
    return list(iter_readings(stroke_events, start_ms, end_ms, interval_s, noise_mg,
                              evaporation_mg_per_h, resolution_mg, temperature_c, rng))


def mass_decimals(resolution_mg):
    """Decimals of a mass in grams that show every step of ``resolution_mg`` (None
    for no rounding: the shortest text that reads back as the same float)."""
    if not resolution_mg:
        return None
    exponent = Decimal(repr(float(resolution_mg))).normalize().as_tuple().exponent
    return max(0, 3 - int(exponent))


def time_text(t_ms):
    """Seconds as text: whole seconds without a point, else to the ms."""
    return str(t_ms // 1000) if t_ms % 1000 == 0 else f"{t_ms / 1000:.3f}"


def write(path, rows, resolution_mg):
    """Write ``rows`` (``(t_ms, mass_g)``, any iterable) as CSV ``time_s,mass_g``;
    returns how many rows were written."""
    d = mass_decimals(resolution_mg)
    n = 0
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("time_s", "mass_g"))
        for t, g in rows:
            w.writerow((time_text(t), repr(g) if d is None else f"{g:.{d}f}"))
            n += 1
    return n


def sidecar_path(path):
    """``FILE.csv`` -> ``FILE.json`` (the settings next to the readings)."""
    return Path(path).with_suffix(".json")


def write_sidecar(path, meta):
    Path(path).write_text(json.dumps(meta, indent=1) + "\n")


def sidecar(scenario, settings, stroke_events, n_readings, csv_name):
    """The sidecar's content: the settings (``settings``: the keys of ``DEFAULTS``),
    the scenario's nominal stroke and rate, and the truth the readings came from
    (so an analysis of the CSV can be checked)."""
    from itb.drugs import DeviceConfig

    rho = water_density(settings["temperature_c"])
    stroke_nl = DeviceConfig(scenario.config).stroke_nl
    daily_ng = scenario.program.get("daily_dose_ng", 0)
    conc = scenario.concentration_ug_per_ml
    nl_per_day = daily_ng * 1000 / conc if conc else 0.0
    true_nl = sum(v for _t, v in stroke_events)
    return {
        "readings": csv_name,
        "columns": {"time_s": "seconds since the scenario start (simulation clock)",
                    "mass_g": "balance reading, g (tared at the start)"},
        "count": n_readings,
        "start_s": 0,
        "end_s": scenario.duration_ms / 1000,
        "interval_s": interval_ms(settings["interval_s"]) / 1000,
        "noise_mg": settings["noise_mg"],
        "evaporation_mg_per_h": settings["evaporation_mg_per_h"],
        "resolution_mg": settings["resolution_mg"],
        "temperature_c": settings["temperature_c"],
        "density_g_per_ml": rho,
        "density_source": "air-free water, Tanaka et al., Metrologia 38 (2001) 301",
        "seed": scenario.seed,
        "rng": f"random.Random('itbsim balance {scenario.seed}'), apart from the run's",
        "where": WHERE,
        "reading_window": "a reading at t weighs the strokes in [start, t)",
        "scenario": scenario.name,
        "scenario_source": scenario.source,
        "concentration_ug_per_ml": conc,
        "nominal_stroke_nl": stroke_nl,
        "nominal_stroke_mg": stroke_nl * rho / 1000,
        "nominal_daily_dose_ug": daily_ng / 1000,
        "nominal_rate_ml_per_h": nl_per_day / 1e6 / 24,
        "nominal_rate_ul_per_h": nl_per_day / 1e3 / 24,
        "nominal_stroke_interval_min": stroke_nl / nl_per_day * 1440 if nl_per_day else None,
        "nominal_rate_note": "the set-up program's basal; scenario events may change it",
        "stroke_error_pct": scenario.stroke_error_pct,
        "stroke_bias_pct": scenario.stroke_bias_pct,
        "true_strokes": len(stroke_events),
        "true_volume_ml": true_nl / 1e6,
        "true_mass_g": true_nl * rho / 1e6,
    }
