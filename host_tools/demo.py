"""Scripted demo run of the ITB controller (a research/engineering tool, not a medical device).

    python -m host_tools.demo [EXAMPLE.json] [--days N] [--trace FILE]

Runs the controller through ``itb.runner`` with a board whose every stroke succeeds, for
the scenario in EXAMPLE.json (default: ``examples/demo_spinal.json``): device config
overrides, set-up commands at day 0 (one minute apart), then timed events
(``"at": "day D HH:MM"``). Two-phase commands are sent as ``prepare`` and, if accepted,
``confirm`` 20 s later (SR-15). Argument names may carry any unit suffix the command
schema lists (``daily_dose_ug``, ``volume_ml``, ``every_h``); they are converted exactly
to the canonical integer units before sending. An event's optional ``expect`` (``ok`` or
a reason code) is compared with the outcome.

Prints one row per day (basal at the end of the day, strokes, counted upper-bound mass
from the strokes' ``ng_hi``, nominal mass from ``Controller.delivered_pg``, reservoir and
pessimistic reservoir, alarms raised), then every command with its outcome. The runner
trace (JSONL, ``firmware/itb/trace.py``) goes to ``out/demo_trace.jsonl`` by default.
"""

import argparse
import json
import re
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "firmware") not in sys.path:  # also runs without the package installed
    sys.path.insert(0, str(REPO / "firmware"))

from itb import commands as cmds  # noqa: E402  (after the path fallback above)
from itb import runner as rn  # noqa: E402

DEFAULT_EXAMPLE = REPO / "examples" / "demo_spinal.json"
DEFAULT_TRACE = REPO / "out" / "demo_trace.jsonl"
MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
CONFIRM_DELAY_MS = 20_000  # the clinician reads the prepared effect, then confirms
AT_RE = re.compile(r"^\s*day\s+(\d+)(?:\s+([01]?\d|2[0-3]):([0-5]\d))?\s*$")
SCENARIO_KEYS = {"title", "notes", "days", "config", "setup", "events"}
EVENT_KEYS = {"at", "command", "args", "role", "expect"}


class ScenarioError(ValueError):
    """The scenario file is wrong; the message lists every problem found."""


HEADER = (
    "ITB pump controller demo: research/engineering tool, NOT a medical device. "
    "Never connect it to a person."
)


class OkBoard:
    """A motor that always completes its stroke."""

    def stroke(self, n, volume_nl, now):
        return "ok"


def parse_at(text):
    m = AT_RE.match(text)
    if not m:
        raise ValueError(f"bad time {text!r}: use 'day D' or 'day D HH:MM' (HH 00-23)")
    return int(m[1]) * DAY_MS + int(m[2] or 0) * HOUR_MS + int(m[3] or 0) * MINUTE_MS


def when(t):
    h, m, s = t % DAY_MS // HOUR_MS, t % HOUR_MS // MINUTE_MS, t % MINUTE_MS // 1000
    return f"day {t // DAY_MS} {h:02d}:{m:02d}:{s:02d}"


def canonical_args(name, args):
    """Scenario args -> canonical integer args (``daily_dose_ug: 120`` -> ``daily_dose_ng``)."""
    out = {}
    for key, value in args.items():
        for p in cmds.params(name):
            if key == p["name"]:
                out[key] = value
                break
            base = p["name"][: -len(p["units"][0][0])] if p["units"] else None
            factor = [f for s, f in p["units"] if key == f"{base}{s}"]
            if factor:
                if type(value) not in (int, float):
                    raise ValueError(f"{name}: {key}={value!r} must be a number")
                v = Decimal(str(value)) * factor[0]
                if v != v.to_integral_value():
                    raise ValueError(f"{name}: {key}={value} is not a whole {p['name']}")
                out[p["name"]] = int(v)
                break
        else:
            raise ValueError(f"{name}: unknown argument {key!r}")
    return out


def check_scenario(scenario):
    """Every problem in a scenario (a list of strings; empty when it is fine)."""
    if not isinstance(scenario, dict):
        return ["the scenario must be a JSON object"]
    errors = [
        f"unknown key {k!r} (known: {', '.join(sorted(SCENARIO_KEYS))})"
        for k in scenario
        if k not in SCENARIO_KEYS
    ]
    for part in ("setup", "events"):
        for i, ev in enumerate(scenario.get(part, [])):
            where = f"{part}[{i}]"
            if not isinstance(ev, dict):
                errors.append(f"{where}: must be an object")
                continue
            errors += [f"{where}: unknown key {k!r}" for k in ev if k not in EVENT_KEYS]
            name = ev.get("command")
            if name not in cmds.COMMANDS or name in ("prepare", "confirm"):
                errors.append(
                    f"{where}: unknown command {name!r} (known: "
                    f"{', '.join(n for n in cmds.NAMES if n not in ('prepare', 'confirm'))})"
                )
                continue
            if part == "events":
                try:
                    parse_at(str(ev.get("at", "")))
                except ValueError as e:
                    errors.append(f"{where}: {e}")
            try:
                canonical_args(name, ev.get("args", {}))
            except (ValueError, InvalidOperation) as e:
                errors.append(f"{where}: {e}")
    return errors


def dec(value, scale, places):
    """Integer amount in a smaller unit as fixed-point text (display only)."""
    return f"{Decimal(value) / scale:.{places}f}"


def human(key, value):
    """A canonical amount for display, by its unit suffix."""
    if key.endswith("_ng"):
        return dec(value, 1000, 1) + (" ug/day" if "daily" in key else " ug")
    if key.endswith("_nl_per_day"):
        return dec(value, 1_000_000, 3) + " mL/day"
    if key.endswith("_nl"):
        return dec(value, 1_000_000, 3) + " mL"
    if key.endswith("_ms"):
        return dec(value, HOUR_MS, 2) + " h"
    return str(value)


class Demo:
    def __init__(self, scenario, trace_file):
        self.trace_file = trace_file
        self.ids = 0
        self.day_strokes, self.day_ng_hi, self.day_alarms = 0, 0, []
        self.log = []  # (t, name, scenario args, result, expected)
        self.runner = rn.start(scenario.get("config") or None, OkBoard(), self._trace)
        self.ctrl = self.runner.ctrl

    def _trace(self, line):
        self.trace_file.write(line + "\n")
        rec = json.loads(line)
        if rec["k"] == "stroke":
            self.day_strokes += 1
            self.day_ng_hi += rec["ng_hi"]
        elif rec["k"] == "alarm" and rec["ev"] == "raise":
            self.day_alarms.append(rec["code"])

    def _send(self, name, role, args, now):
        self.ids += 1
        return self.runner.command({"name": name, "id": self.ids, "role": role, "args": args}, now)

    def command(self, ev, at):
        name = ev["command"]
        role = ev.get("role", cmds.roles(name)[0])
        args = canonical_args(name, ev.get("args", {}))
        now = max(at, self.runner.now)  # never before what the runner has seen
        if cmds.is_two_phase(name):  # SR-15: prepare, read the effect, confirm
            res = self._send("prepare", role, {"command": name, "args": args}, now)
            if res["ok"]:
                res = self._send("confirm", role, {"hash": res["hash"]}, now + CONFIRM_DELAY_MS)
        else:
            res = self._send(name, role, args, now)
        self.log.append((now, name, ev.get("args", {}), res, ev.get("expect")))

    def day_row(self, day, prev_pg):
        s = self.ctrl.status()
        basal = dec(s["daily_dose_ng"], 1000, 1) if s["state"] == "RUNNING" else s["state"]
        nominal = dec(self.ctrl.delivered_pg - prev_pg, 1_000_000, 1)  # 1 ug = 10^6 pg
        row = (
            f"{day:3d}  {basal:>10}  {self.day_strokes:7d}  {dec(self.day_ng_hi, 1000, 1):>10}"
            f"  {nominal:>10}  {dec(s['reservoir_nl'], 1_000_000, 3):>7}"
            f"  {dec(s['reservoir_pess_nl'], 1_000_000, 3):>7}"
            f"  {s['concentration_ug_per_ml']:5d}  {' '.join(self.day_alarms) or '-'}"
        )
        self.day_strokes, self.day_ng_hi, self.day_alarms = 0, 0, []
        return row

    def run(self, scenario, days):
        for i, ev in enumerate(scenario.get("setup", [])):
            ev = dict(ev, expect=ev.get("expect", "ok"))  # set-up must succeed
            self.command(ev, i * MINUTE_MS)
        events = sorted((parse_at(e["at"]), i, e) for i, e in enumerate(scenario.get("events", [])))
        skipped = [e for e in events if e[0] >= days * DAY_MS]
        print("day  basal ug/d  strokes  counted ug  nominal ug   res mL  pess mL  ug/mL"
              "  alarms raised")
        prev_pg = 0
        for day in range(days):
            end = (day + 1) * DAY_MS
            while events and events[0][0] < end:
                at, _i, ev = events.pop(0)
                self.command(ev, at)
            self.runner.advance(end - 1)
            print(self.day_row(day, prev_pg))
            prev_pg = self.ctrl.delivered_pg
        return skipped


def describe(name, res):
    """One line (two with an offered plan) for a command's result."""
    e = res.get("effect", {})
    if not res["ok"]:
        text = f"REFUSED {res['reason']}: {res['message']}"
        if "allowed" in res:
            # the result names the unit of its allowed value
            key = {"ng_per_day": "daily_ng", "ng": "_ng", "nl": "_nl", "ms": "_ms",
                   "nl_per_day": "_nl_per_day"}.get(res.get("allowed_unit"), "")
            text += f"; allowed {human(key, res['allowed'])}"
        offer = res.get("offer")
        if offer:
            text += (
                f"\n{'':24}offered: {offer['command']} to "
                f"{human('daily_ng', offer['target_daily_dose_ng'])}, "
                f"{offer['step_pct']} % every {human('_ms', offer['every_ms'])}"
            )
        return text
    out = [f"state {e['state']}"] if e.get("state", "RUNNING") != "RUNNING" else []
    if e.get("daily_dose_ng") and not out:
        out.append("basal " + human("daily_dose_ng", e["daily_dose_ng"]))
    if "plan_doses_ng" in e:
        out.append("steps " + " > ".join(dec(d, 1000, 1) for d in e["plan_doses_ng"]))
    if "restart_pct" in e:
        out.append(f"restart at {e['restart_pct']} %")
    for key, label in (
        ("bolus_ng", "bolus"),
        ("discrepancy_nl", "refill discrepancy"),
        ("mass_24h_ng", "next 24 h <="),
    ):
        if key in e and (e[key] or key == "discrepancy_nl"):
            out.append(f"{label} {human(key, e[key])}")
    if e.get("empty_in_ms", 0) > 0:
        out.append(f"computed empty in {dec(e['empty_in_ms'], DAY_MS, 1)} d")
    return "ACCEPTED  " + ", ".join(out) if out else "ACCEPTED"


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m host_tools.demo", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "example",
        nargs="?",
        default=str(DEFAULT_EXAMPLE),
        help="scenario JSON (default: examples/demo_spinal.json)",
    )
    ap.add_argument("--days", type=int, help="days to run (default: the scenario's, else 20)")
    ap.add_argument(
        "--trace",
        default=str(DEFAULT_TRACE),
        help="JSONL trace output (default: out/demo_trace.jsonl)",
    )
    a = ap.parse_args(argv)
    try:
        scenario = json.loads(Path(a.example).read_text())
    except (OSError, ValueError) as e:
        print(f"{a.example}: cannot read the scenario: {e}", file=sys.stderr)
        return 2
    errors = check_scenario(scenario)
    if errors:
        for err in errors:
            print(f"{a.example}: {err}", file=sys.stderr)
        return 2
    days = a.days if a.days is not None else scenario.get("days", 20)
    if days < 1:
        print("--days must be at least 1", file=sys.stderr)
        return 2
    trace = Path(a.trace)
    trace.parent.mkdir(parents=True, exist_ok=True)
    print(HEADER)
    print(f"Scenario: {scenario.get('title', '?')}")
    print(f"  file {a.example}, {days} days, config overrides: {scenario.get('config') or 'none'}")
    print(
        "counted ug = sum of the strokes' upper-bound masses (what the caps count, SR-4);"
        " nominal ug = mass at nominal concentrations\n"
    )
    with trace.open("w") as f:
        demo = Demo(scenario, f)
        skipped = demo.run(scenario, days)
    print("\nCommands (therapy changes sent as prepare + confirm):")
    surprises = 0
    for t, name, args, res, expect in demo.log:
        shown = " ".join(f"{k}={v}" for k, v in args.items())
        print(f"  {when(t)}  {name:15} {shown}".rstrip())
        outcome = "ok" if res["ok"] else res["reason"]
        mark = "" if expect in (None, outcome) else f"   <-- scenario expected {expect}"
        surprises += 1 if mark else 0
        print(f"{'':24}{describe(name, res)}{mark}")
    for _at, _i, ev in skipped:
        print(f"  (not run, after the last day: {ev['command']} at {ev['at']})")
    print(f"\nTrace written to {trace} ({demo.ctrl.stroke_seq} strokes in total)")
    if surprises:
        print(f"{surprises} outcome(s) differ from the scenario's expectations", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
