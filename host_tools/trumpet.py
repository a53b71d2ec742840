"""Start-up and trumpet curves from timed balance readings: the IEC 60601-2-24 method,
and a stroke-interval variant for a pump that delivers in discrete strokes.

    from host_tools import trumpet
    t_s, m_g = trumpet.read_readings("run.csv")
    result = trumpet.analyse(t_s, m_g, rate_ul_per_h=2.0, stroke_interval_min=60)
    trumpet.write_csv(result, "out/trumpet.csv")
    trumpet.plot(result, "out/trumpet.svg")

or ``itbctl trumpet run.csv --rate-ul-per-h 2 --stroke-interval-min 60`` (no board).

**Readings.** A CSV file with a header row: ``time_s`` (seconds from any origin,
strictly increasing) and the balance reading, ``mass_g`` or ``mass_mg`` (one of them);
other columns are ignored. The first reading is the start of the infusion (time 0 of
every curve): tare, start the pump and the logging together.

**Mass to volume, evaporation** (``host_tools.gravimetry``): volume = mass / d, d the
density of air-free water at the bench's temperature (Tanaka et al. 2001, the CIPM
formula), no air-buoyancy correction (about +0.1 %, below what these curves resolve);
evaporation from the collecting vessel, E mg/h, is added back: W'(t) = W(t) + E t, E
from a blank run's readings (``evaporation_from_blank``).

**The IEC 60601-2-24 method.** Source: IEC 60601-2-24, *Medical electrical equipment -
Part 2-24: Particular requirements for the basic safety and essential performance of
infusion pumps and controllers*: edition 2 (2012), the accuracy tests of clause
201.12.1; edition 1 (1998), clause 50. The set-up as manufacturers' instructions for
use report it (e.g. B. Braun's Perfusor and Infusomat IFUs, Smiths Medical's CADD):
start-up curves with samples every 0.5 min over 120 min, trumpet curves from the
second hour. The formulas below are the standard's as this module's author knows them;
they were not checked against the text of the standard, nor were the subclause for
each pump type (201.12.1.10x) or which edition lists which windows (analyser software
for edition 1 lists 2, 5, 11, 19 and 31 min; other IFUs show 1, 2, 5, 11, 19 and 31 min,
the list used here): verify before citing them in a report.

- Readings W_i (g) at the sample interval S = 0.5 min; d the density (g/mL); r the set
  rate (mL/h).
- Flow in sample i: Q_i = 60 (W_i - W_{i-1}) / (S d), mL/h. The **start-up curve** is
  Q_i against time over the first 2 h (the standard's test period; here over the whole
  run).
- The analysis period (the standard's T2, the second hour of the 2 h test) runs here
  from 60 min to the last reading: the second hour of a 2 h run; a longer run is
  analysed to its end. At least 120 min of readings are needed.
- Mean error A = 100 (Q - r) / r, Q the mean flow over the analysis period.
- For each observation window P in {1, 2, 5, 11, 19, 31} min, the windows' errors
  E_p,j = (S/P) * sum(100 (Q_i - r)/r for i = j .. j + P/S - 1), one window starting at
  each sample (m = (T2 - P)/S + 1 windows); Ep(max) = max over j, Ep(min) = min over j:
  the **trumpet curve**. The sum telescopes to the mass difference across the window,
  which is how it is computed (one subtraction, no accumulated rounding).
- Not implemented: the standard's second mean error B (results report A and B; its
  definition was not checked), the test rates and durations per pump type, occlusion
  and bolus tests.

**Resampling (project choice).** Readings that are not exactly 0.5 min apart (a
balance logging every 10 s, or with jitter) are linearly interpolated onto the grid
0, S, 2S, ... from the first reading (exact for a flow that is steady between two
readings); ``result["interpolated"]`` counts the grid samples that had no reading of
their own (within 1 ms). Two readings more than 2 S (1 min) apart are refused:
interpolation across a longer gap would invent the flow of the missing samples.

**Stroke-interval variant (project method; not in the standard).** A pump that moves a
fixed stroke v (uL) every T = 60 v / R minutes (2 uL every hour at 2 uL/h) delivers
nothing in most 0.5 min samples and a whole stroke in one: Q_i is 0 or many times r,
and an IEC window shorter than T holds one stroke or none, so Ep(max) and Ep(min) only
say how large one stroke is against P (and for P about T, where the window happens to
fall): they say nothing about the pump's accuracy. With ``stroke_interval_min=T`` the
curves are also computed over windows of k whole stroke intervals, k = 1, 2, 4, 8, ...
up to K = floor(24 h / T), and K itself (the largest whole number of intervals in a
day); T from 1 min (two samples) to 24 h. Window boundaries lie midway between
strokes: the stroke phase is the circular mean of the samples' mid-times (from the
first reading) modulo T, each weighted by its mass increase, and the boundaries are
that phase + T/2 + n T, so a stroke early or late by less than about T/2 (less a
sample) still counts in its own interval. Windows slide by one interval through the analysis
period (from 60 min to the last reading), which must hold at least 24 h and one
interval: at least (60 + 1440 + T) min of readings. A window's error is
100 (V - k v) / (k v), V the volume delivered in it (the masses at its boundaries,
interpolated on the 0.5 min grid) and k v = R k T / 60 the volume set for it; its mean
error is over every whole interval. A missed stroke shows -100 % in its own interval
and -100/k % in every window of k intervals that holds it; an exact pump shows 0 at
every k. Why these windows: every window is a whole number of doses, and for
intrathecal baclofen (CSF half-life 1-5 h after a bolus) what matters is the dose over hours; the
timing of a stroke within its interval is the controller's schedule, not an error.

**Result** (``analyse``): a plain dict (no dataclasses) of numbers, strings and lists:
``rate_ul_per_h``, ``sample_min``, ``temperature_c``, ``density_g_per_ml``,
``evaporation_mg_per_h``, ``readings``, ``interpolated``, ``duration_min``, ``startup``
(``t_min``, ``flow_ml_per_h``: lists), ``trumpet`` (``start_min``, ``end_min``,
``mean_error_pct``, ``windows``: ``[{"window_min", "max_pct", "min_pct", "count"}]``)
and ``strokes`` (None, or ``stroke_interval_min``, ``stroke_ul``, ``phase_min``,
``start_min``, ``end_min``, ``intervals``, ``mean_error_pct``, ``windows``:
``[{"strokes", "window_min", "max_pct", "min_pct", "count"}]``).
"""

import csv
import math
from pathlib import Path

from host_tools.gravimetry import (  # noqa: F401 - read_readings and co. are this API too
    GravimetryError,
    evaporation_from_blank,
    read_readings,
    water_density,
)

SAMPLE_MIN = 0.5  # S, the IEC sample interval (min)
WINDOWS_MIN = (1, 2, 5, 11, 19, 31)  # the IEC observation windows P (min)
START_MIN = 60.0  # the analysis period starts with the second hour
MIN_DURATION_MIN = 120.0  # the IEC test period: 2 h
DAY_MIN = 1440.0
SUSPECT_ERROR_PCT = 50.0  # a mean error beyond this is a set-up or unit mistake
SVG_SALT = "itb"  # matplotlib svg.hashsalt: the same SVG bytes for the same result
CSV_FIELDS = ("curve", "t_min", "window_min", "strokes", "flow_ml_per_h", "max_pct",
              "min_pct", "mean_pct", "count")

TrumpetError = GravimetryError  # readings or settings that cannot be analysed


def resample(times_s, values, step_s):
    """``(grid_values, interpolated)``: ``values`` at t0, t0 + step, ... up to the last
    time (t0 the first time), linearly interpolated between the readings either side (a
    reading's own value at its own time); ``interpolated`` counts the grid times with no
    reading within 1 ms. TrumpetError if two readings are more than 2 steps apart."""
    t0 = times_s[0]
    for k in range(1, len(times_s)):
        if times_s[k] - times_s[k - 1] > 2 * step_s + 1e-9:
            raise TrumpetError(
                f"readings {k} and {k + 1} (t = {times_s[k - 1] - t0:g} s and"
                f" {times_s[k] - t0:g} s from the first) are {times_s[k] - times_s[k - 1]:g}"
                f" s apart: more than 2 S = {2 * step_s:g} s (a gap is not interpolated)")
    n = int(math.floor((times_s[-1] - t0) / step_s + 1e-9))
    out = []
    interpolated = 0
    k = 0
    for i in range(n + 1):
        t = t0 + i * step_s
        while k + 2 < len(times_s) and times_s[k + 1] < t:
            k += 1
        ta, tb = times_s[k], times_s[k + 1]
        if abs(ta - t) > 1e-3 and abs(tb - t) > 1e-3:
            interpolated += 1
        f = min(max((t - ta) / (tb - ta), 0.0), 1.0)
        out.append(values[k] + f * (values[k + 1] - values[k]))
    return out, interpolated


# ---------------------------------------------------------------------- analysis
def _extremes(errors):
    return {"max_pct": max(errors), "min_pct": min(errors), "count": len(errors)}


def _window_sizes(whole):
    ks = []
    k = 1
    while k <= whole:
        ks.append(k)
        k *= 2
    if whole not in ks:
        ks.append(whole)
    return ks


def _stroke_curves(w, d, rate_ul_per_h, interval_min, start_index):
    """The stroke-interval variant (module docstring) over grid masses ``w`` (g)."""
    s = SAMPLE_MIN
    start = start_index * s
    end = (len(w) - 1) * s
    if not 2 * s <= interval_min <= DAY_MIN:
        raise TrumpetError(f"stroke interval {interval_min:g} min: from {2 * s:g} min (two"
                           f" samples) to {DAY_MIN:g} min (a day)")
    need = start + DAY_MIN + interval_min
    if end + 1e-9 < need:
        raise TrumpetError(f"the stroke-interval curves need at least {need:g} min of"
                           f" readings (the first hour, 24 h and one stroke interval): these"
                           f" end at {end:g} min")
    # stroke phase: circular mean of the samples' mid-times, weighted by mass increase
    c = sn = total = 0.0
    for i in range(start_index + 1, len(w)):
        inc = max(w[i] - w[i - 1], 0.0)
        angle = 2 * math.pi * ((i - 0.5) * s) / interval_min
        c += inc * math.cos(angle)
        sn += inc * math.sin(angle)
        total += inc
    phase = 0.0
    if total > 0 and math.hypot(c, sn) > 1e-9 * total:
        phase = (math.atan2(sn, c) * interval_min / (2 * math.pi)) % interval_min
    first = start + ((phase + interval_min / 2 - start) % interval_min)

    def mass_at(t):
        x = t / s
        i = min(int(math.floor(x)), len(w) - 2)
        return w[i] + (x - i) * (w[i + 1] - w[i])

    bounds = []
    b = first
    while b <= end + 1e-9:
        bounds.append(min(b, end))
        b += interval_min
    masses = [mass_at(b) for b in bounds]
    stroke_ul = rate_ul_per_h * interval_min / 60.0
    intervals = len(masses) - 1

    def error(i, j):  # percentage error of intervals i .. j-1 (mass difference, telescoped)
        return 100.0 * ((masses[j] - masses[i]) * 1000.0 / d - (j - i) * stroke_ul) \
            / ((j - i) * stroke_ul)

    whole = int(math.floor(DAY_MIN / interval_min + 1e-9))
    windows = []
    for k in _window_sizes(whole):
        errs = [error(j, j + k) for j in range(intervals - k + 1)]
        windows.append({"strokes": k, "window_min": k * interval_min, **_extremes(errs)})
    return {"stroke_interval_min": interval_min, "stroke_ul": stroke_ul, "phase_min": phase,
            "start_min": bounds[0], "end_min": bounds[-1], "intervals": intervals,
            "mean_error_pct": error(0, intervals), "windows": windows}


def analyse(times_s, masses_g, rate_ul_per_h, *, stroke_interval_min=None,
            temperature_c=20.0, evaporation_mg_per_h=0.0):
    """Start-up and trumpet curves (module docstring) of balance readings ``times_s`` (s)
    and ``masses_g`` (g) for a set rate ``rate_ul_per_h`` (uL/h); with
    ``stroke_interval_min`` also the stroke-interval curves. Water at ``temperature_c``
    (°C); ``evaporation_mg_per_h`` added back. Returns the result dict of the module
    docstring. TrumpetError: a rate that is not positive, readings shorter than 2 h or
    with a gap over 2 S, a stroke interval out of range or too few readings for it."""
    rate = float(rate_ul_per_h)
    evap = float(evaporation_mg_per_h)
    if not (math.isfinite(rate) and rate > 0):
        raise TrumpetError(f"set rate {rate_ul_per_h!r} uL/h: must be a positive number")
    if not math.isfinite(evap):
        raise TrumpetError(f"evaporation {evaporation_mg_per_h!r} mg/h: not a number")
    if len(times_s) != len(masses_g) or len(times_s) < 2:
        raise TrumpetError("readings: as many times as masses, at least two")
    d = water_density(temperature_c)
    t0 = times_s[0]
    corrected = [m + evap * (t - t0) / 3600.0 / 1000.0
                 for t, m in zip(times_s, masses_g, strict=True)]
    w, interpolated = resample(times_s, corrected, SAMPLE_MIN * 60.0)
    s = SAMPLE_MIN
    duration = (len(w) - 1) * s
    if duration + 1e-9 < MIN_DURATION_MIN:
        raise TrumpetError(f"the readings span {duration:g} min: the start-up and trumpet"
                           f" curves need at least {MIN_DURATION_MIN:g} min (2 h)")
    r = rate / 1000.0  # mL/h
    flows = [60.0 * (w[i] - w[i - 1]) / (s * d) for i in range(1, len(w))]
    a = int(round(START_MIN / s))
    n_last = len(w) - 1

    def error(i, j):  # percentage flow error between grid samples i < j
        return 100.0 * (60.0 * (w[j] - w[i]) / ((j - i) * s * d) - r) / r

    windows = []
    for p in WINDOWS_MIN:
        n = int(round(p / s))
        errs = [error(j, j + n) for j in range(a, n_last - n + 1)]
        windows.append({"window_min": float(p), **_extremes(errs)})
    result = {
        "rate_ul_per_h": rate,
        "sample_min": s,
        "temperature_c": float(temperature_c),
        "density_g_per_ml": d,
        "evaporation_mg_per_h": evap,
        "readings": len(times_s),
        "interpolated": interpolated,
        "duration_min": duration,
        "startup": {"t_min": [i * s for i in range(1, len(w))], "flow_ml_per_h": flows},
        "trumpet": {"start_min": a * s, "end_min": duration,
                    "mean_error_pct": error(a, n_last), "windows": windows},
        "strokes": None,
    }
    if stroke_interval_min is not None:
        interval = float(stroke_interval_min)
        if not math.isfinite(interval):
            raise TrumpetError(f"stroke interval {stroke_interval_min!r} min: not a number")
        result["strokes"] = _stroke_curves(w, d, rate, interval, a)
    return result


# ---------------------------------------------------------------------- output
def _num(v):
    return "" if v is None else format(v, ".6g")


def _pct(v, width=0):
    return f"{round(v, 2) + 0.0:+{width}.2f}"  # + 0.0: no "-0.00" for a rounding residue


def csv_rows(result):
    """The rows of ``write_csv`` (dicts over ``CSV_FIELDS``; absent values empty)."""
    rows = []
    st = result["startup"]
    for t, q in zip(st["t_min"], st["flow_ml_per_h"], strict=True):
        rows.append({"curve": "startup", "t_min": _num(t), "flow_ml_per_h": _num(q)})
    tr = result["trumpet"]
    for win in tr["windows"]:
        rows.append({"curve": "trumpet", "window_min": _num(win["window_min"]),
                     "max_pct": _num(win["max_pct"]), "min_pct": _num(win["min_pct"]),
                     "mean_pct": _num(tr["mean_error_pct"]), "count": win["count"]})
    sk = result["strokes"]
    for win in sk["windows"] if sk else ():
        rows.append({"curve": "strokes", "window_min": _num(win["window_min"]),
                     "strokes": win["strokes"], "max_pct": _num(win["max_pct"]),
                     "min_pct": _num(win["min_pct"]), "mean_pct": _num(sk["mean_error_pct"]),
                     "count": win["count"]})
    return rows


def write_csv(result, path):
    """``result`` as one CSV (columns ``CSV_FIELDS``): a ``startup`` row per sample
    (``t_min``, ``flow_ml_per_h``), a ``trumpet`` row per IEC window and a ``strokes``
    row per stroke-interval window (``window_min``, ``strokes``, ``max_pct``,
    ``min_pct``, ``mean_pct`` = the mean error, ``count`` = windows evaluated)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows(result))


def summary_text(result):
    """The result in words and tables (what ``itbctl trumpet`` prints)."""
    tr = result["trumpet"]
    lines = [f"{result['readings']} readings over {result['duration_min']:g} min"
             f" ({result['interpolated']} of the {result['sample_min']:g} min samples"
             " interpolated); water"
             f" {result['density_g_per_ml']:.6f} g/mL at {result['temperature_c']:g} °C;"
             f" evaporation {result['evaporation_mg_per_h']:g} mg/h added back",
             f"set rate {result['rate_ul_per_h']:g} uL/h"
             f" ({result['rate_ul_per_h'] / 1000:g} mL/h)",
             f"trumpet (IEC 60601-2-24) from {tr['start_min']:g} to {tr['end_min']:g} min:"
             f" mean error A {_pct(tr['mean_error_pct'])} %",
             "  window min    Ep(max) %    Ep(min) %  windows"]
    for win in tr["windows"]:
        lines.append(f"  {win['window_min']:10g}  {_pct(win['max_pct'], 11)}  "
                     f"{_pct(win['min_pct'], 11)}  {win['count']:7d}")
    sk = result["strokes"]
    if sk:
        lines += [f"stroke-interval curves (project method): {sk['stroke_ul']:g} uL every"
                  f" {sk['stroke_interval_min']:g} min, {sk['intervals']} intervals from"
                  f" {sk['start_min']:g} to {sk['end_min']:g} min: mean error"
                  f" {_pct(sk['mean_error_pct'])} %",
                  "  strokes  window h        max %        min %  windows"]
        for win in sk["windows"]:
            lines.append(f"  {win['strokes']:7d}  {win['window_min'] / 60:8g}"
                         f"  {_pct(win['max_pct'], 11)}  {_pct(win['min_pct'], 11)}"
                         f"  {win['count']:7d}")
    if abs(tr["mean_error_pct"]) > SUSPECT_ERROR_PCT:
        # found by the new-user trial: a rate in mL/h, or masses in mg under mass_g,
        # gave errors of +97000 % without a word
        lines.append(f"WARNING: a mean error of {_pct(tr['mean_error_pct'])} % is not a pump's:"
                     " is the rate in uL/h (--rate-ul-per-h), and the mass column's unit right"
                     " (mass_g or mass_mg)?")
    return "\n".join(lines)


def _trumpet_axes(ax, xs, windows, mean, xlabel, title):
    ax.axhline(0.0, color="#888888", linewidth=0.6)
    ax.plot(xs, [w["max_pct"] for w in windows], "o-", color="#c0392b", label="Ep(max)")
    ax.plot(xs, [w["min_pct"] for w in windows], "o-", color="#1f5fa8", label="Ep(min)")
    ax.axhline(mean, color="black", linestyle="--", linewidth=1.0,
               label=f"mean error {_pct(mean)} %")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("flow error (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, linewidth=0.3)


def plot(result, path):
    """The figure of ``result`` at ``path``, PNG or SVG by its suffix: the start-up
    curve (Q_i against time over the first 2 h, the set rate dashed), the trumpet curve (Ep(max) and
    Ep(min) against the window, the mean error dashed) and, with stroke-interval curves,
    a third panel with theirs. SVG is deterministic (fixed ``svg.hashsalt``, no date).
    Uses matplotlib's Figure (no pyplot: no GUI backend). TrumpetError: another
    suffix."""
    import matplotlib
    from matplotlib.figure import Figure

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise TrumpetError(f"{path}: a figure is .png or .svg")
    sk = result["strokes"]
    panels = 3 if sk else 2
    fig = Figure(figsize=(7.2, 3.2 * panels), layout="constrained")
    axes = fig.subplots(panels, 1)
    st = result["startup"]
    ax = axes[0]
    # the standard's test period (2 h) only: a day of 0.5 min samples is a solid band;
    # every sample is in the CSV
    shown = sum(1 for t in st["t_min"] if t <= MIN_DURATION_MIN)
    ax.plot([0.0] + st["t_min"][:shown], st["flow_ml_per_h"][:1] + st["flow_ml_per_h"][:shown],
            drawstyle="steps-pre", color="#1f5fa8", linewidth=0.8, label="flow Q_i")
    ax.axhline(result["rate_ul_per_h"] / 1000.0, color="black", linestyle="--",
               linewidth=1.0, label="set rate")
    ax.set_xlabel("time from the start (min)")
    ax.set_ylabel("flow (mL/h)")
    ax.set_title(f"Start-up curve: flow per {result['sample_min']:g} min sample, first"
                 f" {MIN_DURATION_MIN:g} min", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, linewidth=0.3)
    tr = result["trumpet"]
    _trumpet_axes(axes[1], [w["window_min"] for w in tr["windows"]], tr["windows"],
                  tr["mean_error_pct"], "observation window P (min)",
                  f"Trumpet curve (IEC 60601-2-24), {tr['start_min']:g} to"
                  f" {tr['end_min']:g} min")
    if sk:
        xs = [w["window_min"] / 60.0 for w in sk["windows"]]
        ax = axes[2]
        _trumpet_axes(ax, xs, sk["windows"], sk["mean_error_pct"],
                      "window (h): whole stroke intervals",
                      f"Stroke-interval curve (project method): {sk['stroke_ul']:g} uL every"
                      f" {sk['stroke_interval_min']:g} min")
        ax.set_xscale("log")
        # K (the whole intervals in a day) may fall beside the power of two before it:
        # that one goes unlabelled rather than overprinted
        labels = [f"{x:g}" if i + 2 != len(xs) or xs[-1] / x > 1.4 else ""
                  for i, x in enumerate(xs)]
        ax.set_xticks(xs, labels)
        ax.minorticks_off()
    if fmt == "svg":
        with matplotlib.rc_context({"svg.hashsalt": SVG_SALT}):
            fig.savefig(path, format="svg", metadata={"Date": None})
    else:
        fig.savefig(path, format="png", dpi=120)
