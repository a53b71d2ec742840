"""Scenario files (TOML, read with ``tomllib``): checked whole before anything runs.

A scenario describes a pump, its drug, a virtual patient, an established (or
newly implanted) therapy and timed events::

    name = "spinal titration after screening"
    duration_days = 30
    seed = 1                      # optional, default 0
    [pump]                        # optional; keys in PUMP_KEYS
    [drug]                        # concentration_ug_per_ml (drug library), fill_volume_ml
    [patient]                     # origin = spinal | cerebral | paediatric, model = typical ...
    [prescription]                # daily_dose_ug, max_daily_dose_ug (SR-3 24 h cap), ...
    [[events]]
    at = "1d 1h"                  # "90s", "15min", "6h", "2d", "2d 6h"
    set_daily_dose_ug = 120

An event has ``at`` and one event key: a command of the schema
(``itb/commands.py``; the simulator sends prepare + confirm for two-phase ones),
optionally suffixed with a unit the schema lists for its only amount
(``set_daily_dose_ug = 120``), with a table of arguments (``titrate = {...}``),
a single value (``stop = "procedure"``) or ``true`` (``emergency_stop = true``);
or a simulator event (``SIM_EVENTS``). A refill's aspiration is complete (the
true reservoir was emptied) unless it says ``partial = true``; leaving out
``aspirated_ml`` enters the volume really aspirated (rounded to 0.1 mL, as read
off a syringe).

``[prescription]`` describes an established therapy: the catheter is full of
``[drug]`` and the patient is at steady state and adapted. With both
``screening_dose_ug`` and ``screening_effect_h`` it is the first program after
implant instead (SR-10 start rules; a drug-naive patient).

``load(path)`` returns a ``Scenario`` or raises ``ScenarioError`` listing every
problem (file, table or event index, key, value): syntax errors, unknown keys,
units the schema does not list, wrong types, negative amounts, concentrations
outside the drug library. Any other value (a zero dose, an over-cap step, a bolus
over the maximum) goes to the controller and is refused there, with its reason
in the run's ``commands``.
"""

import math
import re
import tomllib
from pathlib import Path

from itb import commands as cmds
from itb import drugs

from host_tools import units
from sim import patient as pt

DAY_MS = 86_400_000
TOP_KEYS = ("name", "duration_days", "seed", "pump", "drug", "patient", "prescription", "events")

# [pump] key -> (DeviceConfig field or None for the pump model, factor to the field's unit)
PUMP_KEYS = {
    "reservoir_capacity_ml": ("reservoir_capacity_nl", 1_000_000),
    "stroke_nl": ("stroke_nl", 1),
    "tubing_volume_ml": ("tubing_nl", 1_000_000),
    "catheter_length_cm": ("catheter_length_mm", 10),
    "low_reservoir_alarm_ml": ("low_reservoir_nl", 1_000_000),
    "low_reservoir_alarm_days": ("low_reservoir_days", 1),
    "max_rate_ml_per_min": ("max_rate_nl_per_min", 1_000_000),
    "hard_max_daily_dose_ug": ("max_daily_dose_ng", 1000),
    "hard_max_bolus_ug": ("max_bolus_ng", 1000),
    "volume_accuracy_pct": ("volume_accuracy_permille", 10),
    # the pump model (truth), not the controller's configuration
    "stroke_error_pct": (None, None),
    "stroke_bias_pct": (None, None),
    "battery_life_days": (None, None),
}
# SR-19/SR-20 reading: the default per-stroke spread is the Prometra II valve-gated
# accuracy (96.8 %, ITB_REFERENCE "Implanted pumps"): a one-sigma error of 3.2 %.
DEFAULT_STROKE_ERROR_PCT = 3.2
DEFAULT_BATTERY_LIFE_DAYS = 6 * 365  # 5-7 years (Medtronic), at the default stroke rate

# upper bounds of the pump model's own numbers: 3 sd of the stroke error must leave a
# positive volume; a battery outlives no scenario by centuries
MODEL_LIMITS = {"stroke_error_pct": 20, "battery_life_days": 36500}
MAX_DURATION_DAYS = 36500  # a century: the controller's clock runs for millennia, memory not
MAX_CATHETER_CM = 200  # the device configuration's longest catheter (2000 mm)

DRUG_KEYS = ("concentration_ug_per_ml", "fill_volume_ml")
PATIENT_KEYS = ("origin", "model")
# [prescription] key base -> program parameter (units as the schema lists them)
PRESCRIPTION_ALIASES = {"max_daily_dose": "cap_24h", "max_hourly_dose": "cap_1h"}

# simulator-only events: name -> {argument: kind}; kinds "duration", "signed", "number"
SIM_EVENTS = {
    "power_cut": {"duration": "duration"},
    "motor_fault": {"duration": "duration"},
    "occlusion": {"duration": "duration"},
    "catheter_error": {"actual_length_cm": "number"},
    "rtc_jump": {"by": "signed"},
    "rtc_invalid": {},
}
_HHMM = re.compile(r"^[0-9]{1,2}:[0-9]{2}$")
EVENT_COMMANDS = tuple(n for n in cmds.NAMES if n not in ("prepare", "confirm"))


class ScenarioError(ValueError):
    """The scenario cannot run; ``errors`` lists every problem (strings)."""

    def __init__(self, errors):
        super().__init__("\n".join(errors))
        self.errors = errors


class Event:
    """One timed event: ``at_ms`` from the start, ``name`` (command or simulator
    event), canonical ``args`` (ints in the schema's units), ``given`` (the
    arguments as written, for reports: the table, or ``{key: value}`` for a single
    value such as ``set_daily_dose_ug = 120``), ``index`` in the file."""

    def __init__(self, index, at_ms, name, args, given):
        self.index, self.at_ms, self.name, self.args, self.given = index, at_ms, name, args, given

    @property
    def is_command(self):
        return self.name in cmds.COMMANDS

    def __repr__(self):
        return f"Event({self.index}, {self.at_ms}, {self.name!r}, {self.args!r})"


class Scenario:
    """A checked scenario. Attributes: ``name``, ``duration_ms``, ``seed``, ``config``
    (DeviceConfig overrides), ``stroke_error_pct``, ``stroke_bias_pct``,
    ``battery_life_days``, ``concentration_ug_per_ml``, ``fill_volume_nl``,
    ``origin``, ``model``, ``program`` (canonical args of the set-up ``program``),
    ``established`` (False: first program after implant, SR-10), ``events``
    (time order, file order at equal times), ``source``."""

    def with_seed(self, seed):
        """A copy with another seed (cohorts)."""
        s = Scenario()
        s.__dict__.update(self.__dict__)
        s.seed = seed
        return s

    @property
    def duration_days(self):
        return self.duration_ms / DAY_MS


def load(path):
    """Read and check a scenario file; raises ScenarioError (every problem)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is fine
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError([f"{path}: cannot read: {e}"]) from None
    return loads(text, str(path))


def loads(text, source="<scenario>"):
    """Parse scenario TOML text; raises ScenarioError (every problem)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError([f"{source}: TOML syntax error: {e}"]) from None
    except (ValueError, RecursionError) as e:  # a number of 4300+ digits, deep nesting
        raise ScenarioError([f"{source}: cannot read the TOML: {e}"]) from None
    return parse(data, source)


def parse(data, source="<scenario>"):
    """Check a scenario already read into a dict; returns a Scenario."""
    errs = []

    def err(where, msg):
        errs.append(f"{source}: {where}: {msg}")

    for k in data:
        if k not in TOP_KEYS:
            err(k, f"unknown key (known: {', '.join(TOP_KEYS)})")
    s = Scenario()
    s.source = source
    s.name = data.get("name", Path(source).stem)
    if not isinstance(s.name, str):
        err("name", f"must be a string, got {s.name!r}")
    s.duration_ms = 0
    if "duration_days" not in data:
        err("duration_days", "missing (days to simulate)")
    else:
        d = _number(data["duration_days"], "duration_days", err, positive=True,
                    hi=MAX_DURATION_DAYS)
        if d is not None:
            try:
                s.duration_ms = units.exact(d, DAY_MS, "duration_days")
            except units.UnitError as e:
                err("duration_days", str(e))
    s.seed = data.get("seed", 0)
    if isinstance(s.seed, bool) or not isinstance(s.seed, int) or s.seed < 0:
        err("seed", f"must be a non-negative integer, got {s.seed!r}")
    _pump(s, _table(data, "pump", err), err)
    _drug(s, _table(data, "drug", err, required=True), err)
    capacity = s.config.get("reservoir_capacity_nl", drugs.DeviceConfig().reservoir_capacity_nl)
    if s.fill_volume_nl > capacity:
        err("[drug] fill_volume_ml", f"{s.fill_volume_nl / 1e6:g} mL does not fit the reservoir"
                                     f" ({capacity / 1e6:g} mL, [pump] reservoir_capacity_ml)")
    _patient(s, _table(data, "patient", err), err)
    _prescription(s, _table(data, "prescription", err, required=True), err)
    s.events = _events(data.get("events", []), s, err)
    if errs:
        raise ScenarioError(errs)
    return s


def _table(data, key, err, required=False):
    t = data.get(key)
    if t is None:
        if required:
            err(f"[{key}]", "missing table")
        return {}
    if not isinstance(t, dict):
        err(f"[{key}]", f"must be a table, got {t!r}")
        return {}
    return t


def _number(value, where, err, positive=False, hi=None):
    """A finite number >= 0 (> 0 with ``positive``, <= ``hi``), else an error and None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        err(where, f"must be a number, got {value!r}")
        return None
    if not math.isfinite(value) or value < 0 or (positive and value == 0) or (
            hi is not None and value > hi):
        what = "positive" if positive else "non-negative"
        err(where, f"must be a finite {what} number{f' up to {hi:g}' if hi else ''},"
                   f" got {value!r}")
        return None
    return value


def _pump(s, t, err):
    s.config = {}
    s.stroke_error_pct = DEFAULT_STROKE_ERROR_PCT
    s.stroke_bias_pct = 0.0
    s.battery_life_days = DEFAULT_BATTERY_LIFE_DAYS
    for key, value in t.items():
        where = f"[pump] {key}"
        if key not in PUMP_KEYS:
            err(where, f"unknown key (known: {', '.join(PUMP_KEYS)})")
            continue
        field, factor = PUMP_KEYS[key]
        if field is None:
            if key == "stroke_bias_pct":  # a systematic bias may be either sign
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    err(where, f"must be a number, got {value!r}")
                elif not -50 < value < 50:
                    err(where, f"must be within (-50, 50) %, got {value!r}")
                else:
                    s.stroke_bias_pct = float(value)
                continue
            v = _number(value, where, err, positive=key == "battery_life_days",
                        hi=MODEL_LIMITS[key])
            if v is not None:
                setattr(s, key, float(v))
            continue
        if _number(value, where, err) is None:
            continue
        try:
            s.config[field] = units.exact(value, factor, key)
        except units.UnitError as e:
            err(where, str(e))
    try:
        drugs.DeviceConfig(s.config)
    except ValueError as e:
        err("[pump]", f"not a valid device configuration: {e}")


def _drug(s, t, err):
    s.concentration_ug_per_ml = 0
    s.fill_volume_nl = 0
    for key in t:
        if key not in DRUG_KEYS:
            err(f"[drug] {key}", f"unknown key (known: {', '.join(DRUG_KEYS)})")
    for key in DRUG_KEYS:
        if key not in t:
            err(f"[drug] {key}", "missing")
    c = t.get("concentration_ug_per_ml")
    if c is not None:
        if isinstance(c, bool) or not isinstance(c, int):
            err("[drug] concentration_ug_per_ml", f"must be an integer, got {c!r}")
        elif not drugs.is_pump_concentration(c):
            err("[drug] concentration_ug_per_ml", _library(c))
        else:
            s.concentration_ug_per_ml = c
    v = t.get("fill_volume_ml")
    if v is not None and _number(v, "[drug] fill_volume_ml", err) is not None:
        try:
            s.fill_volume_nl = units.exact(v, 1_000_000, "fill_volume_ml")
        except units.UnitError as e:
            err("[drug] fill_volume_ml", str(e))


def _library(c):
    lib = ", ".join(str(x) for x in drugs.PUMP_CONCENTRATIONS_UG_PER_ML)
    return f"{c} ug/mL is not in the pump's drug library ({lib} ug/mL)"


def _patient(s, t, err):
    s.origin, s.model = "spinal", "typical"
    for key in t:
        if key not in PATIENT_KEYS:
            err(f"[patient] {key}", f"unknown key (known: {', '.join(PATIENT_KEYS)})")
    o = t.get("origin", s.origin)
    if o not in cmds.ORIGINS:
        err("[patient] origin", f"{o!r} is not one of {', '.join(cmds.ORIGINS)}")
    else:
        s.origin = o
    m = t.get("model", s.model)
    if m not in pt.PATIENTS:
        err("[patient] model", f"{m!r} is not one of {', '.join(pt.PATIENTS)}")
    else:
        s.model = m


def prescription_keys():
    """The [prescription] keys as usually written (help and error text; any unit the
    schema lists may be used)."""
    out = []
    for spec in cmds.params("program"):
        if spec["name"] == "origin":
            continue
        key = units.example_key(spec).split(" ")[0]
        for alias, param in PRESCRIPTION_ALIASES.items():
            if key.startswith(param + "_"):
                key = alias + key[len(param):]
        out.append(key)
    return out


def _prescription(s, t, err):
    s.program = {"origin": s.origin}
    given = {}
    for key, value in t.items():
        k = key
        for alias, name in PRESCRIPTION_ALIASES.items():
            if key.startswith(alias + "_") or key.startswith(name + "_"):
                k = name + key[len(alias if key.startswith(alias) else name):]
        try:
            name, v = units.canonical("program", k, value)
        except units.UnitError as e:
            msg = str(e)
            if msg.startswith("unknown argument"):
                msg = (f"unknown key (known: {', '.join(prescription_keys())};"
                       " other units the schema lists work too)")
            err(f"[prescription] {key}", msg)
            given[k] = key
            continue
        if name == "origin":
            err(f"[prescription] {key}", "the origin is given in [patient]")
            continue
        if name in s.program:
            err(f"[prescription] {key}", f"given twice (also as {given[name]})")
            continue
        given[name] = key
        s.program[name] = v
    if "daily_dose_ng" not in s.program and not any(k.startswith("daily_dose") for k in given):
        err("[prescription] daily_dose_ug", "missing")
    screening = [k for k in ("screening_dose_ng", "screening_effect_ms") if k in s.program]
    if len(screening) == 1:
        err("[prescription]", "screening_dose_ug and screening_effect_h go together (SR-10)")
    for cap in ("cap_24h_ng", "cap_1h_ng"):
        if s.program.get(cap, 1) == 0:
            err(f"[prescription] {given[cap]}", "a cap of 0 would mean the SR-3 default;"
                " leave the key out for the default")
    s.established = not screening


def _events(events, s, err):
    if not isinstance(events, list):
        err("events", "must be an array of tables ([[events]])")
        return []
    out = []
    for i, ev in enumerate(events):
        where = f"events[{i}]"
        if not isinstance(ev, dict):
            err(where, f"must be a table, got {ev!r}")
            continue
        if "at" not in ev:
            err(where, "missing 'at' (e.g. at = \"1d 6h\")")
            at = None
        else:
            try:
                at = units.duration_ms(ev["at"], signed=True, what="at")
                if at < 0:
                    err(f"{where} at", f"{ev['at']!r} is before the start (times count from 0)")
                    at = None
            except units.UnitError as e:
                err(f"{where} at", str(e))
                at = None
        keys = [k for k in ev if k != "at"]
        if len(keys) != 1:
            err(where, f"needs exactly one event key besides 'at', got {keys or 'none'}")
            continue
        parsed = _event(keys[0], ev[keys[0]], f"{where} {keys[0]}", err)
        if parsed is not None and at is not None:
            if s.duration_ms and at >= s.duration_ms:
                err(f"{where} at", f"{ev['at']!r} is not before the end of the scenario"
                                   " (the run covers [0, duration_days))")
                continue
            given = ev[keys[0]]
            out.append(Event(i, at, parsed[0], parsed[1],
                             given if isinstance(given, dict) else {keys[0]: given}))
    out.sort(key=lambda e: (e.at_ms, e.index))
    return out


def _split_key(key):
    """Event key -> (name, unit suffix or None)."""
    if key in cmds.COMMANDS or key in SIM_EVENTS:
        return key, None
    for name in sorted(cmds.COMMANDS, key=len, reverse=True):
        if key.startswith(name + "_"):
            return name, key[len(name) + 1:]
    return None, None


def _event(key, value, where, err):
    name, unit = _split_key(key)
    if name is None or name in ("prepare", "confirm"):
        known = ", ".join(EVENT_COMMANDS + tuple(SIM_EVENTS))
        err(where, f"unknown event (known: {known}; a command may carry a unit suffix)")
        return None
    if name in SIM_EVENTS:
        return _sim_event(name, value, where, err)
    specs = cmds.params(name)
    if isinstance(value, dict):
        if unit is not None:
            err(where, "a unit suffix goes with a single value, not a table")
            return None
        items = list(value.items())
    elif value is True and all(p["default"] is not None for p in specs):
        items = []  # every argument has a default (emergency_stop = true)
    else:
        # a single value: the command's only (or only required) parameter
        required = [p for p in specs if p["default"] is None]
        p = specs[0] if len(specs) == 1 else (required[0] if len(required) == 1 else None)
        if p is None:
            err(where, "give the arguments as a table, e.g. "
                       f"{name} = {{ {', '.join(q['name'] + ' = ...' for q in specs)} }}")
            return None
        if unit is not None and not p["units"]:
            err(where, f"{p['name']} takes no unit suffix")
            return None
        k = p["name"] if unit is None else p["name"][: -len(p["units"][0][0])] + unit
        items = [(k, value)]
    args, ok = {}, True
    for k, v in items:
        if name == "flex" and k == "steps_ug":
            v = _flex_steps(v, f"{where} {k}", err)
            if v is None:
                ok = False
                continue
            k = "steps"
        try:
            pname, cv = units.canonical(name, k, v)
        except units.UnitError as e:
            err(f"{where} {k}", str(e))
            ok = False
            continue
        if name == "refill" and pname == "concentration_ug_per_ml" and \
                not drugs.is_pump_concentration(cv):
            err(f"{where} {k}", _library(cv))
            ok = False
            continue
        if pname in args:
            err(f"{where} {k}", "given twice")
            ok = False
            continue
        args[pname] = cv
    if ok:
        for p in specs:
            if p["default"] is None and p["name"] not in args and not (
                    name == "refill" and p["name"] == "aspirated_nl"):
                err(where, f"missing argument {units.base_name(p)}"
                           f" (e.g. {units.example_key(p)})")
                ok = False
    return (name, args) if ok else None


def _flex_steps(value, where, err):
    """``[["00:00", 100], ["08:00", 150.5]]`` (start local time, ug/day) -> schema steps."""
    if not isinstance(value, list):
        err(where, "must be a list of [\"HH:MM\", ug_per_day] pairs")
        return None
    out = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            err(where, f"each step is [\"HH:MM\", ug_per_day], got {pair!r}")
            return None
        hh, _, mm = pair[0].partition(":")
        if not (_HHMM.match(pair[0]) and int(hh) < 24 and int(mm) < 60):
            err(where, f"step start {pair[0]!r} is not HH:MM")
            return None
        try:
            dose = units.exact(pair[1], 1000, "step dose")
        except units.UnitError as e:
            err(where, str(e))
            return None
        out.append([int(hh) * 60 + int(mm), dose])
    return out


def _sim_event(name, value, where, err):
    spec = SIM_EVENTS[name]
    if not spec:
        if value is not True:
            err(where, f"{name} takes no arguments: write {name} = true")
            return None
        return name, {}
    if not isinstance(value, dict):
        err(where, f"expected a table like {{ {next(iter(spec))} = ... }}, got {value!r}")
        return None
    args, ok = {}, True
    for k in value:
        if k not in spec:
            err(f"{where} {k}", f"unknown argument (known: {', '.join(spec)})")
            ok = False
    for k, kind in spec.items():
        if k not in value:
            err(f"{where} {k}", "missing")
            ok = False
            continue
        v = value[k]
        try:
            if kind == "number":
                if _number(v, f"{where} {k}", err, hi=MAX_CATHETER_CM) is None:
                    ok = False
                    continue
                args[k] = float(v)
            else:
                args[k] = units.duration_ms(v, signed=kind == "signed", what=k)
                if kind == "duration" and args[k] <= 0:
                    err(f"{where} {k}", f"must be positive, got {v!r}")
                    ok = False
        except units.UnitError as e:
            err(f"{where} {k}", str(e))
            ok = False
    return (name, args) if ok else None
