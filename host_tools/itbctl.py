"""``itbctl``: talk to a board (a Pico, or the virtual board of ``itbsim board``)
over the authenticated serial protocol.

    itbctl ports
    itbctl --port /dev/ttyACM0 status
    itbctl --port socket://127.0.0.1:7000 set-daily-dose --daily-dose 120ug
    itbctl --port PORT bolus --dose 50ug --duration 30min
    itbctl --port PORT log export --format trace --out board.jsonl
    itbctl deploy --port /dev/ttyACM0 --dry-run      # then without --dry-run
    itbctl trumpet run.csv --rate-ul-per-h 2 --stroke-interval-min 60   # no board

Commands follow the schema (``itb.commands``): every controller command has a
subcommand (underscores become hyphens) whose options are its parameters, given
with units (``--dose 50ug``, ``--volume 20ml``, ``--every 24h``); a parameter
without a unit in its name takes a plain integer. Therapy changes are two-phase
(SR-15): the board's ``prepare`` summary is shown (µg/day and mL/day, mass in
24 h, strokes, projected low-reservoir and empty dates) and applied only after
you confirm (``--yes`` for scripts). ``--json`` prints the board's results as
JSON. A refusal exits with status 3 and its reason; a link failure with 2.
``trumpet`` talks to no board: start-up and trumpet curves (IEC 60601-2-24) from
a bench balance's readings (``host_tools.trumpet``).

Keys: ``--keys FILE`` (or ``ITBCTL_KEYS``; a folder: its ``<device id>.json``),
else ``~/.config/itbctl/keys/<device id>.json``; a key file must be private (mode
0600), ``keys provision`` creates one. ``--port`` defaults to ``ITBCTL_PORT``.
"""

import argparse
import json
import math
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from itb import commands as cmds

from host_tools import export as ex
from host_tools import link
from host_tools import units as un

EXIT_REFUSED = 3
EXIT_LINK = 2
EXIT_USAGE = 64
KEY_DIR = Path("~/.config/itbctl/keys").expanduser()
ALIASES = {"acknowledge": "ack"}
HIDDEN = ("prepare", "confirm")  # sent by every therapy change, not on their own


class UsageError(ValueError):
    """Bad command-line input (nothing was sent)."""


# ---------------------------------------------------------------------- arguments
def _cli_name(name):
    return ALIASES.get(name, name.replace("_", "-"))


def _option(spec):
    return "--" + un.base_name(spec).replace("_", "-")


def _amount(command, spec, text):
    """``"50ug"``/``"1.5h"``/``"3"`` for parameter ``spec`` -> canonical int."""
    base = un.base_name(spec)
    if spec["kind"] == cmds.STR:
        return text
    if spec["units"] is cmds.TIME_UNITS:
        return un.canonical(command, base, text)[1]
    if spec["units"]:
        for suffix, _factor in sorted(spec["units"], key=lambda u: -len(u[0])):
            if text.lower().endswith(suffix):
                number = text[: -len(suffix)].strip()
                return un.canonical(command, f"{base}_{suffix}", float(number) if "." in number
                                    else int(number))[1]
        raise UsageError(f"{_option(spec)} needs a unit: one of "
                         f"{', '.join(u for u, _ in spec['units'])} (e.g. 50{spec['units'][1][0]})")
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{_option(spec)} must be an integer, got {text!r}") from None


def _help(text):
    return text.replace("%", "%%")  # argparse formats help with %


def _is_flag(spec):
    return spec["kind"] == cmds.INT and not spec["units"] and spec["lo"] == 0 and spec["hi"] == 1


def _add_params(p, name):
    for spec in cmds.params(name):
        if spec["kind"] == cmds.STEPS:
            p.add_argument("--steps", required=True, metavar="JSON", help="flex steps as JSON:"
                           " [[start_min_local, daily_dose_ng], ...] (up to 13; doses in ng/day)")
            continue
        if spec["kind"] == cmds.MAP:
            continue
        if _is_flag(spec):
            p.add_argument(_option(spec), dest=spec["name"], action="store_const", const="1",
                           help=_help(spec["doc"].split(": ", 1)[-1]))
            continue
        units = ", ".join(u for u, _ in spec["units"])
        if spec["units"] is cmds.TIME_UNITS:
            metavar, extra = "DURATION", " (e.g. 30min, 6h, 2d)"
        elif spec["units"]:
            metavar, extra = "AMOUNT", f" (with a unit: {units}; e.g. 50{spec['units'][1][0]})"
        elif spec["choices"]:
            metavar, extra = "{" + ",".join(spec["choices"]) + "}", ""
        else:
            metavar, extra = "N", ""
        default = spec["default"]
        shown = "" if default is None else f" (default {default})"
        p.add_argument(_option(spec), dest=spec["name"], required=default is None,
                       metavar=metavar, help=_help(f"{spec['doc']}{extra}{shown}"))


def _args_of(name, ns):
    out = {}
    for spec in cmds.params(name):
        v = getattr(ns, spec["name"], None)
        if v is None:
            continue
        try:
            if spec["kind"] == cmds.STEPS:
                out[spec["name"]] = json.loads(v)
            else:
                out[spec["name"]] = _amount(name, spec, v)
        except (un.UnitError, ValueError) as e:
            raise UsageError(str(e)) from None
    return out


def program_file(path):
    """The ``program`` arguments from a TOML file: schema keys with units
    (``daily_dose_ug = 120``, ``origin = "spinal"``, ``patient_lockout = "3h"``)."""
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"{path}: {e}") from None
    if "program" in data and isinstance(data["program"], dict):
        data = data["program"]
    out = {}
    errors = []
    for key, value in data.items():
        try:
            name, v = un.canonical("program", key, value)
        except un.UnitError as e:
            errors.append(str(e))
            continue
        out[name] = v
    try:
        cmds.validate("program", out)
    except cmds.CommandError as e:
        errors.append(e.message)
    if errors:
        raise UsageError(f"{path}:\n  " + "\n  ".join(errors))
    return out


# ---------------------------------------------------------------------- output
def _when(ms, rtc_ms):
    if ms is None or ms < 0:
        return "never at this rate"
    days = ms / 86_400_000
    if rtc_ms is None:
        return f"in {days:.1f} days"
    date = datetime.fromtimestamp((rtc_ms + ms) / 1000, UTC).strftime("%Y-%m-%d")
    return f"in {days:.1f} days ({date})"


# effect fields shown in words; the rest are listed as they come
_EFFECT_WORDS = {
    "reservoir_nl": lambda v: f"reservoir after it: {v / 1e6:.3f} mL",
    "discrepancy_nl": lambda v: f"refill discrepancy: {v / 1e6:+.3f} mL",
    "discrepancy_flagged": lambda v: "REFILL DISCREPANCY flagged (SR-20)" if v else None,
    "plan_cancelled": lambda v: "cancels the running plan" if v else None,
    "restart_pct": lambda v: f"restart at {v} % of the last settled dose (SR-11)"
    if v != 100 else None,
    "dead_volume_nl": lambda v: f"dead volume {v / 1e6:.3f} mL",
    "prime_nl": lambda v: f"priming pushes {v / 1e6:.3f} mL" if v else None,
    "prime_mass_ng": lambda v: f"drug mass of the priming: {v / 1000:.1f} ug" if v else None,
    "state": lambda v: f"state after it: {v}",
    "calibration_nl": lambda v: f"calibration strokes push {v / 1000:.1f} uL",
    "duration_ms": lambda v: f"over {v / 1000:.0f} s" if v else None,
    "measured_nl": lambda v: f"measured stroke {v / 1000:.4f} uL",
    "stroke_nl": lambda v: f"nominal stroke {v / 1000:.4f} uL",
    "ci_nl": lambda v: f"confidence half-width {v / 1000:.4f} uL",
    "calibration_cancelled": lambda v: f"cancels the calibration run ({v} strokes not made)",
    "measured_strokes": lambda v: f"adds to a measurement of {v} strokes" if v else
    "starts a new measurement",
    "measurement": lambda v: f"measurement id {v}",
    "calibration_strokes": lambda v: f"{v} calibration stroke(s)",
    "error_ppm": lambda v: f"the strokes delivered {abs(v) / 1e4:.2f} %"
    f" {'less' if v < 0 else 'more'} than nominal: the board's motion per stroke changes by"
    f" {100 * (1e6 / (1e6 + v) - 1):+.2f} %",
}
_EFFECT_DONE = ("daily_dose_ng", "volume_nl_per_day", "concentration_ug_per_ml", "mass_24h_ng",
                "strokes_24h", "cap_24h_ng", "cap_1h_ng", "stroke_ng", "low_reservoir_in_ms",
                "empty_in_ms", "strokes_per_day", "bolus_ng", "bolus_strokes", "prime_strokes")


def effect_text(effect, rtc_ms=None, request=None):
    """The ``prepare`` effect for people (SR-15); ``request``: the arguments sent
    (a bolus is given in whole strokes: the mass that will be given is said)."""
    if not effect:
        return "  (no change to delivery)"
    lines = []
    if "bolus_ng" in effect:
        line = f"  bolus: {effect['bolus_ng'] / 1000:.1f} ug in {effect.get('bolus_strokes')}" \
               " whole strokes"
        asked = (request or {}).get("dose_ng")
        if asked is not None and asked != effect["bolus_ng"]:
            line += f" (you asked for {asked / 1000:.1f} ug: the nearest whole strokes)"
        lines.append(line)
    if "daily_dose_ng" in effect:
        d = effect["daily_dose_ng"]
        line = f"  basal {d / 1000:.1f} ug/day"
        if "volume_nl_per_day" in effect:
            line += f" = {effect['volume_nl_per_day'] / 1e6:.4f} mL/day"
        if "concentration_ug_per_ml" in effect:
            line += f" at {effect['concentration_ug_per_ml']} ug/mL"
        lines.append(line)
    if "mass_24h_ng" in effect:
        lines.append(f"  drug in the next 24 h: {effect['mass_24h_ng'] / 1000:.1f} ug"
                     f" in {effect.get('strokes_24h', '?')} strokes"
                     f" (caps: 24 h {effect.get('cap_24h_ng', 0) / 1000:.1f} ug,"
                     f" 1 h {effect.get('cap_1h_ng', 0) / 1000:.1f} ug)")
    if "stroke_ng" in effect:
        lines.append(f"  one stroke: {effect['stroke_ng'] / 1000:.2f} ug")
    if "low_reservoir_in_ms" in effect:
        lines.append(f"  low reservoir {_when(effect['low_reservoir_in_ms'], rtc_ms)};"
                     f" empty {_when(effect.get('empty_in_ms'), rtc_ms)}")
    for k in sorted(effect):
        if k in _EFFECT_DONE:
            continue
        text = _EFFECT_WORDS[k](effect[k]) if k in _EFFECT_WORDS else f"{k}: {effect[k]}"
        if text:
            lines.append("  " + text)
    return "\n".join(lines)


def cli_text(text):
    """A board message with schema names as the command line spells them."""
    for name in cmds.NAMES:
        if "_" in name:
            text = text.replace(name, _cli_name(name))
    return text


def refusal_text(res):
    text = f"refused: {res.get('reason')}: {cli_text(res.get('message', ''))}"
    if "allowed" in res:
        what = "next allowed in" if res.get("allowed_unit") == "ms" else "allowed:"
        text += f" ({what} {un.human(res['allowed'], res.get('allowed_unit'))})"
    if res.get("offer"):
        text += f" (offered: {un.describe_offer(res['offer'])})"
    return text


def status_text(st):
    basal = (f"basal {st['daily_dose_ng'] / 1000:.1f} ug/day at"
             f" {st['concentration_ug_per_ml']} ug/mL")
    if st["state"] == "MIN_RATE":
        basal = f"minimum rate {st['min_rate_nl_per_day'] / 1000:.1f} uL/day (programmed {basal})"
    elif st["state"] != "RUNNING":
        basal = f"not delivering (programmed {basal})"
    lines = [f"state {st['state']}, {basal}",
             f"reservoir {st['reservoir_nl'] / 1e6:.3f} mL (between"
             f" {st['reservoir_pess_nl'] / 1e6:.3f} and {st['reservoir_opt_nl'] / 1e6:.3f})",
             f"last 24 h {st['window_ng'][0] / 1000:.1f} ug of {st['caps_ng'][0] / 1000:.1f};"
             f" last 1 h {st['window_ng'][1] / 1000:.1f} ug of {st['caps_ng'][1] / 1000:.1f}",
             f"strokes {st['strokes']}, therapy clock {st['t'] / 3_600_000:.2f} h"]
    lines += alarm_lines(st["alarms"])
    return "\n".join(lines)


def alarm_lines(alarms):
    if not alarms:
        return ["no alarms"]
    out = []
    for code, pri, active, acked, raised in alarms:
        out.append(f"alarm {code} ({pri}){' active' if active else ''}"
                   f"{' acknowledged' if acked else ''} since t={raised / 3_600_000:.2f} h")
    return out


# ---------------------------------------------------------------------- session
class Session:
    def __init__(self, ns):
        self.ns = ns
        self.board = None
        self.request = {}  # the arguments sent (for the prepare summary)

    def say(self, text):
        if not self.ns.json:
            print(text, flush=True)

    def emit(self, obj):
        if self.ns.json:
            print(json.dumps(obj, sort_keys=True), flush=True)

    def need_port(self):
        if not self.ns.port:
            raise UsageError("no port: --port DEVICE|URL or ITBCTL_PORT (list them: itbctl"
                             " ports; a virtual board: itbsim board)")
        return self.ns.port

    def connect(self, need_keys=True):
        b = link.Board(self.need_port(), timeout=self.ns.timeout)
        self.board = b
        info = b.hello()
        if need_keys:
            b.keys = self.load_keys(info.get("dev"))
            b.hello()  # now authenticated under these keys
        return b

    def load_keys(self, device):
        """The role keys of board ``device`` (UsageError: no, a foreign or an open
        key file)."""
        path = self.key_path(device)
        if self.ns.keys and not path.exists():
            raise UsageError(f"no key file {path} (itbctl keys provision writes one, with the"
                             " board's provisioning button held)")
        try:
            found, keys = link.load_keys(path)
        except link.LinkError as e:
            raise UsageError(str(e)) from None
        if found and found != device:
            raise UsageError(f"key file {path} is for board {found}, this is {device}")
        return keys

    def key_path(self, device):
        """``--keys``: a key file, or a folder of ``<device id>.json`` files."""
        if self.ns.keys:
            path = Path(self.ns.keys)
            return path / f"{device}.json" if path.is_dir() else path
        return KEY_DIR / f"{device}.json"

    def close(self):
        if self.board is not None:
            self.board.close()

    def confirm(self, prepared, rtc_ms, question="Apply this change?"):
        self.say(f"{_cli_name(prepared.get('command', ''))}: "
                 f"{cli_text(prepared.get('message', ''))}")
        self.say(effect_text(prepared.get("effect"), rtc_ms, self.request))
        if self.ns.yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError("refusing to apply without confirmation: stdin is not a"
                             " terminal (use --yes in scripts)")
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


# ---------------------------------------------------------------------- commands
def run_command(s, name, args):
    if cmds.is_two_phase(name) and not s.ns.yes and not sys.stdin.isatty():
        raise UsageError(f"{_cli_name(name)} is a therapy change and stdin is not a terminal:"
                         " nothing was sent (add --yes in scripts)")
    b = s.connect()
    role = s.ns.role
    s.request = args
    if cmds.is_two_phase(name):
        rtc = b.status(role=None).get("board", {}).get("rtc_ms")
        res = b.change(name, args, confirm=lambda p: s.confirm(p, rtc), role=role)
    else:
        res = b.call(name, args, role=role)
    s.emit(res)
    if name == "set_calibration":
        return _check_applied(s, b, res, args["measured_nl"])
    s.say(f"{_cli_name(name)}: {cli_text(res.get('message', 'accepted'))}")
    if res.get("effect") and not cmds.is_two_phase(name):
        s.say(effect_text(res["effect"]))
    return 0


def cmd_ports(s):
    found = link.ports()
    s.emit([{"device": d, "description": desc, "pico": pico} for d, desc, pico in found])
    if not found:
        s.say("no serial ports found (a virtual board: itbsim board)")
    for d, desc, pico in found:
        s.say(f"{d}  {desc}{'  <- Raspberry Pi Pico' if pico else ''}")
    return 0


def cmd_status(s):
    b = s.connect()
    st = b.status(role=s.ns.role)
    s.emit(st)
    s.say(status_text(st))
    return 0


def cmd_alarms(s):
    b = s.connect()
    st = b.status(role=s.ns.role)
    s.emit([{"code": c, "priority": p, "active": a, "acknowledged": k, "raised_ms": r}
            for c, p, a, k, r in st["alarms"]])
    s.say("\n".join(alarm_lines(st["alarms"])))
    return 0


def cmd_program(s):
    return run_command(s, "program", program_file(s.ns.file))


def cmd_log_export(s):
    b = s.connect()
    t0 = time.perf_counter()
    records, res = b.export(role=s.ns.role)
    fmt = s.ns.format
    if fmt == "trace":
        text = "\n".join(ex.to_trace(records, res["cfg"])) + "\n"
    elif fmt == "json":
        text = "\n".join(ex.to_jsonl(records)) + "\n"
    else:
        text = ex.to_csv(records)
    if s.ns.out and s.ns.out != "-":
        Path(s.ns.out).write_text(text)
        s.say(f"{len(records)} records ({len(text.encode())} bytes) in"
              f" {time.perf_counter() - t0:.2f} s -> {s.ns.out} ({fmt})")
        s.emit({"records": len(records), "bytes": len(text.encode()), "out": s.ns.out,
                "format": fmt})
    else:
        sys.stdout.write(text)
    return 0


def cmd_time_sync(s):
    b = s.connect()
    # not retried under one id: a retry after a delay would set a stale time; each
    # attempt reads this host's clock again and is a new command
    for attempt in range(b.retries + 1):
        utc_ms = int(time.time() * 1000)
        try:
            res = b.call("time_sync", {"utc_ms": utc_ms}, role=s.ns.role, retries=0)
            break
        except link.LinkError:
            if attempt == b.retries:
                raise
    s.emit(res)
    s.say(f"board RTC set to {datetime.fromtimestamp(utc_ms / 1000, UTC).isoformat()}")
    return 0


def cmd_keys_provision(s):
    b = s.connect(need_keys=False)
    info = b.info
    if not info.get("provisioning"):
        raise link.Refused({"reason": "NOT_PROVISIONING", "message": "hold the board's"
                            " provisioning button (virtual board: itbsim board --provision)"})
    path = s.key_path(info.get("dev"))
    if path.exists():
        raise UsageError(f"{path} exists: move it away first (keys are never overwritten)")
    keys = link.new_keys()
    link.write_keys(path, info.get("dev"), keys)  # first: never a board key we lost
    try:
        res = b.provision(keys)
    except Exception:
        path.unlink()
        raise
    s.emit({"ok": 1, "device": info.get("dev"), "keys": str(path)})
    s.say(f"keys for board {info.get('dev')} provisioned; saved to {path} (mode 0600)")
    return 0 if res.get("ok") else EXIT_REFUSED


def cmd_monitor(s):
    b = s.connect()
    last = None
    try:
        while True:
            st = b.status(role=s.ns.role)
            view = (st["state"], st["daily_dose_ng"], json.dumps(st["alarms"]))
            if view != last or s.ns.json:
                last = view
                stamp = datetime.now(UTC).strftime("%H:%M:%S")
                s.emit({"time": stamp, "status": st})
                s.say(f"[{stamp}] " + status_text(st).replace("\n", "\n           "))
            if s.ns.count:
                s.ns.count -= 1
                if not s.ns.count:
                    return 0
            time.sleep(s.ns.interval)
    except KeyboardInterrupt:
        return 0


def cmd_hil(s):
    from host_tools.testkit import hil

    if not s.ns.yes:
        if not sys.stdin.isatty():
            raise UsageError("hil reprograms the board and moves its therapy clock ahead:"
                             " confirm with --yes (use a board you can wipe)")
        if input("hil reprograms this board and moves its therapy clock ahead (use a fresh"
                 " virtual board). Go on? [y/N] ").strip().lower() not in ("y", "yes"):
            raise link.Declined({})
    b = s.connect()
    try:
        report = hil.run(b, examples=s.ns.examples, steps=s.ns.steps, say=s.say)
    finally:
        b.call("test_clock", {"mode": "real"}, role="service", check=False)
    s.say("the board's test clock is back to real time (it stays ahead by the time stepped)")
    s.emit(report)
    return 0 if report["passed"] else 1


def cmd_deploy(s):
    from host_tools import deploy, toolchain

    port = s.need_port()
    if not s.ns.dry_run and not s.ns.yes and not sys.stdin.isatty():
        raise UsageError("deploy replaces the board's firmware and stdin is not a terminal:"
                         " nothing was done (add --yes in scripts; --dry-run shows the steps)")

    def confirm(question):
        return input(question + " [y/N] ").strip().lower() in ("y", "yes")

    d = deploy.Deployer(port, keys_for=s.load_keys, say=s.say, record=s.ns.record)
    try:
        result = d.run(dry_run=s.ns.dry_run, confirm=None if s.ns.yes else confirm)
    except deploy.DeployError as e:
        print(f"itbctl: {e}", file=sys.stderr)
        return e.status
    except toolchain.ToolError as e:
        print(f"itbctl: {e}", file=sys.stderr)
        return 1
    if s.ns.dry_run:
        s.emit([{"step": st.text, "argv": st.argv} for st in result])
    else:
        s.emit(result)
    return 0


def cmd_calibrate(s):
    """Guided gravimetric calibration (``host_tools.calibration``): weigh a run of
    strokes (a serial balance, typed readings, or a CSV of them), show the mean stroke
    with its errors and confidence interval, and write it to the board as
    ``set_calibration`` (service key, two-phase). Without a port only the CSV is
    analysed."""
    from host_tools import calibration as cal
    from host_tools import gravimetry as gr

    ns = s.ns
    writes = bool(ns.port) and not ns.no_write
    if not ns.readings and not ns.port:
        raise UsageError("calibrate needs a board (--port) to run the strokes, or --readings"
                         " CSV to analyse a run already weighed")
    if not ns.readings and not ns.balance_port and not sys.stdin.isatty():
        raise UsageError("no balance: --balance-port DEVICE (MT-SICS), or type the readings"
                         " on a terminal, or --readings CSV")
    if writes and not ns.yes and not sys.stdin.isatty():
        raise UsageError("calibrate writes to the board after asking, and stdin is not a"
                         " terminal: nothing was sent (add --yes, or --no-write)")
    if not ns.readings and not (cal.BOARD_MIN_STROKES if writes else 2) <= ns.strokes <= 100:
        raise UsageError(f"--strokes {ns.strokes}: {cal.BOARD_MIN_STROKES} to 100 (the board"
                         " takes 10 or more; with --no-write, 2 or more)")
    if not 100 * cal.MIN_CONFIDENCE <= ns.confidence < 100:
        raise UsageError(f"--confidence {ns.confidence:g}: {100 * cal.MIN_CONFIDENCE:g} to below"
                         " 100 (a lower level would narrow the interval the board checks)")
    try:
        evaporation = ns.evaporation_mg_per_h
        if ns.blank:
            evaporation = gr.evaporation_from_blank(*gr.read_readings(ns.blank))
        gr.water_density(ns.temperature_c)  # a bad temperature stops before any stroke
        measurement, facts = _measurement_of(ns) if ns.readings and writes else (None, None)
        readings = gr.read_readings(ns.readings) if ns.readings else None
    except gr.GravimetryError as e:
        raise UsageError(str(e)) from None
    board = s.connect() if ns.port else None
    stroke_nl = board.status()["stroke_nl"] if board is not None else ns.stroke_nl
    if board is not None and facts and (facts.get("device"), facts.get("stroke_nl")) != (
            board.info.get("dev"), stroke_nl):
        # found by the attacker (round 2): another board's readings corrected this one
        raise UsageError(f"the readings are of board {facts.get('device')} with a"
                         f" {facts.get('stroke_nl')} nL stroke; this is board"
                         f" {board.info.get('dev')} with {stroke_nl} nL: nothing was sent")
    out = None
    try:
        if readings is None:
            out = Path(ns.out or f"calibration-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.csv")
            measurement, *readings = _weigh_run(s, board, stroke_nl, out)
        result = cal.analyse(*readings, stroke_nl=stroke_nl, temperature_c=ns.temperature_c,
                             evaporation_mg_per_h=evaporation, confidence=ns.confidence / 100)
    except cal.RunError as e:
        print(f"itbctl: calibration run stopped: {e}", file=sys.stderr)
        return 1
    except gr.GravimetryError as e:
        if out is None:
            raise UsageError(str(e)) from None
        print(f"itbctl: the readings in {out} cannot be used: {e}. Correct the file (the"
              f" board keeps the measurement until the next run, refill or reset) and run"
              f" itbctl calibrate --readings {out}", file=sys.stderr)
        return 1
    s.emit({**result, "measurement": measurement})
    s.say(cal.summary_text(result))
    if not writes:
        s.say("not written to a board" + (" (--no-write)" if board is not None else ""))
        return 0
    command = {"measurement": measurement, **result["command"]}
    res = board.change("set_calibration", command, role="service",
                       confirm=lambda p: s.confirm(p, None, "Write this calibration?"))
    s.emit(res)
    return _check_applied(s, board, res, command["measured_nl"])


def _check_applied(s, board, res, measured_nl):
    # the board's own account of a confirmed set_calibration (status board.hw): the
    # ledger records what was confirmed; whether the board applied it is shown here
    hw = board.status().get("board", {}).get("hw") or {}
    applied = hw.get("calibration") or {}
    if applied.get("error") or applied.get("measured_nl") != measured_nl:
        why = applied.get("error") or "it reports no such calibration (a reset since?)"
        print(f"itbctl: the board accepted the calibration but did not apply it: {why};"
              " check status board.hw, then weigh a new run", file=sys.stderr)
        return 1
    s.say(f"set-calibration: {cli_text(res.get('message', 'accepted'))}; the board now has"
          f" {', '.join(f'{k} {v}' for k, v in sorted(applied.items()))}")
    return 0


def _measurement_of(ns):
    # --readings with a board: the measurement the readings are of (the run's .json
    # beside its CSV, or --measurement), so readings of an older run cannot correct
    # the board again (found by the attacker)
    from host_tools import gravimetry as gr

    if ns.measurement is not None:
        return ns.measurement, None
    side = Path(ns.readings).with_suffix(".json")
    try:
        facts = json.loads(side.read_text())
        return int(facts["measurement"]), facts
    except (OSError, ValueError, KeyError, TypeError):
        raise gr.GravimetryError(
            f"{side}: no measurement id for {ns.readings} (itbctl calibrate writes it beside"
            " the readings): give --measurement ID, the id of the run these readings were"
            " taken from") from None


def _weigh_run(s, board, stroke_nl, out):
    # the strokes, weighed after each; every reading goes to ``out`` as it is taken,
    # the measurement's id to the .json beside it
    from host_tools import calibration as cal
    from host_tools.balance_port import Balance, BalanceError

    ns = s.ns
    cal.check_board(board.status(), ns.strokes)  # before anything is asked or weighed
    s.say(f"{ns.strokes} calibration strokes of {stroke_nl / 1000:.3f} uL"
          f" ({ns.strokes * stroke_nl / 1000:.1f} uL in all), one every {ns.settle_s + 1:g} s"
          f" or so (or as the board's maximum rate allows): about"
          f" {ns.strokes * (ns.settle_s + 1) / 60:.1f} min; readings to {out}")
    if not ns.yes and sys.stdin.isatty():
        try:
            answer = input("Start the run? [y/N] ").strip().lower()
        except (EOFError, KeyboardInterrupt):
            answer = ""
        if answer not in ("y", "yes"):
            raise link.Declined({})
    balance = None
    if ns.balance_port:
        try:
            balance = Balance(ns.balance_port, ns.balance_baud)
        except BalanceError as e:
            raise UsageError(str(e)) from None
    stroke_g = stroke_nl / 1e6

    def read_mass(label, previous):
        if balance is None:
            return _typed_mass(label, previous, stroke_g)
        try:
            return balance.stable_g()
        except BalanceError as e:
            raise cal.RunError(str(e)) from None

    try:
        with out.open("w", encoding="utf-8") as f:
            f.write("time_s,mass_g\n")

            def record(t, g):
                f.write(f"{t:.3f},{g:.6f}\n")
                f.flush()

            measurement, times, masses = cal.run_strokes(
                board, ns.strokes, read_mass, record, settle_s=ns.settle_s, say=s.say)
        out.with_suffix(".json").write_text(json.dumps(
            {"measurement": measurement, "device": board.info.get("dev"), "stroke_nl": stroke_nl,
             "strokes": ns.strokes, "readings": out.name}, indent=1) + "\n")
        return measurement, times, masses
    except cal.RunError as e:
        raise cal.RunError(f"{e} (the readings so far are in {out})") from None
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e}") from None
    finally:
        if balance is not None:
            balance.close()


def _typed_mass(label, previous, stroke_g):
    # a reading typed on the terminal; a rise far from one stroke is asked again
    from host_tools import calibration as cal

    while True:
        try:
            text = input(f"balance reading {label} (g, or a number with mg): ").strip().lower()
        except (EOFError, KeyboardInterrupt):
            raise cal.RunError(f"stopped at the reading {label}: nothing written") from None
        keep = text.startswith("!")  # as typed, however far from a stroke
        text = text.removeprefix("!").strip()
        try:
            grams = float(text[:-2]) / 1000 if text.endswith("mg") else float(
                text.removesuffix("g"))
        except ValueError:
            grams = math.nan
        if not math.isfinite(grams):
            print(f"not a mass: {text!r} (e.g. 12.34567 or 12345.67mg)", file=sys.stderr)
            continue
        if previous is None or keep:
            return grams
        rise = grams - previous
        lo, hi = cal.OUTLIER
        if lo * stroke_g <= rise <= hi * stroke_g:
            return grams
        print(f"a rise of {rise * 1000:.3f} mg, where one stroke is about {stroke_g * 1000:.3f}"
              f" mg: type it again (grams; with mg for milligrams), or !{text} to keep it",
              file=sys.stderr)


def cmd_trumpet(s):
    """Start-up and trumpet curves of a balance's readings (``host_tools.trumpet``): no
    board, no port. Bad readings or settings: UsageError (exit 64)."""
    from host_tools import trumpet as tr

    ns = s.ns
    try:
        times, masses = tr.read_readings(ns.readings)
        evaporation = ns.evaporation_mg_per_h
        if ns.blank:
            evaporation = tr.evaporation_from_blank(*tr.read_readings(ns.blank))
        result = tr.analyse(times, masses, ns.rate_ul_per_h,
                            stroke_interval_min=ns.stroke_interval_min,
                            temperature_c=ns.temperature_c,
                            evaporation_mg_per_h=evaporation)
        out = Path(ns.out) if ns.out else Path(ns.readings).parent
        out.mkdir(parents=True, exist_ok=True)
        csv_path, fig_path = out / "trumpet.csv", out / f"trumpet.{ns.figure}"
        tr.write_csv(result, csv_path)
        tr.plot(result, fig_path)
    except tr.TrumpetError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"cannot write the results: {e}") from None
    s.emit({**result, "files": [str(csv_path), str(fig_path)]})
    s.say(tr.summary_text(result))
    s.say(f"wrote {csv_path} and {fig_path}")
    return 0


# ---------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a usage error: 64, as the epilog says (not argparse's 2)
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parser():
    p = _Parser(prog="itbctl", description="Talk to a board (a Pico, or the virtual board"
                " of itbsim board) over the authenticated serial protocol. Therapy changes"
                " show the board's prepare summary and ask before they are applied.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Exit status: 0 done, 1 failed check, 2 link error,"
                                       " 3 refused by the board, 64 usage error.")
    p.add_argument("--port", default=os.environ.get("ITBCTL_PORT"),
                   help="device path or pyserial URL (socket://host:port, rfc2217://...)")
    p.add_argument("--keys", default=os.environ.get("ITBCTL_KEYS"),
                   help="key file, or a folder of <device id>.json key files (default"
                   " ~/.config/itbctl/keys/<device id>.json)")
    p.add_argument("--role", choices=cmds.ROLES, help="send as this role (default: the"
                   " command's first role with a key)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--yes", action="store_true", help="apply therapy changes without asking")
    p.add_argument("--timeout", type=float, default=link.DEFAULT_TIMEOUT,
                   help="seconds to wait for each answer (default %(default)s)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True,
                           parser_class=_Parser)
    # --port and --keys may also follow the command (itbctl status --port X); given
    # there, they override the global ones (found by the new-user trial)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--port", default=argparse.SUPPRESS,
                        help="as the global --port (device path or pyserial URL)")
    common.add_argument("--keys", default=argparse.SUPPRESS,
                        help="as the global --keys (key file, or a folder of <device"
                        " id>.json key files)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="as the global --json (print results as JSON)")
    common.add_argument("--yes", action="store_true", default=argparse.SUPPRESS,
                        help="as the global --yes (do not ask before changing the board)")

    def command(name, text, **kw):
        return sub.add_parser(name, help=_help(text), description=_help(text),
                              parents=[common], **kw)

    command("ports", "list serial ports (Raspberry Pi Pico USB ids marked)")
    command("status", "state, doses, caps, windows, reservoir and alarms")
    command("alarms", "latched alarms (IEC 60601-1-8 priorities)")
    pp = command("program", "first program from a TOML file (two-phase)")
    pp.add_argument("file", help="TOML with the program's parameters and units: daily_dose_ug"
                    " = 120, origin = \"spinal\", cap_24h_ug, patient_bolus_ug, patient_lockout"
                    " = \"3h\", patient_max_per_24h, screening_dose_ug, screening_effect ="
                    " \"6h\", start_rule (see examples/board/program.toml)")
    for name in cmds.NAMES:
        if name in HIDDEN or name == "program":
            continue
        roles, two, _params, doc = cmds.COMMANDS[name]
        sp = command(_cli_name(name), doc + (" (two-phase: shows the effect, asks to confirm)"
                                            if two else "") + f"; role: {', '.join(roles)}")
        sp.set_defaults(schema=name)
        _add_params(sp, name)
    lp = command("log", "the board's ledger")
    lsub = lp.add_subparsers(dest="log_command", required=True)
    le = lsub.add_parser("export", help="write the ledger as csv, json or a runner trace"
                         " (itbsim replay reads the trace)", parents=[common])
    le.add_argument("--format", choices=("csv", "json", "trace"), default="csv",
                    help="csv (default), json (one object per line) or trace (for itbsim"
                    " replay; needs the whole history)")
    le.add_argument("--out", default="-", help="file (default: stdout)")
    tp = command("time", "the board's RTC")
    tsub = tp.add_subparsers(dest="time_command", required=True)
    tsub.add_parser("sync", help="set the board's RTC to this host's UTC time (logged)",
                    parents=[common])
    kp = command("keys", "role keys")
    ksub = kp.add_subparsers(dest="keys_command", required=True)
    ksub.add_parser("provision", help="new keys for every role, while the board's"
                    " provisioning button is held; saved with mode 0600", parents=[common])
    mp = command("monitor", "live status and alarms: a block whenever state, dose or alarms"
                 " change (--json: every poll); Ctrl-C stops")
    mp.add_argument("--interval", type=float, default=2.0,
                    help="seconds between polls (default %(default)s)")
    mp.add_argument("--count", type=int, default=0, help="stop after N polls (0: never)")
    dp = command("deploy", "put the firmware on a Pico with mpremote: hello, .mpy ABI check,"
                 " `maintenance` (service role; refused while the pump is RUNNING or at"
                 " MIN_RATE: stop it first), stale code removed (never /data), copy, the"
                 " manifest verified on the board, the deploy recorded, /maintenance removed,"
                 " reset, the new fw checked in hello (README: Running on a Pico)")
    dp.add_argument("--dry-run", action="store_true", help="say hello, build, print every step"
                    " and mpremote command line; change nothing")
    dp.add_argument("--record", help="append the deploy record (JSON line) here (default"
                    " $XDG_STATE_HOME/itb-controller/deploys.jsonl, i.e."
                    " ~/.local/state/itb-controller/deploys.jsonl)")
    hp = command("hil", "run the property machine against the board through the protocol"
                 " (dev build, every role key, the board's whole ledger; it reprograms the"
                 " board and steps its clock: a fresh virtual board, or a dev-build Pico on"
                 " the bench with water only; README: Hardware-in-the-loop tests)")
    hp.add_argument("--examples", type=int, default=10, help="random runs (default 10)")
    hp.add_argument("--steps", type=int, default=30, help="rule steps per run (default 30)")
    cp = command("calibrate", "guided gravimetric stroke calibration (service key; an"
                 " UNPROGRAMMED pump with its syringe fill recorded, water only): weighs a run"
                 " of strokes (an MT-SICS balance on a serial port, or readings typed after"
                 " each stroke), shows the mean stroke, its systematic and random error and"
                 " confidence interval, and writes it to the board (set-calibration,"
                 " two-phase); with --readings and no --port: analysis only (README: Bench"
                 " testing)")
    cp.add_argument("--strokes", type=int, default=20, help="strokes to weigh (default"
                    " %(default)s; the board takes 10 or more)")
    cp.add_argument("--settle-s", type=float, default=10.0, metavar="S", help="wait after each"
                    " stroke before weighing (default %(default)s)")
    cp.add_argument("--balance-port", metavar="DEVICE", help="a balance speaking MT-SICS"
                    " (device path or pyserial URL); default: type each reading")
    cp.add_argument("--balance-baud", type=int, default=9600, help="default %(default)s")
    cp.add_argument("--readings", metavar="CSV", help="readings already taken (time_s,mass_g:"
                    " one before the first stroke, one after each): no strokes are run; with"
                    " a port (--port or ITBCTL_PORT) they are written to the board, which takes"
                    " them only for the run it just made (its id: the .json beside the CSV,"
                    " or --measurement); without one, or with --no-write: analysis only")
    cp.add_argument("--measurement", type=int, metavar="ID", help="the board's id of the run"
                    " the --readings are of (status: calibration [ok, not ok, id])")
    cp.add_argument("--out", metavar="CSV", help="where the run's readings go (default"
                    " calibration-<UTC time>.csv here; the measurement's id goes beside it,"
                    " in a .json)")
    cp.add_argument("--stroke-nl", type=int, default=2000, help="nominal stroke for an analysis"
                    " without a board (default %(default)s; with --port: the board's)")
    cp.add_argument("--temperature-c", type=float, default=20.0, metavar="C",
                    help="water temperature for its density (default %(default)s)")
    cevap = cp.add_mutually_exclusive_group()
    cevap.add_argument("--evaporation-mg-per-h", type=float, default=0.0, metavar="E",
                       help="evaporation from the vessel, added back (default %(default)s)")
    cevap.add_argument("--blank", metavar="BLANK.csv", help="readings of a blank run (no"
                       " strokes): their slope is the evaporation")
    cp.add_argument("--confidence", type=float, default=95.0, metavar="PCT",
                    help="confidence of the interval, %% (95 or more; default %(default)s)")
    cp.add_argument("--no-write", action="store_true", help="weigh and analyse; do not write"
                    " the calibration to the board")
    # no board: no --port/--keys of its own (the global ones are ignored)
    text = ("start-up and trumpet curves (IEC 60601-2-24: 0.5 min samples, windows of 1, 2,"
            " 5, 11, 19 and 31 min from the second hour) from timed balance readings, and"
            " with --stroke-interval-min the curves over whole stroke intervals (25 h and an"
            " interval of readings); writes trumpet.csv and trumpet.png or .svg; talks to no"
            " board")
    json_only = argparse.ArgumentParser(add_help=False)
    json_only.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                           help="as the global --json (print the result as JSON)")
    trp = sub.add_parser("trumpet", help=_help(text), description=_help(text),
                         parents=[json_only])
    trp.add_argument("readings", metavar="READINGS.csv", help="CSV with a header: time_s"
                     " (seconds, increasing) and mass_g or mass_mg; the first reading is the"
                     " start of the infusion")
    trp.add_argument("--rate-ul-per-h", type=float, required=True, metavar="R",
                     help="the set rate (uL/h)")
    trp.add_argument("--stroke-interval-min", type=float, metavar="T",
                     help="the pump's stroke interval (min): adds the curves over windows of"
                     " 1, 2, 4, ... whole intervals up to 24 h (needs 25 h and one interval"
                     " of readings)")
    trp.add_argument("--temperature-c", type=float, default=20.0, metavar="C",
                     help="water temperature for its density (default %(default)s)")
    evaporation = trp.add_mutually_exclusive_group()
    evaporation.add_argument("--evaporation-mg-per-h", type=float, default=0.0, metavar="E",
                             help="evaporation from the vessel, added back (default"
                             " %(default)s)")
    evaporation.add_argument("--blank", metavar="BLANK.csv", help="readings of a blank run"
                             " (no flow): their slope is the evaporation")
    trp.add_argument("--out", metavar="DIR", help="folder for trumpet.csv and the figure"
                     " (default: the readings' folder)")
    trp.add_argument("--figure", choices=("png", "svg"), default="png",
                     help="figure format (default %(default)s)")
    return p


def main(argv=None):
    ns = parser().parse_args(argv)
    s = Session(ns)
    handlers = {"ports": cmd_ports, "status": cmd_status, "alarms": cmd_alarms,
                "program": cmd_program, "monitor": cmd_monitor, "hil": cmd_hil,
                "deploy": cmd_deploy, "trumpet": cmd_trumpet, "calibrate": cmd_calibrate}
    try:
        if ns.command in handlers:
            return handlers[ns.command](s)
        if ns.command == "log":
            return cmd_log_export(s)
        if ns.command == "time":
            return cmd_time_sync(s)
        if ns.command == "keys":
            return cmd_keys_provision(s)
        return run_command(s, ns.schema, _args_of(ns.schema, ns))
    except UsageError as e:
        print(f"itbctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    except link.Declined:
        print("itbctl: not confirmed: nothing was changed", file=sys.stderr)
        return EXIT_REFUSED
    except link.Refused as e:
        s.emit(e.result)
        print(f"itbctl: {refusal_text(e.result)}", file=sys.stderr)
        return EXIT_REFUSED
    except (link.LinkError, ex.ExportError) as e:
        print(f"itbctl: {e}", file=sys.stderr)
        return EXIT_LINK
    finally:
        s.close()


if __name__ == "__main__":
    sys.exit(main())
