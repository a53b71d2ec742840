"""One self-contained, printable HTML report of one or more simulator runs.

``write_report(path, runs, title, notes=(), *, compare=False, cohort_table=None)``
writes a single HTML file: CSS inline (with ``@media print`` rules and page breaks
between sections, laid out for A4 portrait), plots as inline SVG made by matplotlib,
no scripts and no external resources. The same input gives the same bytes (no
timestamp, fixed SVG hash salt); every SVG id is prefixed with its figure's name
("dose-", "reservoir-", "conc-", "spast-") so ids stay unique in the page.

Input: ``runs`` is a list of run dicts, one per simulated patient::

    {
      "label": str,                    # legend / column label of the run
      "group": str,                    # compare mode: the plan ("A", "B"); else ignored
      "summary": {                     # the simulator's summary.json
        "scenario": str, "duration_days": int,
        "totals": {"delivered_ug": float, "delivered_ml": float, "strokes": int},
        "max_delivered_ug_any_24h": float, "max_delivered_ug_any_1h": float,
        "daily": [{"day": int, "programmed_daily_dose_ug": float,
                   "delivered_ug": float, "reservoir_ml": float}, ...],
        "alarms": [{"t_s": int, "code": str, "priority": "high"|"medium"|"low"}, ...],
        "commands": [{"t_s": int, "command": str, "accepted": bool,
                      "reason": str|None, "args": {...}}, ...],
      },
      "timeseries": [{                 # at least hourly, t_h ascending
        "t_h": float,                  # hours from the start of the run
        "programmed_daily_dose_ug": float,          # µg/day
        "delivered_ug": float,                      # µg in the preceding interval (unused)
        "reservoir_true_ml": float, "reservoir_est_ml": float,
        "reservoir_pess_ml": float, "reservoir_opt_ml": float,   # mL
        "csf_ng_per_ml": float, "effect_ng_per_ml": float,       # ng/mL
        "mas": float,                               # modified Ashworth scale, 0-4
        "withdrawal_risk": float, "sedation": float,              # indices, 0-1
        "state": str}, ...],           # (unused by the plots)
      "low_reservoir_ml": float,       # low-reservoir alarm level, mL
      "projected_refill_day": float|None,   # days from the start
      "cap_24h_ug": float|None,        # prescription 24 h cap, µg (None: SR-3 default)
      "cap_1h_ug": float|None,         # prescription 1 h cap, µg (None: SR-3 default)
    }

Modes: one run; a cohort (several runs, ``compare=False``: one group whatever their
``group``), drawn as the median and a 10-90 % percentile band of each quantity across
runs, rows aligned by ``t_h`` (and daily rows by ``day``; a missing row counts as
missing, not zero); a comparison (``compare=True``): one colour and one label
("A: <scenario>") per ``group``, in order of first appearance, each group drawn as a
line (one run) or median + band (several runs); the key-figure table has one column
per group.

Plotting: matplotlib (and numpy) are imported inside the functions that use them, so
``import sim.report`` stays cheap. Figures are ``matplotlib.figure.Figure`` objects saved
with the SVG canvas: no pyplot, so no GUI backend is ever chosen (headless as with Agg),
the caller's backend is not switched, and no figure stays registered to be closed; the
style and ``svg.hashsalt`` are set in ``rc_context`` blocks only.

Sections: header (banner, scenario, duration, run count, generation note, notes) with
the key-figure table; dose and reservoir plots; patient-model plots (concentrations;
spasticity and risk indices), each titled "illustrative, not validated"; the per-run
outcome table (``cohort_table``); alarms (by code, then in time order); commands. A
table longer than ``MAX_TABLE_ROWS`` (200) rows ends with "N more in summary.json".
Every string from the input is escaped with ``html.escape`` (and kept out of
matplotlib's mathtext). Times in tables read "day D HH:MM", ``t_s`` // 86400 days and
the time of day, day 0 being the first day; plots use days from the start.

Downsampling (keeps a 2-year hourly run under ~1 MB of SVG): a plotted line of more
than ``MAX_POINTS`` (2000) points is cut into bins of equal length and each bin is
drawn by its minimum and its maximum, in time order (a min/max envelope: spikes such
as a bolus or an empty reservoir stay visible, unlike plain striding). A step line
(the programmed dose) first keeps only its change points, which is exact; a band keeps
each bin's lowest low and highest high, so it can only widen. A figure's caption says
when a line was downsampled. Statistics (tables, percentiles) use every row.
"""

import html
import io
import json
import math
import re
import warnings

from sim.outputs import refusal_text

BANNER = (
    "Research/engineering simulation, NOT a medical device. "
    "Patient-model outputs are illustrative, not validated."
)
ILLUSTRATIVE = "illustrative, not validated"
MAX_POINTS = 2000  # per plotted line (see the module docstring)
MAX_TABLE_ROWS = 200  # per table; the rest is counted in a closing row
SVG_SALT = "itb"  # matplotlib svg.hashsalt (deterministic ids)
FIG_WIDTH_IN = 7.2  # fits A4 portrait with 15 mm margins
GROUP_COLOURS = ("#1f5fa8", "#c0392b", "#2a8a3e", "#7d3c98", "#b9770e", "#117a8b")
PRIORITY_ORDER = {"high": 0, "medium": 1, "low": 2}

TS_FIELDS = (
    "programmed_daily_dose_ug",
    "reservoir_true_ml",
    "reservoir_est_ml",
    "reservoir_pess_ml",
    "reservoir_opt_ml",
    "csf_ng_per_ml",
    "effect_ng_per_ml",
    "mas",
    "withdrawal_risk",
    "sedation",
)
DAILY_FIELDS = ("programmed_daily_dose_ug", "delivered_ug", "reservoir_ml")

_RC = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.labelsize": 8.5,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.3,
    "svg.fonttype": "none",  # real <text>: small, selectable, searchable
    "path.simplify": True,
}


# ---------------------------------------------------------------------------
# public API


def write_report(path, runs, title, notes=(), *, compare=False, cohort_table=None):
    """Write the HTML report of ``runs`` (list of run dicts, see the module docstring).

    ``title``: the page heading; ``notes``: strings listed under the header;
    ``compare``: one group per distinct ``run["group"]`` (plans side by side), else
    all runs form one group (a single run or a cohort); ``cohort_table``: optional
    per-run outcome rows ``[{"label": str, <column>: value, ...}]`` shown as a table
    (columns in order of first appearance). Returns ``path`` as a ``pathlib.Path``.
    Raises ``ValueError`` when ``runs`` is empty.
    """
    from pathlib import Path

    text = render_report(runs, title, notes, compare=compare, cohort_table=cohort_table)
    out = Path(path)
    out.write_text(text, encoding="utf-8", newline="\n")
    return out


def render_report(runs, title, notes=(), *, compare=False, cohort_table=None):
    """The report of ``write_report`` as one HTML string (same arguments, no path)."""
    runs = list(runs)
    if not runs:
        raise ValueError("write_report needs at least one run")
    groups = _groups(runs, compare)
    figures = _figures(groups, compare)
    parts = [
        _head(title),
        _header_section(title, notes, groups, runs, compare),
        _plot_section("Dose and reservoir", figures[:2]),
        _plot_section(f"Patient model ({ILLUSTRATIVE})", figures[2:]),
    ]
    if cohort_table:
        parts.append(_cohort_section(cohort_table))
    parts.append(_alarm_section(runs))
    parts.append(_command_section(runs))
    parts.append(_sim_event_section(runs))
    parts.append("</body>\n</html>\n")
    return "".join(parts)


def fmt_time(t_s):
    """``t_s`` (seconds from the start) as "day D HH:MM", day 0 the first day."""
    day, rest = divmod(int(t_s), 86_400)
    return f"day {day} {rest // 3600:02d}:{rest % 3600 // 60:02d}"


# ---------------------------------------------------------------------------
# grouping and data


class _Group:
    """Runs drawn together: name ("A"), label ("A: <scenario>"), colour, arrays."""

    def __init__(self, name, label, colour, runs):
        self.name = name
        self.label = label
        self.colour = colour
        self.runs = runs
        self.cache = None  # (time series, daily rows) once aligned, see _series

    @property
    def scenario(self):
        return str(self.runs[0]["summary"].get("scenario", ""))


def _groups(runs, compare):
    if not compare:
        if len(runs) == 1:
            label = str(runs[0].get("label", ""))
        else:
            label = f"cohort ({len(runs)} runs)"
        return [_Group("", label, GROUP_COLOURS[0], runs)]
    order = {}
    for run in runs:
        order.setdefault(str(run.get("group", "")), []).append(run)
    out = []
    for i, (name, members) in enumerate(order.items()):
        scenario = str(members[0]["summary"].get("scenario", ""))
        label = f"{name}: {scenario}" if name else scenario
        out.append(_Group(name, label, GROUP_COLOURS[i % len(GROUP_COLOURS)], members))
    return out


def _num(value):
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _aligned(rows_per_run, key, fields):
    """(grid, {field: array runs x grid}) with rows matched on ``key``; NaN where absent."""
    import numpy as np

    grid = sorted(
        {v for rows in rows_per_run for r in rows if not math.isnan(v := _num(r.get(key)))}
    )
    index = {g: i for i, g in enumerate(grid)}
    data = {f: np.full((len(rows_per_run), len(grid)), np.nan) for f in fields}
    for k, rows in enumerate(rows_per_run):
        for r in rows:
            i = index.get(_num(r.get(key)))
            if i is None:
                continue
            for f in fields:
                data[f][k, i] = _num(r.get(f))
    return np.asarray(grid, dtype=float), data


def _series(group):
    """A group's aligned arrays: ((t in days, {field: runs x t}), (day, {field: runs x day}))."""
    if group.cache is None:
        t_h, ts = _aligned([r.get("timeseries") or [] for r in group.runs], "t_h", TS_FIELDS)
        days, daily = _aligned(
            [r["summary"].get("daily") or [] for r in group.runs], "day", DAILY_FIELDS
        )
        group.cache = ((t_h / 24.0, ts), (days, daily))
    return group.cache


def _percentiles(y):
    """(p10, median, p90) over runs (axis 0) of a runs x points array, NaN-aware."""
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p10, p50, p90 = np.nanpercentile(y, [10, 50, 90], axis=0)
    return p10, p50, p90


# ---------------------------------------------------------------------------
# downsampling


def _envelope(t, y, max_points=MAX_POINTS):
    """(t, y, downsampled?) with at most ~max_points points: per-bin min and max."""
    import numpy as np

    n = len(t)
    if n <= max_points:
        return t, y, False
    k = math.ceil(n / (max_points // 2))
    m = n // k * k
    tb, yb = t[:m].reshape(-1, k), y[:m].reshape(-1, k)
    lo = np.where(np.isnan(yb), np.inf, yb).argmin(axis=1)
    hi = np.where(np.isnan(yb), -np.inf, yb).argmax(axis=1)
    first, second = np.minimum(lo, hi), np.maximum(lo, hi)
    rows = np.arange(len(tb))
    t_out = np.stack([tb[rows, first], tb[rows, second]], axis=1).ravel()
    y_out = np.stack([yb[rows, first], yb[rows, second]], axis=1).ravel()
    return np.concatenate([t_out, t[m:]]), np.concatenate([y_out, y[m:]]), True


def _steps(t, y, max_points=MAX_POINTS):
    """A steps-post line reduced to its change points (exact), then enveloped."""
    import numpy as np

    if len(t) <= max_points:
        return t, y, False
    same = (y[1:] == y[:-1]) | (np.isnan(y[1:]) & np.isnan(y[:-1]))
    keep = np.concatenate([[True], ~same])
    keep[-1] = True
    t2, y2 = t[keep], y[keep]
    t3, y3, _ = _envelope(t2, y2, max_points)
    return t3, y3, True


def _band(t, lo, hi, max_points=MAX_POINTS):
    """(t, lo, hi, downsampled?): per bin the lowest lo and highest hi at its two ends."""
    import numpy as np

    n = len(t)
    if n <= max_points:
        return t, lo, hi, False
    k = math.ceil(n / (max_points // 2))
    m = n // k * k
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo_b = np.nanmin(lo[:m].reshape(-1, k), axis=1)
        hi_b = np.nanmax(hi[:m].reshape(-1, k), axis=1)
    tb = t[:m].reshape(-1, k)
    t_out = np.stack([tb[:, 0], tb[:, -1]], axis=1).ravel()
    lo_out = np.repeat(lo_b, 2)
    hi_out = np.repeat(hi_b, 2)
    return (
        np.concatenate([t_out, t[m:]]),
        np.concatenate([lo_out, lo[m:]]),
        np.concatenate([hi_out, hi[m:]]),
        True,
    )


# ---------------------------------------------------------------------------
# plotting


def _mpl_text(s):
    """A user string safe for matplotlib text: no mathtext, not hidden from legends."""
    s = str(s).replace("$", r"\$")
    return "\u2009" + s if s.startswith("_") else s


class _Plotter:
    """Draws one quantity of one group: a line (one run) or median + 10-90 % band."""

    def __init__(self):
        self.downsampled = False  # set when a line or band of the figure was downsampled

    def quantity(self, ax, t, y, *, colour, label, gid, ls="-", step=False, band=True, lw=None):
        """``y``: runs x points. Returns nothing; labels the legend entries."""
        if y.shape[1] == 0:
            return
        if y.shape[0] == 1:
            self._line(ax, t, y[0], colour, label, gid, ls, step, lw)
            return
        p10, p50, p90 = _percentiles(y)
        if band:
            tb, lo, hi, d = _band(t, p10, p90)
            self.downsampled |= d
            coll = ax.fill_between(
                tb,
                lo,
                hi,
                color=colour,
                alpha=0.18,
                linewidth=0,
                step="post" if step else None,
                label=f"{label}: 10–90 %",
            )
            coll.set_gid(f"{gid}-band")
        self._line(ax, t, p50, colour, f"{label}: median", gid, ls, step, lw)

    def _line(self, ax, t, y, colour, label, gid, ls, step, lw):
        t2, y2, d = (_steps if step else _envelope)(t, y)
        self.downsampled |= d
        (line,) = ax.plot(
            t2,
            y2,
            color=colour,
            ls=ls,
            lw=lw,
            label=label,
            drawstyle="steps-post" if step else "default",
        )
        line.set_gid(f"{gid}-line")


def _figures(groups, compare):
    """[(title, svg, caption)] for the dose, reservoir, concentration, spasticity plots."""
    import matplotlib
    from matplotlib.figure import Figure

    out = []
    with matplotlib.rc_context(_RC):
        for name, draw, height in (
            ("dose", _plot_dose, 3.0),
            ("reservoir", _plot_reservoir, 3.0),
            ("conc", _plot_conc, 3.0),
            ("spast", _plot_spasticity, 4.4),
        ):
            fig = Figure(figsize=(FIG_WIDTH_IN, height))
            plotter = _Plotter()
            title = draw(fig, plotter, groups, compare)
            handles, labels = _legend_entries(fig, groups, compare)
            rows = 0
            if handles:
                ncols = _legend_columns(labels)
                rows = -(-len(labels) // ncols)
                fig.legend(
                    handles,
                    labels,
                    loc="lower center",
                    bbox_to_anchor=(0.5, 0.0),
                    ncols=ncols,
                    frameon=False,
                )
            _margins(fig, height, rows)
            caption = ""
            if plotter.downsampled:
                caption = (
                    f"Lines longer than {MAX_POINTS} points are drawn as a per-bin "
                    "min/max envelope; statistics use every row."
                )
            out.append((title, _svg(fig, name), caption))
            fig.clear()
    return out


LEGEND_ROW_IN = 0.19  # one legend row at the report's font size


def _margins(fig, height_in, legend_rows):
    """Fixed margins in inches (a layout engine costs a third of the report's time):
    tick labels and axis label on the left, the axes' titles on top, the x axis and
    the legend below; the figure grows by the legend's rows, so the plot area keeps
    its height however long the legend."""
    bottom = 0.62 + LEGEND_ROW_IN * legend_rows
    total = height_in + LEGEND_ROW_IN * legend_rows
    fig.set_size_inches(FIG_WIDTH_IN, total)
    fig.subplots_adjust(left=0.85 / FIG_WIDTH_IN, right=1 - 0.2 / FIG_WIDTH_IN,
                        top=1 - 0.32 / total, bottom=bottom / total, hspace=0.35)


_QMARK = "\x1f"  # compare mode: marks a quantity drawn in its group's colour (legend below)
_NEUTRAL = "#555555"


def _legend_entries(fig, groups, compare):
    """(handles, labels) of the figure legend.

    Compare mode: one coloured square per group ("A: <scenario>"), then each quantity
    once in a neutral colour with its line style (labels marked with ``_QMARK``), then
    the entries that are neither (alarm level, a group's own cap or refill marker)."""
    from matplotlib.container import BarContainer
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles, labels = [], []
    for ax in fig.axes:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    if not compare:
        return handles, labels
    out_h = [Patch(facecolor=g.colour, label=_mpl_text(g.label)) for g in groups]
    out_l = [_mpl_text(g.label) for g in groups]
    seen, rest_h, rest_l = set(), [], []
    for h, lab in zip(handles, labels, strict=True):
        if not lab.startswith(_QMARK):
            rest_h.append(h)
            rest_l.append(lab)
            continue
        lab = lab[len(_QMARK) :]
        if lab in seen:
            continue
        seen.add(lab)
        if isinstance(h, Line2D):
            proxy = Line2D([], [], color=_NEUTRAL, ls=h.get_linestyle(), lw=h.get_linewidth())
        else:
            alpha = h.patches[0].get_alpha() if isinstance(h, BarContainer) else h.get_alpha()
            proxy = Patch(facecolor=_NEUTRAL, alpha=alpha, linewidth=0)
        out_h.append(proxy)
        out_l.append(lab)
    return out_h + rest_h, out_l + rest_l


def _legend_columns(labels):
    """3 columns of short legend labels, 2 of longer ones, 1 of very long ones."""
    longest = max(len(label) for label in labels)
    return 3 if longest <= 34 else 2 if longest <= 56 else 1


def _svg(fig, name):
    """The figure as an inline <svg> element (no prolog, no metadata, ids prefixed)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": SVG_SALT}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    s = buf.getvalue()
    s = s[s.index("<svg") :]
    s = re.sub(r"<metadata>.*?</metadata>\s*", "", s, count=1, flags=re.S)
    # Several SVGs share one page: prefix every id (and reference) with the figure's name.
    s = re.sub(r'\bid="', f'id="{name}-', s)
    s = re.sub(r'(url\(#|href="#)', rf"\g<1>{name}-", s)
    end = s.index(">")
    root = re.sub(r'\s(width|height)="[^"]*"', "", s[:end])
    return root + ' class="plot" role="img"' + s[end:].rstrip() + "\n"


def _empty(ax, what):
    ax.text(
        0.5,
        0.5,
        f"no {what} in these runs",
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="#888888",
    )


def _close_days(days, y):
    """Daily rows as a closed step line: one more edge at the end of the last day."""
    import numpy as np

    return np.append(days, days[-1] + 1), np.concatenate([y, y[:, -1:]], axis=1)


def _x_range(groups):
    """(first, last) day covered by the runs' time series and daily rows, or None."""
    lo, hi = math.inf, -math.inf
    for g in groups:
        (t, _), (days, _) = _series(g)
        if len(t):
            lo, hi = min(lo, t[0]), max(hi, t[-1])
        if len(days):
            lo, hi = min(lo, days[0]), max(hi, days[-1] + 1)
    return (lo, hi) if lo < hi else None


def _x_days(ax, groups):
    """Days axis limited to the runs' period (markers beyond it are listed, not drawn)."""
    ax.set_xlabel("time (days from start)")
    span = _x_range(groups)
    if span:
        pad = 0.01 * (span[1] - span[0])
        ax.set_xlim(span[0] - pad, span[1] + pad)


def _plot_dose(fig, plotter, groups, compare):
    import numpy as np

    ax = fig.add_subplot()
    n = len(groups)
    width = 0.8 / n
    drawn = False
    for gi, g in enumerate(groups):
        (t, ts), (days, daily) = _series(g)
        col_prog = g.colour
        col_del = g.colour if compare else "#8fb3d9"
        prefix = _QMARK if compare else ""
        gid = f"g{gi}"
        if len(days):
            drawn = True
            deliv = daily["delivered_ug"]
            if deliv.shape[0] == 1:
                # one artist for every day (a bar per day costs ~0.5 ms each to lay out)
                x = days + (gi - (n - 1) / 2) * width + (1 - width) / 2
                edges = np.empty(2 * len(x))
                edges[0::2], edges[1::2] = x, x + width
                heights = np.zeros(len(edges) - 1)
                heights[0::2] = deliv[0]
                ax.stairs(
                    heights,
                    edges,
                    fill=True,
                    color=col_del,
                    alpha=0.45 if compare else 1.0,
                    linewidth=0,
                    label=f"{prefix}delivered µg per day",
                )
            else:
                edges, deliv = _close_days(days, deliv)
                plotter.quantity(
                    ax,
                    edges,
                    deliv,
                    colour=col_del if compare else "#5b8fc7",
                    label=f"{prefix}delivered µg per day",
                    gid=f"{gid}-delivered",
                    step=True,
                    ls=":",
                )
        prog = ts["programmed_daily_dose_ug"]
        if prog.shape[1]:
            drawn = True
            plotter.quantity(
                ax,
                t,
                prog,
                colour=col_prog if compare else "#1a1a1a",
                label=f"{prefix}programmed daily dose",
                gid=f"{gid}-programmed",
                step=True,
            )
        elif len(days):
            edges, prog_daily = _close_days(days, daily["programmed_daily_dose_ug"])
            plotter.quantity(
                ax,
                edges,
                prog_daily,
                colour=col_prog,
                label=f"{prefix}programmed daily dose",
                gid=f"{gid}-programmed",
                step=True,
            )
    _cap_lines(ax, groups, compare)
    return _finish(ax, groups, drawn, "dose data", "µg per day",
                   "Dose: programmed daily dose, delivered per calendar day, 24 h cap")


def _finish(ax, groups, drawn, what, ylabel, title):
    """Common end of a one-axis plot: an empty-plot note, labels, limits, title."""
    if not drawn:
        _empty(ax, what)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    _x_days(ax, groups)
    ax.set_title(title)
    return title


def _cap_lines(ax, groups, compare):
    caps = {}
    for gi, g in enumerate(groups):
        for r in g.runs:
            c = _num(r.get("cap_24h_ug"))
            if not math.isnan(c):
                caps.setdefault(c, []).append(gi)
    per_group = compare and len(caps) > 1
    for c in sorted(caps):
        gis = sorted(set(caps[c]))
        if per_group:
            for gi in gis:
                g = groups[gi]
                ax.axhline(
                    c,
                    color=g.colour,
                    ls="--",
                    lw=1.1,
                    label=f"{_mpl_text(g.label)} 24 h cap ({_fmt_num(c)} µg)",
                )
        else:
            ax.axhline(
                c,
                color="#c0392b",
                ls="--",
                lw=1.1,
                label=f"prescription 24 h cap ({_fmt_num(c)} µg)",
            )


def _plot_reservoir(fig, plotter, groups, compare):
    import numpy as np

    ax = fig.add_subplot()
    drawn = False
    for gi, g in enumerate(groups):
        (t, ts), _ = _series(g)
        if not ts["reservoir_true_ml"].shape[1]:
            continue
        drawn = True
        prefix = _QMARK if compare else ""
        c_true = g.colour if compare else "#1a1a1a"
        c_est = g.colour if compare else "#1f5fa8"
        gid = f"g{gi}"
        pess, opt = ts["reservoir_pess_ml"], ts["reservoir_opt_ml"]
        lo, hi = np.fmin(pess, opt), np.fmax(pess, opt)
        if lo.shape[0] == 1:  # one run: its bounds
            edges, alpha, text = (lo[0], hi[0]), 0.18, "estimate: pessimistic–optimistic"
        else:  # a cohort: the median of each bound
            edges = (_percentiles(lo)[1], _percentiles(hi)[1])
            alpha, text = 0.10, "estimate bounds: medians"
        tb, b_lo, b_hi, d = _band(t, *edges)
        plotter.downsampled |= d
        coll = ax.fill_between(tb, b_lo, b_hi, color=c_est, alpha=alpha, linewidth=0,
                               label=f"{prefix}{text}")
        coll.set_gid(f"{gid}-bounds-band")
        plotter.quantity(
            ax,
            t,
            ts["reservoir_est_ml"],
            colour=c_est,
            ls="--",
            band=False,
            label=f"{prefix}estimated",
            gid=f"{gid}-est",
        )
        plotter.quantity(
            ax, t, ts["reservoir_true_ml"], colour=c_true, label=f"{prefix}true", gid=f"{gid}-true"
        )
        _refill_marker(
            ax,
            g,
            f"{_mpl_text(g.label)}: " if compare else "",
            c_true if compare else "#7d3c98",
            _x_range(groups),
        )
    lows = {_num(r.get("low_reservoir_ml")) for g in groups for r in g.runs}
    for low in sorted(v for v in lows if not math.isnan(v)):
        ax.axhline(
            low, color="#c0392b", ls=":", lw=1.2, label=f"low-reservoir alarm ({_fmt_num(low)} mL)"
        )
    return _finish(ax, groups, drawn, "time series", "reservoir (mL)",
                   "Reservoir: true volume, controller estimate with its bounds, alarm level")


def _refill_marker(ax, g, prefix, colour, span):
    """Projected refill day: a vertical line (median and 10-90 % span for a cohort).

    A day after the plotted period (``span``) stays in the legend only ("not drawn")."""
    import numpy as np

    days = [_num(r.get("projected_refill_day")) for r in g.runs]
    days = np.asarray([d for d in days if not math.isnan(d)])
    if not len(days):
        return
    if len(g.runs) == 1:
        day = days[0]
        label = f"projected refill (day {day:.1f})"
    else:
        p10, day, p90 = np.percentile(days, [10, 50, 90])
        label = f"projected refill: median day {day:.1f} (10–90 %: {p10:.1f}–{p90:.1f})"
        if p90 > p10:
            ax.axvspan(p10, p90, color=colour, alpha=0.08, lw=0)
    if span and not span[0] <= day <= span[1]:
        label += ", outside the plotted period"
    ax.axvline(day, color=colour, ls="-.", lw=1.2, label=prefix + label)


def _draw_quantities(plotter, groups, compare, specs):
    """Draw ``specs`` (``[(ax, key, colour, ls, label, gid)]``) for every group that has
    time series (the first key decides); returns True if anything was drawn. Compare
    mode draws each group in its colour, the quantity's own colour otherwise."""
    drawn = False
    for gi, g in enumerate(groups):
        (t, ts), _ = _series(g)
        if not ts[specs[0][1]].shape[1]:
            continue
        drawn = True
        prefix = _QMARK if compare else ""
        for ax, key, colour, ls, label, gid in specs:
            plotter.quantity(ax, t, ts[key], colour=g.colour if compare else colour, ls=ls,
                             label=f"{prefix}{label}", gid=f"g{gi}-{gid}")
    return drawn


def _plot_conc(fig, plotter, groups, compare):
    ax = fig.add_subplot()
    drawn = _draw_quantities(plotter, groups, compare, [
        (ax, "csf_ng_per_ml", "#1f5fa8", "-", "lumbar CSF", "csf"),
        (ax, "effect_ng_per_ml", "#b9770e", "--", "effect site", "effect"),
    ])
    return _finish(ax, groups, drawn, "time series", "baclofen (ng/mL)",
                   f"Concentrations: lumbar CSF and effect site ({ILLUSTRATIVE})")


def _plot_spasticity(fig, plotter, groups, compare):
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    drawn = _draw_quantities(plotter, groups, compare, [
        (ax1, "mas", "#2a8a3e", "-", "MAS", "mas"),
        (ax2, "withdrawal_risk", "#c0392b", "-", "withdrawal risk", "withdrawal"),
        (ax2, "sedation", "#7d3c98", "--", "sedation", "sedation"),
    ])
    if not drawn:
        _empty(ax1, "time series")
    ax1.set_ylim(-0.1, 4.1)
    ax1.set_ylabel("MAS (0–4)")
    ax1.set_title(f"Spasticity: modified Ashworth scale ({ILLUSTRATIVE})")
    ax2.set_ylim(-0.03, 1.03)
    ax2.set_ylabel("index (0–1)")
    ax2.set_title(f"Risk indices: withdrawal and sedation ({ILLUSTRATIVE})")
    _x_days(ax2, groups)
    return f"Spasticity and risk indices ({ILLUSTRATIVE})"


# ---------------------------------------------------------------------------
# HTML

_CSS = """
:root { --ink: #1a1a1a; --muted: #555; --rule: #cfcfcf; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: var(--ink);
  font-size: 10.5pt; line-height: 1.35; margin: 0 auto; padding: 12mm 10mm; max-width: 210mm;
  background: #fff; }
h1 { font-size: 17pt; margin: 4mm 0 2mm; }
h2 { font-size: 13pt; margin: 6mm 0 2mm; border-bottom: 1.5px solid var(--ink);
  padding-bottom: 1mm; }
h3 { font-size: 11pt; margin: 4mm 0 1.5mm; }
.banner { border: 2px solid #c0392b; background: #fdecea; color: #7b1d14; font-weight: bold;
  padding: 2.5mm 3mm; margin: 0 0 3mm; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 0.6mm 4mm; margin: 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; }
ul.notes { margin: 2mm 0; padding-left: 5mm; }
table { border-collapse: collapse; width: 100%; font-size: 9pt; margin: 1.5mm 0 3mm; }
th, td { border-bottom: 1px solid var(--rule); padding: 1mm 1.5mm; text-align: left;
  vertical-align: top; }
th { background: #f1f1f1; }
thead { display: table-header-group; }
tr { break-inside: avoid; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num, td.label { white-space: nowrap; }
table.wide { font-size: 8pt; }
.scroll { overflow-x: auto; }
td.args { font-family: "DejaVu Sans Mono", monospace; font-size: 8pt; word-break: break-word; }
td.time { white-space: nowrap; }
.prio-high { color: #fff; background: #c0392b; font-weight: bold; }
.prio-medium { color: #5a3b00; background: #f7c948; }
.prio-low { color: #333; background: #e3e3e3; }
.refused { color: #a11; font-weight: bold; }
.over { color: #a11; font-weight: bold; }
.more { color: var(--muted); font-style: italic; }
figure { margin: 2mm 0 5mm; break-inside: avoid; }
figure svg.plot { width: 100%; height: auto; display: block; }
figcaption { font-size: 8.5pt; color: var(--muted); margin-top: 1mm; }
.empty { color: var(--muted); font-style: italic; }
@page { size: A4 portrait; margin: 12mm; }
@media print {
  body { padding: 0; max-width: none; font-size: 9.5pt; }
  section { break-before: page; }
  h2, h3 { break-after: avoid; }
  .banner { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  th, td, .prio-high, .prio-medium, .prio-low { -webkit-print-color-adjust: exact;
    print-color-adjust: exact; }
}
"""


def _e(value):
    return html.escape(str(value), quote=True)


def _fmt_num(x):
    """A number for a table: ints with separators, floats with 1-3 significant decimals."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if math.isnan(x):
            return "—"
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        a = abs(x)
        if a >= 100:
            return f"{x:,.1f}"
        if a >= 1 or a == 0:
            return f"{x:.2f}"
        return f"{x:.3g}"
    return str(x)


def _generator_note():
    from importlib import metadata

    try:
        mpl_version = metadata.version("matplotlib")
    except metadata.PackageNotFoundError:  # pragma: no cover - matplotlib is a dependency
        mpl_version = "?"
    return (
        f"Generated by sim.report with matplotlib {mpl_version}; no timestamp, so the same "
        "runs give the same file."
    )


def _head(title):
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
    )


def _table(headers, rows, *, num_cols=(), more=0, more_text="", cls=""):
    """rows: lists of (html, extra_class) or plain already-escaped html strings."""
    out = ['<div class="scroll">', f'<table class="{cls}">' if cls else "<table>", "\n<thead><tr>"]
    for i, h in enumerate(headers):
        c = ' class="num"' if i in num_cols else ""
        out.append(f"<th{c}>{h}</th>")
    out.append("</tr></thead>\n<tbody>\n")
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            text, extra = cell if isinstance(cell, tuple) else (cell, "")
            classes = " ".join(c for c in ("num" if i in num_cols else "", extra) if c)
            out.append(f'<td class="{classes}">{text}</td>' if classes else f"<td>{text}</td>")
        out.append("</tr>\n")
    if more:
        out.append(f'<tr><td class="more" colspan="{len(headers)}">{_e(more_text)}</td></tr>\n')
    out.append("</tbody>\n</table>\n</div>\n")
    return "".join(out)


def _stat(values):
    """One group's figure as HTML: the value when every run has the same one (or there is
    one run), else "median [p10–p90]" across runs; runs without the value are left out."""
    import numpy as np

    known = [(x, v) for x in values if not math.isnan(v := _num(x))]
    if not known:
        return "—"
    nums = [v for _, v in known]
    if min(nums) == max(nums):
        raw = known[0][0]
        exact = isinstance(raw, int) and not isinstance(raw, bool)
        return _e(_fmt_num(raw if exact else nums[0]))
    p10, p50, p90 = (float(p) for p in np.percentile(np.asarray(nums), [10, 50, 90]))
    return f"{_e(_fmt_num(p50))} [{_e(_fmt_num(p10))}–{_e(_fmt_num(p90))}]"


def _counts(values):
    """Whole-number floats (30.0 days) as ints, so that they print as counts."""
    return [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]


def _key_rows(groups):
    def col(fn):
        return [fn(g) for g in groups]

    def summ(g, *keys):
        vals = []
        for r in g.runs:
            v = r["summary"]
            for k in keys:
                v = v.get(k) if isinstance(v, dict) else None
            vals.append(v)
        return vals

    def cap_cell(g, key, hours):
        # each window against its own cap: the prescription's 24 h or 1 h cap
        cells = _stat(summ(g, key))
        cap_key = "cap_24h_ug" if hours == 24 else "cap_1h_ug"
        fracs, over = [], 0
        for r in g.runs:
            cap, got = _num(r.get(cap_key)), _num(r["summary"].get(key))
            if math.isnan(cap) or math.isnan(got) or cap <= 0:
                continue
            fracs.append(100.0 * got / cap)
            over += got > cap + 1e-9
        if not fracs:
            return cells + " (SR-3 default cap)"
        if len(g.runs) == 1:
            note = f"{fracs[0]:.1f} % of the {hours} h cap"
            if over:
                return f'<span class="over">{cells} ({note}: OVER CAP)</span>'
            return f"{cells} ({note})"
        text = f"{cells}; {_stat(fracs)} % of the {hours} h cap"
        cls = ' class="over"' if over else ""
        text += f"; <span{cls}>{over} of {len(fracs)} runs over cap</span>"
        return text

    def caps(g):
        vals = {_num(r.get("cap_24h_ug")) for r in g.runs}
        vals = sorted(v for v in vals if not math.isnan(v))
        return ", ".join(_e(_fmt_num(v)) for v in vals) or "—"

    def alarms(g):
        counts = {"high": [], "medium": [], "low": []}
        for r in g.runs:
            per = {"high": 0, "medium": 0, "low": 0}
            for a in r["summary"].get("alarms") or []:
                p = str(a.get("priority"))
                if p in per:
                    per[p] += 1
            for p in per:
                counts[p].append(per[p])
        return " / ".join(_stat(counts[p]) for p in ("high", "medium", "low"))

    def commands(g):
        acc, ref = [], []
        for r in g.runs:
            cmds = r["summary"].get("commands") or []
            acc.append(sum(1 for c in cmds if c.get("accepted")))
            ref.append(sum(1 for c in cmds if not c.get("accepted")))
        return f"{_stat(acc)} accepted / {_stat(ref)} refused"

    def refill(g):
        return _stat([r.get("projected_refill_day") for r in g.runs])

    return [
        ("Scenario", col(lambda g: _e(g.scenario))),
        ("Duration (days)", col(lambda g: _stat(_counts(summ(g, "duration_days"))))),
        ("Runs", col(lambda g: _e(len(g.runs)))),
        ("Delivered in total (µg)", col(lambda g: _stat(summ(g, "totals", "delivered_ug")))),
        ("Delivered in total (mL)", col(lambda g: _stat(summ(g, "totals", "delivered_ml")))),
        ("Pump strokes", col(lambda g: _stat(_counts(summ(g, "totals", "strokes"))))),
        ("Prescription 24 h cap (µg)", col(caps)),
        (
            "Max delivered in any 24 h (µg)",
            col(lambda g: cap_cell(g, "max_delivered_ug_any_24h", 24)),
        ),
        ("Max delivered in any 1 h (µg)", col(lambda g: cap_cell(g, "max_delivered_ug_any_1h", 1))),
        ("Projected low-reservoir alarm (day)", col(refill)),
        ("Alarms high / medium / low", col(alarms)),
        ("Commands", col(commands)),
    ]


def _header_section(title, notes, groups, runs, compare):
    scenarios = []
    for r in runs:
        s = str(r["summary"].get("scenario", ""))
        if s not in scenarios:
            scenarios.append(s)
    durations = {_num(r["summary"].get("duration_days")) for r in runs}
    durations = sorted(d for d in durations if not math.isnan(d))
    if compare:
        mode = f"comparison of {len(groups)} groups"
    elif len(runs) > 1:
        mode = "cohort: median and 10–90 % percentile band across runs"
    else:
        mode = "single run"
    out = [
        "<header>\n",
        f'<div class="banner">{_e(BANNER)}</div>\n',
        f"<h1>{_e(title)}</h1>\n",
        '<dl class="meta">\n',
        f"<dt>Scenario</dt><dd>{'<br>'.join(_e(s) for s in scenarios)}</dd>\n",
        f"<dt>Duration</dt><dd>{_e(', '.join(f'{d:g}' for d in durations) or '—')} days</dd>\n",
        f"<dt>Runs</dt><dd>{len(runs)} ({_e(mode)})</dd>\n",
    ]
    for label, key in (("Patient", "patient"), ("Origin", "origin"), ("Seed", "seed"),
                       ("Concentration (µg/mL)", "concentration_ug_per_ml")):
        vals = []
        for r in runs:
            v = r["summary"].get(key)
            if v is not None and str(v) not in vals:
                vals.append(str(v))
        if vals:
            shown = ", ".join(vals[:6]) + (f" … ({len(vals)} values)" if len(vals) > 6 else "")
            out.append(f"<dt>{_e(label)}</dt><dd>{_e(shown)}</dd>\n")
    if compare:
        glist = "<br>".join(
            f'<span style="color:{g.colour}">■</span> {_e(g.label)} ({len(g.runs)} run'
            f"{'s' if len(g.runs) != 1 else ''})"
            for g in groups
        )
        out.append(f"<dt>Groups</dt><dd>{glist}</dd>\n")
    out.append(f"<dt>Generated</dt><dd>{_e(_generator_note())}</dd>\n</dl>\n")
    notes = [n for n in notes if str(n)]
    if notes:
        out.append('<ul class="notes">\n')
        out += [f"<li>{_e(n)}</li>\n" for n in notes]
        out.append("</ul>\n")
    out.append("<h2>Key figures</h2>\n")
    if compare or len(runs) == 1:
        heads = [_e(g.label) for g in groups]
    else:
        heads = [_e(f"{groups[0].label}: median [10–90 %]")]
    rows = [[_e(name)] + cells for name, cells in _key_rows(groups)]
    out.append(_table(["Figure"] + heads, rows, cls="key"))
    out.append("</header>\n")
    return "".join(out)


def _plot_section(heading, figures):
    out = [f"<section>\n<h2>{_e(heading)}</h2>\n"]
    for title, svg, caption in figures:
        out.append(f'<figure aria-label="{_e(title)}">\n{svg}')
        if caption:
            out.append(f"<figcaption>{_e(caption)}</figcaption>\n")
        out.append("</figure>\n")
    out.append("</section>\n")
    return "".join(out)


def _cohort_section(rows):
    columns = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    if "label" in columns:
        columns.remove("label")
        columns.insert(0, "label")
    shown = rows[:MAX_TABLE_ROWS]
    num_cols = {
        i
        for i, c in enumerate(columns)
        if any(isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool) for r in shown)
    }
    body = [
        [(_e(_fmt_num(r.get(c))), "label" if i == 0 else "") for i, c in enumerate(columns)]
        for r in shown
    ]
    more = len(rows) - len(shown)
    return (
        "<section>\n<h2>Per-run outcomes</h2>\n"
        + _table(
            [_e(c).replace("_", "_<wbr>") for c in columns],  # long keys may wrap at "_"
            body,
            num_cols=num_cols,
            cls="wide",
            more=more,
            more_text=f"{more} more rows not shown",
        )
        + "</section>\n"
    )


def _alarm_section(runs):
    multi = len(runs) > 1
    counts = {}
    for r in runs:
        for a in r["summary"].get("alarms") or []:
            key = (str(a.get("code")), str(a.get("priority")))
            n, labels = counts.get(key, (0, set()))
            labels.add(id(r))
            counts[key] = (n + 1, labels)
    out = ["<section>\n<h2>Alarms</h2>\n"]
    if not counts:
        out.append('<p class="empty">No alarm was raised.</p>\n</section>\n')
        return "".join(out)
    keys = sorted(counts, key=lambda k: (PRIORITY_ORDER.get(k[1], 9), k[0]))
    heads = ["Code", "Priority", "Raised"] + (["Runs with it"] if multi else [])
    rows = []
    for code, prio in keys:
        n, rs = counts[(code, prio)]
        row = [_e(code), (_e(prio), f"prio-{_e(prio)}"), _e(n)]
        if multi:
            row.append(f"{len(rs)} of {len(runs)}")
        rows.append(row)
    out.append("<h3>By code</h3>\n")
    out.append(_table(heads, rows, num_cols={2, 3}))
    detail = []
    for r in runs:
        for a in r["summary"].get("alarms") or []:
            prio = str(a.get("priority"))
            row = [(_e(fmt_time(a.get("t_s", 0))), "time")]
            if multi:
                row.append(_e(r.get("label", "")))
            row += [_e(a.get("code")), (_e(prio), f"prio-{_e(prio)}")]
            detail.append(row)
    shown = detail[:MAX_TABLE_ROWS]
    more = len(detail) - len(shown)
    heads = ["Time"] + (["Run"] if multi else []) + ["Code", "Priority"]
    out.append("<h3>In time order</h3>\n")
    out.append(_table(heads, shown, more=more, more_text=_more_text(more, multi)))
    out.append("</section>\n")
    return "".join(out)


def _more_text(more, multi):
    where = "the runs' summary.json files" if multi else "summary.json"
    return f"{more} more in {where}"


def _args_text(args, limit=240):
    try:
        text = json.dumps(
            args, sort_keys=True, ensure_ascii=False, separators=(", ", ": "), default=str
        )
    except (TypeError, ValueError):
        text = str(args)
    if text in ("{}", "null"):
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _command_section(runs):
    multi = len(runs) > 1
    rows = []
    for r in runs:
        summary = r["summary"]
        setup = [dict(c, command=f"{c.get('command')} (set-up)")
                 for c in summary.get("setup") or []]
        for c in setup + list(summary.get("commands") or []):
            ok = bool(c.get("accepted"))
            row = [(_e(fmt_time(c.get("t_s", 0))), "time")]
            if multi:
                row.append(_e(r.get("label", "")))
            row += [
                _e(c.get("command")),
                ("yes", "") if ok else ("no", "refused"),
                "—" if ok else _e(refusal_text(c)),
                (_e(_args_text(c.get("args"))), "args"),
            ]
            rows.append(row)
    out = ["<section>\n<h2>Commands</h2>\n"]
    if not rows:
        out.append('<p class="empty">No command was sent.</p>\n</section>\n')
        return "".join(out)
    shown = rows[:MAX_TABLE_ROWS]
    more = len(rows) - len(shown)
    heads = ["Time"] + (["Run"] if multi else []) + ["Command", "Accepted", "Reason",
                                                     "Arguments"]
    out.append(_table(heads, shown, more=more, more_text=_more_text(more, multi)))
    out.append("</section>\n")
    return "".join(out)


def _sim_event_section(runs):
    """Simulator events (power cuts, faults, clock changes) as they were applied."""
    multi = len(runs) > 1
    rows = []
    for r in runs:
        for e in r["summary"].get("sim_events") or []:
            row = [(_e(fmt_time(e.get("t_s", 0))), "time")]
            if multi:
                row.append(_e(r.get("label", "")))
            row += [_e(e.get("event")), (_e(_args_text(e.get("args"))), "args")]
            rows.append(row)
    if not rows:
        return ""
    shown = rows[:MAX_TABLE_ROWS]
    more = len(rows) - len(shown)
    heads = ["Time"] + (["Run"] if multi else []) + ["Event", "Arguments"]
    return ("<section>\n<h2>Simulator events</h2>\n"
            + _table(heads, shown, more=more, more_text=_more_text(more, multi))
            + "</section>\n")
