"""The command schema: the single source of command names, parameters, units,
ranges, roles and two-phase flags (DESIGN principle 7).

Each command is ``{"name": str, "id": int, "role": str, "args": {...}}``. Parameters
are integers in the canonical unit their name carries (``daily_dose_ng``), strings
from a fixed set of choices, or a list of integer pairs (``steps``). ``units`` lists
the suffixes a host or scenario file may use for a parameter with their factor to
the canonical unit (``("ug", 1000)``: 1 µg = 1000 ng), so ``set_daily_dose_ug = 120``
in a scenario becomes ``daily_dose_ng = 120000``.

Two-phase commands (SR-15) are sent as ``prepare`` (args: ``command`` and that
command's ``args``) and applied by ``confirm`` (args: ``hash``) within the confirm window.

Errors: ``validate`` raises ``CommandError(reason, message)``; it never coerces a
value (a bool is not an int, a float is refused, SR-14 "reject, never clamp").
"""

CLINICIAN = "clinician"
PATIENT = "patient"
SERVICE = "service"
ROLES = (CLINICIAN, PATIENT, SERVICE)

ORIGINS = ("spinal", "cerebral", "paediatric")
STOP_REASONS = ("procedure", "mri", "other")
PRIME_CONTENTS = ("drug", "saline", "empty")
START_RULES = ("us", "eu")

INT = "int"
STR = "str"
STEPS = "steps"
MAP = "map"

BIG = 1000000000  # schema ceiling for amounts; the hard limits are in drugs.py
DAY = 86400000

MASS_UNITS = (("ng", 1), ("ug", 1000), ("mg", 1000000))
VOLUME_UNITS = (("nl", 1), ("ul", 1000), ("ml", 1000000))
TIME_UNITS = (("ms", 1), ("s", 1000), ("min", 60000), ("h", 3600000), ("d", 86400000))
RATE_UNITS = (("nl_per_day", 1), ("ul_per_day", 1000), ("ml_per_day", 1000000))


class CommandError(Exception):
    """A command the schema refuses: ``reason`` (code) and ``message``."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason
        self.message = message


def _p(name, kind, lo=0, hi=BIG, default=None, units=(), choices=(), step=1, doc=""):
    return {"name": name, "kind": kind, "lo": lo, "hi": hi, "default": default,
            "units": units, "choices": choices, "step": step, "doc": doc}


def _dose(name, doc, default=None):
    return _p(name, INT, 0, BIG, default, MASS_UNITS, step=100, doc=doc)


_DAILY = _dose("daily_dose_ng", "basal daily dose, ng/day (0.1 µg/day resolution)")
_PLAN = (
    _dose("target_daily_dose_ng", "plan target, ng/day"),
    _p("step_pct", INT, 1, 100, doc="change per step, percent of the previous dose"),
    _p("every_ms", INT, 60000, 30 * DAY, units=TIME_UNITS, doc="time between steps"),
)

# name -> (roles, two_phase, params, doc)
COMMANDS = {
    "program": ((CLINICIAN,), 1, (
        _DAILY,
        _p("origin", STR, choices=ORIGINS, doc="patient category (SR-8)"),
        _dose("cap_24h_ng", "24 h cap, ng (0: SR-3 default)", 0),
        _dose("cap_1h_ng", "1 h cap, ng (0: SR-3 default)", 0),
        _dose("screening_dose_ng", "effective screening bolus; >0 marks first program (SR-10)", 0),
        _p("screening_effect_ms", INT, 0, 7 * DAY, 0, TIME_UNITS, doc="screening effect duration"),
        _p("start_rule", STR, default="us", choices=START_RULES, doc="SR-10: us 8 h, eu 12 h"),
        _dose("patient_bolus_ng", "patient bolus dose, ng (0: disabled)", 0),
        _p("patient_lockout_ms", INT, 0, DAY, 0, TIME_UNITS, doc="patient bolus lockout"),
        _p("patient_max_per_24h", INT, 0, 48, 0, doc="patient boluses allowed per 24 h"),
    ), "first basal program (UNPROGRAMMED or SAFE -> RUNNING)"),
    "set_daily_dose": ((CLINICIAN,), 1, (_DAILY,), "continuous basal change (SR-8/9)"),
    "flex": ((CLINICIAN,), 1, (
        _p("steps", STEPS, doc="[[start_min_local, daily_dose_ng], ...], up to 13"),
    ), "flex basal: daily-dose rate steps by local time (SR-24)"),
    "titrate": ((CLINICIAN,), 1, _PLAN, "plan of increases (SR-13)"),
    "taper": ((CLINICIAN,), 1, _PLAN, "plan of decreases (SR-13)"),
    "bolus": ((CLINICIAN,), 1, (
        _dose("dose_ng", "bolus mass, ng"),
        _p("duration_ms", INT, 0, DAY, units=TIME_UNITS, doc="delivery duration"),
    ), "clinician bolus over a duration (SR-2, SR-6)"),
    "patient_bolus": ((PATIENT,), 0, (), "patient-activated dose (SR-29)"),
    "stop": ((CLINICIAN,), 1, (
        _p("reason", STR, choices=STOP_REASONS, doc="why (SR-17)"),
    ), "planned stop (SR-17)"),
    "emergency_stop": ((CLINICIAN,), 0, (), "suspected overdose: stop now (SR-16)"),
    "min_rate": ((CLINICIAN,), 1, (
        _p("rate_nl_per_day", INT, 0, BIG, None, RATE_UNITS, doc="patency rate, nL/day"),
    ), "minimum (patency) rate (SR-18)"),
    "resume": ((CLINICIAN,), 1, (
        _dose("daily_dose_ng", "restart dose (0: the largest the restart rule allows)", 0),
    ), "resume basal under the restart rule (SR-11)"),
    "post_scan_check": ((CLINICIAN,), 0, (), "post-MRI check before resume (SR-17)"),
    "refill": ((CLINICIAN,), 1, (
        _p("aspirated_nl", INT, 0, BIG, None, VOLUME_UNITS, doc="volume aspirated"),
        _p("volume_nl", INT, 0, BIG, None, VOLUME_UNITS, doc="volume added"),
        _p("concentration_ug_per_ml", INT, 1, 100000, doc="library concentration (SR-21)"),
        _p("partial", INT, 0, 1, 0, doc="1: aspiration was not complete"),
    ), "refill and reconcile (SR-19, SR-20, SR-21)"),
    "prime": ((CLINICIAN,), 1, (
        _p("contents", STR, choices=PRIME_CONTENTS, doc="what the fluid path holds now"),
    ), "declare catheter contents; prime saline/empty to 80 % of dead volume (SR-21)"),
    "port_injection": ((CLINICIAN,), 1, (
        _dose("dose_ng", "mass injected through the access port, ng"),
    ), "record an access-port injection as a bolus event (SR-30)"),
    "acknowledge": ((CLINICIAN, PATIENT), 0, (
        _p("code", STR, default="all", doc="alarm code, or all"),
    ), "acknowledge latched alarms (SR-28)"),
    "set_clock_offset": ((CLINICIAN,), 1, (
        _p("utc_offset_min", INT, -720, 840, doc="local time = UTC + offset"),
    ), "set the local-time offset for flex (SR-24)"),
    "maintenance": ((SERVICE,), 0, (), "enter MAINTENANCE for deploy (SR-27)"),
    # bench commands: their parameters are ``itb.calibration.PARAMS``, loaded on first
    # use (``params``), so a pump in use never holds them (heap)
    "calibration_run": ((SERVICE,), 1, None,
                        "bench: strokes for a gravimetric calibration, UNPROGRAMMED only"),
    "set_calibration": ((SERVICE,), 1, None,
                        "bench: correct the board's volume-to-motion factor from a measurement"),
    "prepare": (ROLES, 0, (
        _p("command", STR, doc="two-phase command name"),
        _p("args", MAP, default={}, doc="that command's args"),
    ), "phase one of a therapy change: returns the effect and a hash (SR-15)"),
    "confirm": (ROLES, 0, (
        _p("hash", INT, 0, 0xFFFFFFFF, doc="hash returned by prepare"),
    ), "phase two: apply the prepared change (SR-15)"),
}

NAMES = tuple(sorted(COMMANDS))

def spec(name):
    """``(roles, two_phase, params, doc)`` of a controller or board command
    (``board_commands.py``); KeyError for an unknown name."""
    if name in COMMANDS:
        return COMMANDS[name]
    return board_table()[name]


def board_table():
    """The board commands (``itb.board_commands.BOARD_COMMANDS``), imported on first
    use: the controller never needs them, so they cost it no heap."""
    from itb.board_commands import BOARD_COMMANDS

    return BOARD_COMMANDS


def roles(name):
    """Roles allowed to send command ``name`` (controller or board command)."""
    return spec(name)[0]


def is_two_phase(name):
    """True if ``name`` must go through prepare/confirm (SR-15)."""
    return spec(name)[1] == 1


def params(name):
    """Parameter specs of ``name`` (tuple of dicts: name, kind, lo, hi, default,
    units, choices, step, doc)."""
    p = spec(name)[2]
    if p is None:  # a bench command's: loaded on first use
        from itb.calibration import PARAMS

        p = PARAMS[name]
    return p


def shown(value, limit=60):
    """A peer's value quoted for a message: printable ASCII only, at most ``limit``
    characters, and the same text in CPython and MicroPython (their ``repr`` of a
    non-ASCII string differs, which would make a trace interpreter-dependent)."""
    if type(value) is int:
        return str(value)
    if type(value) is not str:
        return "<%s>" % type(value).__name__
    out = []
    for ch in value[:limit]:
        o = ord(ch)
        if 32 <= o < 127 and ch != "'" and ch != "\\":
            out.append(ch)
        elif o < 0x10000:
            out.append("\\u%04x" % o)
        else:
            out.append("\\U%08x" % o)
    return "'" + "".join(out) + ("...'" if len(value) > limit else "'")


def validate(name, args):
    """Check ``args`` against the schema of ``name``; return a new dict with
    defaults filled in. Raises ``CommandError`` (UNKNOWN_COMMAND, BAD_ARGUMENT,
    OUT_OF_RANGE) naming the parameter. Never coerces or clamps (SR-14)."""
    if type(name) is not str or (name not in COMMANDS and name not in board_table()):
        raise CommandError("UNKNOWN_COMMAND", "unknown command %s" % shown(name))
    if type(args) is not dict:
        raise CommandError("BAD_ARGUMENT", "args must be a mapping")
    for key in args:
        if type(key) is not str:
            raise CommandError("BAD_ARGUMENT", "%s: parameter names must be strings" % name)
    specs = params(name)
    known = [s["name"] for s in specs]
    for key in sorted(args):
        if key not in known:
            raise CommandError("BAD_ARGUMENT", "%s: unknown parameter %s" % (name, shown(key)))
    out = {}
    for s in specs:
        key = s["name"]
        if key not in args:
            if s["default"] is None:
                raise CommandError("BAD_ARGUMENT", "%s: missing parameter %s" % (name, key))
            out[key] = s["default"]
            continue
        out[key] = _check(name, s, args[key])
    return out


def _check(name, s, value):
    key = s["name"]
    kind = s["kind"]
    if kind == STR:
        if type(value) is not str:
            raise CommandError("BAD_ARGUMENT", "%s: %s must be a string" % (name, key))
        if s["choices"] and value not in s["choices"]:
            raise CommandError("OUT_OF_RANGE", "%s: %s must be one of %s"
                               % (name, key, ", ".join(s["choices"])))
        if len(value) > 32:
            raise CommandError("OUT_OF_RANGE", "%s: %s too long" % (name, key))
        return value
    if kind == STEPS:
        return _check_steps(name, value)
    if kind == MAP:
        if type(value) is not dict:
            raise CommandError("BAD_ARGUMENT", "%s: %s must be a mapping" % (name, key))
        return value
    if type(value) is not int:
        raise CommandError("BAD_ARGUMENT", "%s: %s must be an integer" % (name, key))
    if value < s["lo"] or value > s["hi"]:
        raise CommandError("OUT_OF_RANGE", "%s: %s=%d outside [%d, %d]"
                           % (name, key, value, s["lo"], s["hi"]))
    if value % s["step"]:
        raise CommandError("OUT_OF_RANGE", "%s: %s=%d is not a multiple of %d (SR-1)"
                           % (name, key, value, s["step"]))
    return value


def _check_steps(name, value):
    # SR-24 flex: up to 13 steps (SynchroMed II), first at local 00:00, strictly
    # increasing start minutes < 1440, doses in 0.1 µg/day resolution.
    if type(value) is not list or not (1 <= len(value) <= 13):
        raise CommandError("BAD_ARGUMENT", "%s: steps must be a list of 1 to 13 pairs" % name)
    out = []
    last = -1
    for pair in value:
        if type(pair) is not list or len(pair) != 2:
            raise CommandError("BAD_ARGUMENT", "%s: each step is [start_min, daily_dose_ng]" % name)
        start, dose = pair
        if type(start) is not int or type(dose) is not int:
            raise CommandError("BAD_ARGUMENT", "%s: step values must be integers" % name)
        if start <= last or start >= 1440 or (last < 0 and start != 0):
            raise CommandError("OUT_OF_RANGE", "%s: step starts must rise from 0 to < 1440" % name)
        if dose < 0 or dose > BIG or dose % 100:
            raise CommandError("OUT_OF_RANGE", "%s: step dose %d invalid (SR-1)" % (name, dose))
        last = start
        out.append([start, dose])
    return out
