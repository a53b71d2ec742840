"""Seeded cohorts (``itbsim cohort``): one scenario, many virtual patients.

Patient ``i`` of a cohort gets ``patient.cohort(n, seed, model)[i]`` (clearance and
half-life sampled jointly) and the pump seed ``seed + i``: each run is a pure
function of ``(scenario, seed, i)``, run in parallel processes
(``concurrent.futures``), so a distributed engine can map it later.

Outcomes per patient (illustrative, not validated, like the model they come from):
time in the effective range (share of hourly samples with spasticity at least
``EFFECTIVE_MAS_DROP`` below the patient's untreated baseline and withdrawal-risk
and sedation indices both below ``INDEX_LIMIT``), peak withdrawal-risk and sedation
indices, alarms raised (all, and high priority), delivered mass and the largest
24 h mass, all from every hourly sample. Long runs send one sample a day back for
the cohort plots.
"""

import json
import sys
from concurrent.futures import ProcessPoolExecutor

from sim import outputs
from sim import patient as pt

EFFECTIVE_MAS_DROP = 1.0  # one Ashworth grade (project choice)
INDEX_LIMIT = 0.5  # project choice
TABLE_COLUMNS = ("patient", "cl_ml_per_h", "half_life_h", "time_in_range_pct",
                 "peak_withdrawal_risk", "peak_sedation", "alarms", "high_alarms",
                 "delivered_ug", "max_ug_any_24h")


def run_one(job):
    """``(scenario, params, seed)`` -> ``(summary, rows, projected_refill_day,
    outcome)``: the outcome from every hourly row, the rows sent back (for the
    plots) thinned to one a day for runs over 60 days."""
    from sim import engine

    sc, params, seed = job
    res = engine.Simulation(sc.with_seed(seed), params=params).run()
    rows = res.rows if sc.duration_days <= 60 else res.rows[::24]
    return res.summary, rows, res.projected_refill_day, outcome(params.name, params,
                                                               res.summary, res.rows)


def outcome(label, params, summary, rows):
    """The outcome-table row of one patient (see the module docstring)."""
    n = len(rows) or 1
    ok = sum(1 for r in rows if r["mas"] <= params.mas_baseline - EFFECTIVE_MAS_DROP
             and r["withdrawal_risk"] < INDEX_LIMIT and r["sedation"] < INDEX_LIMIT)
    return {
        "patient": label, "cl_ml_per_h": round(params.cl_ml_per_h, 1),
        "half_life_h": round(params.half_life_h, 2),
        "time_in_range_pct": round(100.0 * ok / n, 1),
        "peak_withdrawal_risk": round(max((r["withdrawal_risk"] for r in rows), default=0), 3),
        "peak_sedation": round(max((r["sedation"] for r in rows), default=0), 3),
        "alarms": len(summary["alarms"]),
        "high_alarms": sum(1 for a in summary["alarms"] if a["priority"] == "high"),
        "delivered_ug": round(summary["totals"]["delivered_ug"], 1),
        "max_ug_any_24h": round(summary["max_delivered_ug_any_24h"], 1),
    }


def run_cohort(sc, out, n, jobs, seed, model=None, progress=True):
    """Run ``n`` patients on ``jobs`` processes; writes ``cohort.csv``,
    ``cohort.json`` (outcome table), ``patients/NNN.json`` (summaries) and
    ``report.html`` into ``out``. Returns ``(table, report_path)``."""
    from tqdm import tqdm

    from sim import report as rp

    people = pt.cohort(n, seed, model or sc.model)
    work = [(sc, people[i], seed + i) for i in range(n)]
    out = outputs.prepare_dir(out)
    (out / "patients").mkdir(exist_ok=True)
    results = [None] * n
    bar = tqdm(total=n, desc="patients", unit="pt", file=sys.stderr, disable=not progress)
    if jobs == 1:
        for i, job in enumerate(work):
            results[i] = run_one(job)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            futures = {ex.submit(run_one, job): i for i, job in enumerate(work)}
            from concurrent.futures import as_completed

            for f in as_completed(futures):
                results[futures[f]] = f.result()
                bar.update()
    bar.close()
    table, runs = [], []
    for line in sorted({w for r in results for w in outputs.setup_warnings(r[0]["setup"])}):
        print(f"itbsim cohort: {line}", file=sys.stderr)
    for i, (summary, rows, refill_day, row) in enumerate(results):
        label = people[i].name
        table.append(row)
        (out / "patients" / f"{i:03d}.json").write_text(json.dumps(summary) + "\n")
        runs.append({"label": label, "group": "A", "summary": summary, "timeseries": rows,
                     "projected_refill_day": refill_day, **outputs.limits_for_report(sc)})
    with open(out / "cohort.csv", "w") as f:
        f.write(",".join(TABLE_COLUMNS) + "\n")
        for row in table:
            f.write(",".join(str(row[c]) for c in TABLE_COLUMNS) + "\n")
    (out / "cohort.json").write_text(json.dumps(table, indent=1) + "\n")
    path = out / "report.html"
    rp.write_report(path, runs, f"{sc.name}: cohort of {n} ({model or sc.model}, seed {seed})",
                    cohort_table=table)
    return table, path


def format_table(table):
    """The outcome table as aligned text (first and last rows, medians)."""
    cols = TABLE_COLUMNS
    widths = [max(len(c), *(len(str(r[c])) for r in table)) for c in cols]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    shown = table if len(table) <= 12 else table[:6] + table[-6:]
    for i, r in enumerate(shown):
        if len(table) > 12 and i == 6:
            lines.append(f"  ... {len(table) - 12} more in cohort.csv")
        lines.append("  ".join(str(r[c]).rjust(w) for c, w in zip(cols, widths, strict=True)))
    med = {}
    for c in cols[3:]:
        vals = sorted(r[c] for r in table)
        med[c] = vals[len(vals) // 2]
    lines.append("median: " + ", ".join(f"{c} {med[c]}" for c in cols[3:]))
    lines.append("(patient-model outcomes are illustrative, not validated)")
    return "\n".join(lines)
