"""Drug library and device configuration: the only source of hard limits (SR-2).

Hard limits never come from a command. ``DeviceConfig`` holds the device's
configuration (pump geometry, hard limits, alarm thresholds) as plain integer
attributes; every field is range-checked when the configuration is built, and a
bad configuration raises ``ValueError`` naming the field (nothing is half-set).

Sources (see ``reference/ITB_REFERENCE.md``):
- concentrations for pump fills 500, 1000, 2000 µg/mL; 50 µg/mL is the screening
  strength, never a pump fill (Gablofen / Lioresal labels, Prometra indication);
- maximum daily dose 2000 µg/day, maximum single bolus 100 µg, maximum pump rate
  1 mL/min, minimum rate 20 µL/day: project defaults (SR-2);
- volume accuracy: see ``volume_accuracy_permille`` below (SR-19 reading);
- low reservoir at 4 mL or 5 days to empty: project default (Neurosurgery 2004).
"""

from itb.units import DAY_MS, HOUR_MS, MINUTE_MS, TUBING_NL_DEFAULT, check_int

DRUG_NAME = "baclofen"
PUMP_CONCENTRATIONS_UG_PER_ML = (500, 1000, 2000)
SCREENING_CONCENTRATION_UG_PER_ML = 50

# (name, default, lo, hi, unit and meaning). Order is the documented order.
CONFIG_FIELDS = (
    ("stroke_nl", 2000, 100, 100000, "nL per stroke (calibrated)"),
    ("reservoir_capacity_nl", 20000000, 1000000, 100000000, "reservoir size, nL"),
    ("tubing_nl", TUBING_NL_DEFAULT, 0, 2000000, "pump tubing volume, nL (SR-22)"),
    ("catheter_length_mm", 900, 0, 2000, "implanted catheter length, mm (SR-22)"),
    ("max_daily_dose_ng", 2000000, 1000, 10000000, "hard max daily dose, ng/day (SR-2)"),
    ("max_bolus_ng", 100000, 100, 1000000, "hard max single bolus, ng (SR-2)"),
    ("max_rate_nl_per_min", 1000000, 1000, 10000000, "max pump rate, nL/min (SR-2)"),
    ("min_rate_nl_per_day", 20000, 1000, 1000000, "minimum (patency) rate, nL/day (SR-2)"),
    # SR-19 names both 14.5 % and "default 10 %"; the wider one is the safer reading
    # (earlier low-reservoir alarm, later computed-empty stop). Calibration narrows it.
    ("volume_accuracy_permille", 145, 0, 500, "volume accuracy tol, permille (SR-19)"),
    ("low_reservoir_nl", 4000000, 0, 100000000, "LOW_RESERVOIR volume threshold (SR-19)"),
    ("low_reservoir_days", 5, 0, 60, "LOW_RESERVOIR days-to-empty threshold (SR-19)"),
    ("settle_ms", HOUR_MS, MINUTE_MS, DAY_MS, "settle time of a basal dose (SR-9)"),
    ("taper_down_pct", 20, 1, 50, "taper down-cap per 24 h, percent (SR-9)"),
    ("up_spinal_pct", 30, 1, 40, "titration up-cap, spinal origin (SR-8, US label)"),
    ("up_cerebral_pct", 15, 1, 20, "titration up-cap, cerebral origin (SR-8, US label)"),
    ("up_paediatric_pct", 15, 1, 20, "titration up-cap, paediatric (SR-8, US label)"),
    ("emergency_min_rate", 0, 0, 1, "1: emergency stop enters MIN_RATE (SR-16)"),
    ("realarm_ms", 5 * MINUTE_MS, 10000, HOUR_MS, "HIGH alarm re-annunciation (SR-28)"),
    ("session_timeout_ms", 15 * MINUTE_MS, MINUTE_MS, 12 * HOUR_MS, "session end (SR-17)"),
    ("confirm_window_ms", 60000, 1000, 600000, "prepare->confirm window (SR-15)"),
    ("patient_bolus_duration_ms", 10 * MINUTE_MS, 0, HOUR_MS, "patient bolus duration"),
    ("prime_rate_nl_per_min", 1000000, 1000, 10000000, "priming rate, nL/min (SR-21)"),
)


class DeviceConfig:
    """Device configuration and hard limits (SR-2). All attributes are ints.

    ``DeviceConfig({"stroke_nl": 1000})`` overrides defaults; unknown names or
    out-of-range values raise ``ValueError`` and build nothing.
    Derived: ``dead_volume_nl`` (SR-22), ``min_stroke_interval_ms`` (SR-2 max rate).
    """

    # The fields of CONFIG_FIELDS, set by ``setattr`` in ``__init__``, declared for the
    # type checker (``make typecheck``); bare annotations create no attribute and cost
    # nothing in MicroPython. tests/test_edge_paths.py keeps the list equal to CONFIG_FIELDS.
    stroke_nl: int
    reservoir_capacity_nl: int
    tubing_nl: int
    catheter_length_mm: int
    max_daily_dose_ng: int
    max_bolus_ng: int
    max_rate_nl_per_min: int
    min_rate_nl_per_day: int
    volume_accuracy_permille: int
    low_reservoir_nl: int
    low_reservoir_days: int
    settle_ms: int
    taper_down_pct: int
    up_spinal_pct: int
    up_cerebral_pct: int
    up_paediatric_pct: int
    emergency_min_rate: int
    realarm_ms: int
    session_timeout_ms: int
    confirm_window_ms: int
    patient_bolus_duration_ms: int
    prime_rate_nl_per_min: int

    def __init__(self, overrides=None):
        overrides = overrides or {}
        names = [f[0] for f in CONFIG_FIELDS]
        for key in sorted(overrides):
            if key not in names:
                raise ValueError("unknown configuration field " + key)
        for name, default, lo, hi, _doc in CONFIG_FIELDS:
            setattr(self, name, check_int(name, overrides.get(name, default), lo, hi))
        from itb.units import ceil_div, dead_volume_nl

        self.dead_volume_nl = dead_volume_nl(self.tubing_nl, self.catheter_length_mm)
        # SR-2: consecutive strokes are never closer than the maximum rate allows.
        self.min_stroke_interval_ms = ceil_div(self.stroke_nl * MINUTE_MS, self.max_rate_nl_per_min)
        # Owed-volume scale (scheduler.py): a multiple of 1000 and of every library
        # concentration, so daily-dose -> volume-rate conversions stay exact integers.
        k = 1000
        for c in PUMP_CONCENTRATIONS_UG_PER_ML:
            k = _lcm(k, c)
        self.volume_scale = k

    def as_dict(self):
        """Configuration as a plain dict (field -> int), in documented order."""
        return dict((f[0], getattr(self, f[0])) for f in CONFIG_FIELDS)

    def up_pct(self, origin):
        """SR-8 up-cap percentage for a patient category."""
        return getattr(self, "up_" + origin + "_pct")


def _lcm(a, b):
    x, y = a, b
    while y:
        x, y = y, x % y
    return a * b // x


def is_pump_concentration(concentration_ug_per_ml):
    """SR-2/SR-21: True if the concentration may fill the pump (library value)."""
    return concentration_ug_per_ml in PUMP_CONCENTRATIONS_UG_PER_ML
