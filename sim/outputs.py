"""Files a run writes: ``summary.json``, ``timeseries.csv``, ``trace.jsonl`` (the
runner's own trace, written while the run goes) and ``report.html``.

``timeseries.csv`` has one row per hour (and one at the end), columns
``TIMESERIES_COLUMNS``: times in hours since the scenario start, doses in ug/day,
delivered ug and mL in the hour before the row (half-open ``[t - 1 h, t)``),
volumes in mL, concentrations in ng/mL, spasticity on the Modified Ashworth Scale
(0-4), indices 0-1. Columns from the patient model (``MODEL_COLUMNS``) are
illustrative, not validated (``sim/patient.py``): the last column, ``model_note``,
says so on every row, so the file carries its warning wherever it is copied.
"""

import csv
import json
from pathlib import Path

from itb.drugs import DeviceConfig

from sim.patient import MODEL_NOTE

TIMESERIES_COLUMNS = (
    "t_h", "state", "programmed_daily_dose_ug", "delivered_ug", "delivered_ml",
    "reservoir_true_ml", "reservoir_est_ml", "reservoir_pess_ml", "reservoir_opt_ml",
    "csf_ng_per_ml", "effect_ng_per_ml", "mas", "withdrawal_risk", "sedation", "battery_pct",
    "model_note",
)
MODEL_COLUMNS = ("csf_ng_per_ml", "effect_ng_per_ml", "mas", "withdrawal_risk", "sedation")


def prepare_dir(out):
    """Create the output directory (parents too); returns it as a Path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_summary(path, summary):
    Path(path).write_text(json.dumps(summary, indent=1, sort_keys=False) + "\n")


def write_timeseries(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TIMESERIES_COLUMNS)
        for r in rows:
            w.writerow([_cell(r[c]) for c in TIMESERIES_COLUMNS[:-1]] + [MODEL_NOTE])


def _cell(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def report_run(label, result, scenario, group="A"):
    """A run as the report module takes it (``sim.report.write_report``)."""
    s = result.summary
    return {
        "label": label, "group": group, "summary": s, "timeseries": result.rows,
        "projected_refill_day": result.projected_refill_day, **limits_for_report(scenario),
    }


def limits_for_report(scenario):
    """The lines a report draws for ``scenario``: the prescription's caps (None: the
    SR-3 default) and the device's low-reservoir alarm volume."""
    cfg = DeviceConfig(scenario.config)
    return {"cap_24h_ug": scenario.program.get("cap_24h_ng", 0) / 1000 or None,
            "cap_1h_ug": scenario.program.get("cap_1h_ng", 0) / 1000 or None,
            "low_reservoir_ml": cfg.low_reservoir_nl / 1e6}


def refusal_text(row):
    """A refused command's reason code, message, and the allowed value or offered plan
    (a ``commands`` or ``setup`` row of summary.json)."""
    text = str(row.get("reason"))
    if row.get("message"):
        text += f": {row['message']}"
    if row.get("allowed_text"):
        text += f" (allowed: {row['allowed_text']})"
    if row.get("offer_text"):
        text += f" (offered: {row['offer_text']})"
    return text


def setup_warnings(setup):
    """Lines saying which set-up command the controller refused (empty when none)."""
    return [f"WARNING: set-up {row['command']} refused, {refusal_text(row)}; the pump was never"
            " programmed as the scenario says" for row in setup if not row["accepted"]]
