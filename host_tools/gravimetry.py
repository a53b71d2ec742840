"""Balance readings and what turns a balance's mass into a volume: shared by the
trumpet-curve analysis (``host_tools.trumpet``), the stroke calibration
(``host_tools.calibration``) and the simulator's balance export (``sim.balance``).

**Readings.** A CSV file with a header row: ``time_s`` (seconds from any origin,
strictly increasing) and the balance reading, ``mass_g`` or ``mass_mg`` (one of them);
other columns are ignored (``read_readings``).

**Mass to volume.** Volume = mass / d, d the density of air-free water at the bench's
temperature from the formula of Tanaka, Girard, Davis, Peuto and Bignell, "Recommended
table for the density of water between 0 °C and 40 °C based on recent experimental
reports", Metrologia 38 (2001) 301-309 (the CIPM recommendation; ``water_density``).
No air-buoyancy correction: the balance's conventional mass is taken as the water's
mass; the correction (about +0.1 % for water weighed in laboratory air, ISO 8655-6,
EURAMET cg-19) is well below what a bench run of a few µL strokes resolves.

**Evaporation** from the collecting vessel, E mg/h, is added back: W'(t) = W(t) + E t.
Measure E with a blank run (the same vessel, the same set-up, no flow):
``evaporation_from_blank`` returns minus the least-squares slope of its readings in
mg/h (positive: mass lost).
"""

import csv
import math
from pathlib import Path

# Tanaka et al. 2001 (Metrologia 38, 301), air-free SMOW water, 0-40 °C (°C, kg/m^3)
_A1, _A2, _A3, _A4, _A5 = -3.983035, 301.797, 522528.9, 69.34881, 999.974950


class GravimetryError(ValueError):
    """Readings or settings that cannot be used (the message says which and where)."""


# ---------------------------------------------------------------------- readings
def _number(text, where):
    try:
        v = float(text)
    except ValueError:
        raise GravimetryError(f"{where}: not a number: {text!r}") from None
    if not math.isfinite(v):
        raise GravimetryError(f"{where}: not a finite number: {text!r}")
    return v


def read_readings(path):
    """``(times_s, masses_g)``: two lists from a CSV with a header naming ``time_s`` and
    ``mass_g`` or ``mass_mg`` (mg are converted to g). Blank lines are skipped; other
    columns are ignored. GravimetryError naming the line and column: an unreadable file, a
    missing or doubled column, a row with more or fewer fields than the header, a value
    that is not a finite number, a time not after the one before, fewer than two
    readings."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise GravimetryError(f"{path}: cannot read the readings: {e}") from None
    rows = [(n, row) for n, row in enumerate(csv.reader(text.splitlines()), 1)
            if any(cell.strip() for cell in row)]
    if not rows:
        raise GravimetryError(f"{path}: empty: a header (time_s,mass_g) and readings expected")
    head_line, head = rows[0]
    names = [c.strip().lower() for c in head]
    if "time_s" not in names:
        raise GravimetryError(f"{path} line {head_line}: no time_s column in the header"
                           f" {','.join(head)!r}")
    masses = [c for c in ("mass_g", "mass_mg") if c in names]
    if len(masses) != 1:
        which = "no mass_g or mass_mg column" if not masses else "both mass_g and mass_mg"
        raise GravimetryError(f"{path} line {head_line}: {which} in the header"
                           f" {','.join(head)!r} (one of them)")
    mass_col = masses[0]
    ti, mi = names.index("time_s"), names.index(mass_col)
    scale = 1.0 if mass_col == "mass_g" else 1e-3
    times, grams = [], []
    last_line = None
    for n, row in rows[1:]:
        if len(row) != len(head):
            # a short row, or a long one: "14940,0,03912" (a decimal comma) read as 0 g
            # (found by the new-user trial)
            raise GravimetryError(f"{path} line {n}: {len(row)} fields, the header has"
                                  f" {len(head)} (a decimal comma?)")
        t = _number(row[ti].strip(), f"{path} line {n}, column time_s")
        m = _number(row[mi].strip(), f"{path} line {n}, column {mass_col}")
        if times and t <= times[-1]:
            raise GravimetryError(f"{path} line {n}, column time_s: {t:g} s is not after"
                               f" {times[-1]:g} s (line {last_line}): readings must be in"
                               " increasing time")
        times.append(t)
        grams.append(m * scale)
        last_line = n
    if len(times) < 2:
        raise GravimetryError(f"{path}: {len(times)} reading(s): at least two are needed")
    return times, grams


# ---------------------------------------------------------------------- corrections
def water_density(temperature_c):
    """Density of air-free water (g/mL) at ``temperature_c`` (°C, 0 to 40): Tanaka et al.
    2001, Metrologia 38, 301-309 (CIPM): rho = a5 (1 - (t + a1)^2 (t + a2) / (a3 (t + a4))).
    0.9982067 at 20 °C. GravimetryError outside 0-40 °C."""
    t = float(temperature_c)
    if not 0.0 <= t <= 40.0:
        raise GravimetryError(f"temperature {t:g} °C: the water density formula holds from 0"
                           " to 40 °C")
    rho = _A5 * (1 - (t + _A1) ** 2 * (t + _A2) / (_A3 * (t + _A4)))
    return rho / 1000.0


def evaporation_from_blank(times_s, masses_g):
    """Evaporation rate (mg/h, positive: mass lost) of a blank run's readings: minus the
    least-squares slope of mass against time. GravimetryError with fewer than two readings
    or a single time."""
    n = len(times_s)
    if n < 2 or n != len(masses_g):
        raise GravimetryError("a blank run needs at least two readings (times and masses)")
    mt = sum(times_s) / n
    mm = sum(masses_g) / n
    sxx = sum((t - mt) ** 2 for t in times_s)
    if sxx == 0:
        raise GravimetryError("a blank run's readings must span some time")
    sxy = sum((t - mt) * (m - mm) for t, m in zip(times_s, masses_g, strict=True))
    return -sxy / sxx * 3600.0 * 1000.0  # g/s -> mg/h
