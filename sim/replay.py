"""``itbsim replay``: a recorded runner trace (from a simulation, or exported from a
board) through the patient model.

The trace's inputs are re-run through the controller (``itb.runner``'s
``JournalReplayer``, the same code that wrote it), so every stroke and its
outcome come back as they happened; the mass each completed stroke pushed out of
the catheter tip is the controller's own nominal figure (``delivered_pg``, the
fluid path at nominal stroke volume: a trace holds no truth beyond it). The
patient starts drug-naive at the first record, and the trace's therapy clock is
the time axis. Output has the ``summary.json`` shape of ``itbsim run`` with
``"source": "trace"``; true-reservoir columns repeat the controller's estimate.
"""

from itb.controller import Controller
from itb.runner import JournalReplayer, Runner
from itb.trace import decode

from sim import patient as pt
from sim.engine import DAY_MS, HOUR_MS, NoAudit, max_window, programmed_ug_per_day

MAX_REPLAY_MS = 36500 * DAY_MS  # a century, as for scenarios (hourly rows in memory)


class _Tap:
    """Between the replay board and the runner: notes when each stroke ran and,
    at the next stroke (or ``flush``), the nominal mass its completion added."""

    def __init__(self, inner, deliveries):
        self.inner = inner
        self.deliveries = deliveries
        self.ctrl = None
        self.pg = 0
        self.last_t = None
        self.strokes = 0  # commanded strokes (intents the replay ran)

    def stroke(self, n, volume_nl, now):
        self.flush()
        self.last_t = now
        self.strokes += 1
        return self.inner.stroke(n, volume_nl, now)

    def flush(self):
        if self.ctrl is None:
            return
        pg = self.ctrl.delivered_pg
        if pg > self.pg and self.last_t is not None:
            self.deliveries.append((self.last_t, (pg - self.pg) / 1000.0, self.ctrl.cfg.stroke_nl))
        self.pg = pg


class ReplayResult:
    def __init__(self, summary, rows, low_ml):
        self.summary, self.rows, self.low_ml = summary, rows, low_ml

    def report_run(self):
        return {"label": "trace", "group": "A", "summary": self.summary,
                "timeseries": self.rows, "low_reservoir_ml": self.low_ml,
                "projected_refill_day": None, "cap_24h_ug": None, "cap_1h_ug": None}


def replay(lines, params, source="trace"):
    """Replay ``lines`` (JSONL text lines) with a patient ``params``; returns a
    ReplayResult. Raises ValueError for a line that is not a trace record or a
    trace that does not start with a ``config`` record."""
    deliveries, samples, alarms, commands = [], [], [], []
    rep, tap, runner = None, None, None
    end_t = 0
    pending_cmd = None
    prepared = "confirm"  # the command the last accepted prepare named
    next_h = 0
    for i, line in enumerate(lines):
        line = line.strip()
        if not line:
            continue
        try:
            rec = decode(line)
        except ValueError as e:
            hint = ""
            if '"record"' in line or line.startswith("seq,"):
                hint = " (a ledger export? export it with: itbctl log export --format trace)"
            raise ValueError(f"line {i + 1}: {e}{hint}") from None
        k, t = rec["k"], rec["t"]
        if k == "config":
            if runner is not None:
                raise ValueError(f"line {i + 1}: one run per replay (a second config record)")
            runner = Runner(Controller(rec.get("cfg") or None, NoAudit()), None)
            rep = JournalReplayer(runner)
            tap = _Tap(rep.board, deliveries)
            tap.ctrl = runner.ctrl
            runner.board = tap
            continue
        if rep is None:
            raise ValueError("the trace must start with a config record")
        if t > MAX_REPLAY_MS:
            raise ValueError(f"line {i + 1}: t={t} ms is past {MAX_REPLAY_MS // DAY_MS} days")
        while next_h <= t:
            samples.append(_sample(next_h, runner))
            next_h += HOUR_MS
        if k == "alarm" and rec["ev"] == "raise":
            alarms.append({"t_s": t // 1000, "code": rec["code"], "priority": rec["pri"]})
        elif k == "cmd":
            pending_cmd = rec["cmd"]
        elif k == "result" and pending_cmd is not None:
            name = pending_cmd.get("name")
            args = pending_cmd.get("args")
            if name == "prepare" and rec["ok"] and isinstance(args, dict):
                prepared = args.get("command")  # a confirm applies it
            elif name != "prepare" or not rec["ok"]:
                if name == "confirm":
                    name = prepared
                elif name == "prepare" and isinstance(args, dict):
                    name = args.get("command", name)  # refused in phase one
                commands.append({"t_s": t // 1000, "command": name,
                                 "accepted": bool(rec["ok"]),
                                 "reason": None if rec["ok"] else rec.get("reason")})
            pending_cmd = None
        rep.feed(rec)
        end_t = t
    if runner is None:
        raise ValueError("the trace is empty")
    tap.flush()
    samples.append(_sample(next_h, runner))
    return _result(deliveries, samples, alarms, commands, tap.strokes, end_t, params,
                   runner.ctrl.cfg.low_reservoir_nl / 1e6, source)


def _sample(t, runner):
    """The controller's view at ``t`` (state before the records at ``t``); OFF while
    the power is off."""
    ctrl = runner.ctrl
    r = ctrl.res
    on = runner.powered
    return (t, ctrl.state if on else "OFF", programmed_ug_per_day(ctrl) if on else 0.0,
            r.remaining_nl() / 1e6, r.pessimistic_nl() / 1e6, r.optimistic_nl() / 1e6)


def _result(deliveries, samples, alarms, commands, strokes, end_t, params, low_ml, source):
    patient = pt.Patient(params, 0)
    rows = []
    di = 0
    days = max(1, -(-end_t // DAY_MS))
    day_ng, day_nl = [0.0] * days, [0.0] * days
    for t, state, prog, est, pess, opt in samples:
        hour_ng = hour_nl = 0.0
        while di < len(deliveries) and deliveries[di][0] < t:
            dt, ng, nl = deliveries[di]
            patient.dose(dt, ng)
            hour_ng += ng
            hour_nl += nl
            d = min(dt // DAY_MS, days - 1)
            day_ng[d] += ng
            day_nl[d] += nl
            di += 1
        patient.advance(t)
        p = patient.state()
        rows.append({"t_h": t / HOUR_MS, "state": state, "programmed_daily_dose_ug": prog,
                     "delivered_ug": hour_ng / 1000, "delivered_ml": hour_nl / 1e6,
                     "reservoir_true_ml": est, "reservoir_est_ml": est,
                     "reservoir_pess_ml": pess, "reservoir_opt_ml": opt,
                     "csf_ng_per_ml": p["csf_ng_per_ml"], "effect_ng_per_ml": p["effect_ng_per_ml"],
                     "mas": p["mas"], "withdrawal_risk": p["withdrawal_risk"],
                     "sedation": p["sedation"], "battery_pct": float("nan")})
    by_day = {}
    for r in rows:
        by_day[int(r["t_h"] // 24)] = r
    times = [d[0] for d in deliveries]
    masses = [d[1] for d in deliveries]
    summary = {
        "scenario": f"replay of {source}", "source": "trace",
        "duration_days": end_t / DAY_MS, "patient": params.name, "model_note": pt.MODEL_NOTE,
        "totals": {"delivered_ug": sum(day_ng) / 1000, "delivered_ml": sum(day_nl) / 1e6,
                   "strokes": strokes},
        "max_delivered_ug_any_24h": max_window(times, masses, DAY_MS) / 1000,
        "max_delivered_ug_any_1h": max_window(times, masses, HOUR_MS) / 1000,
        "daily": [{"day": d, "programmed_daily_dose_ug": by_day.get(d + 1, rows[-1])[
            "programmed_daily_dose_ug"], "delivered_ug": day_ng[d] / 1000,
            "reservoir_ml": by_day.get(d + 1, rows[-1])["reservoir_est_ml"]} for d in range(days)],
        "alarms": alarms, "commands": commands,
    }
    return ReplayResult(summary, rows, low_ml)
