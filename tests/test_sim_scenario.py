"""Scenario files (sim/scenario.py) and exact unit conversion (host_tools/units.py):
good files parse to the schema's canonical integers; bad files are rejected whole,
with every problem reported (file, table or event, key, value), before anything runs."""

import pytest

from host_tools import units
from sim import scenario as sc

GOOD = """
name = "spinal titration after screening"
duration_days = 30
seed = 1
[pump]
reservoir_capacity_ml = 20
stroke_nl = 2000
tubing_volume_ml = 0.140
catheter_length_cm = 90
low_reservoir_alarm_ml = 4
low_reservoir_alarm_days = 5
[drug]
concentration_ug_per_ml = 500
fill_volume_ml = 20
[patient]
origin = "spinal"
model = "typical"
[prescription]
daily_dose_ug = 100
max_daily_dose_ug = 1000
screening_dose_ug = 50
screening_effect_h = 6
[[events]]
at = "1d 1h"
set_daily_dose_ug = 120
[[events]]
at = "2d"
titrate = { target_daily_dose_ug = 400, step_pct = 20, every = "24h" }
[[events]]
at = "15d"
bolus = { dose_ug = 50, duration = "1min" }
[[events]]
at = "20d"
refill = { aspirated_ml = 7.0, volume_ml = 20, concentration_ug_per_ml = 2000 }
"""

MINIMAL = """
duration_days = 2
[drug]
concentration_ug_per_ml = 2000
fill_volume_ml = 20
[prescription]
daily_dose_ug = 400
"""


def errors_of(text):
    with pytest.raises(sc.ScenarioError) as e:
        sc.loads(text, "s.toml")
    return e.value.errors


def test_issue_example_parses_to_canonical_integers():
    s = sc.loads(GOOD, "s.toml")
    assert s.name == "spinal titration after screening"
    assert s.duration_ms == 30 * 86_400_000 and s.seed == 1
    assert s.config == {"reservoir_capacity_nl": 20_000_000, "stroke_nl": 2000,
                        "tubing_nl": 140_000, "catheter_length_mm": 900,
                        "low_reservoir_nl": 4_000_000, "low_reservoir_days": 5}
    assert (s.concentration_ug_per_ml, s.fill_volume_nl) == (500, 20_000_000)
    assert (s.origin, s.model, s.established) == ("spinal", "typical", False)
    assert s.program == {"origin": "spinal", "daily_dose_ng": 100_000, "cap_24h_ng": 1_000_000,
                         "screening_dose_ng": 50_000, "screening_effect_ms": 6 * 3_600_000}
    got = [(e.at_ms, e.name, e.args) for e in s.events]
    assert got == [
        (25 * 3_600_000, "set_daily_dose", {"daily_dose_ng": 120_000}),
        (2 * 86_400_000, "titrate", {"target_daily_dose_ng": 400_000, "step_pct": 20,
                                     "every_ms": 86_400_000}),
        (15 * 86_400_000, "bolus", {"dose_ng": 50_000, "duration_ms": 60_000}),
        (20 * 86_400_000, "refill", {"aspirated_nl": 7_000_000, "volume_nl": 20_000_000,
                                     "concentration_ug_per_ml": 2000}),
    ]


def test_defaults_and_established_therapy():
    s = sc.loads(MINIMAL)
    assert s.seed == 0 and s.established and s.model == "typical" and s.origin == "spinal"
    assert s.stroke_error_pct == sc.DEFAULT_STROKE_ERROR_PCT and s.stroke_bias_pct == 0
    assert s.events == []


@pytest.mark.parametrize("event, name, args", [
    ('emergency_stop = true', "emergency_stop", {}),
    ('patient_bolus = true', "patient_bolus", {}),
    ('stop = "mri"', "stop", {"reason": "mri"}),
    ('stop = { reason = "procedure" }', "stop", {"reason": "procedure"}),
    ('min_rate_ul_per_day = 20', "min_rate", {"rate_nl_per_day": 20_000}),
    ('resume = true', "resume", {}),
    ('resume_ug = 50', "resume", {"daily_dose_ng": 50_000}),
    ('port_injection_ug = 12.5', "port_injection", {"dose_ng": 12_500}),
    ('set_clock_offset = -300', "set_clock_offset", {"utc_offset_min": -300}),
    ('acknowledge = "all"', "acknowledge", {"code": "all"}),
    ('refill = { volume_ml = 20, concentration_ug_per_ml = 2000, partial = true }', "refill",
     {"volume_nl": 20_000_000, "concentration_ug_per_ml": 2000, "partial": 1}),
    ('taper = { target_daily_dose_ug = 0, step_pct = 20, every_h = 24 }', "taper",
     {"target_daily_dose_ng": 0, "step_pct": 20, "every_ms": 86_400_000}),
    ('flex = { steps_ug = [["00:00", 100], ["08:30", 150.5]] }', "flex",
     {"steps": [[0, 100_000], [510, 150_500]]}),
    ('power_cut = { duration = "2h" }', "power_cut", {"duration": 7_200_000}),
    ('motor_fault = { duration = "6h" }', "motor_fault", {"duration": 21_600_000}),
    ('occlusion = { duration = "1h" }', "occlusion", {"duration": 3_600_000}),
    ('catheter_error = { actual_length_cm = 100 }', "catheter_error", {"actual_length_cm": 100.0}),
    ('rtc_jump = { by = "-23h" }', "rtc_jump", {"by": -23 * 3_600_000}),
    ('rtc_invalid = true', "rtc_invalid", {}),
])
def test_every_event_form(event, name, args):
    s = sc.loads(MINIMAL + f'[[events]]\nat = "1d"\n{event}\n')
    assert (s.events[0].name, s.events[0].args) == (name, args)


def test_events_sorted_by_time_then_file_order():
    text = MINIMAL + "".join(f'[[events]]\nat = "{at}"\nemergency_stop = true\n'
                             for at in ("1d", "2h", "1d", "90s"))
    s = sc.loads(text)
    assert [(e.at_ms, e.index) for e in s.events] == [
        (90_000, 3), (7_200_000, 1), (86_400_000, 0), (86_400_000, 2)]


def test_values_the_controller_judges_are_passed_through():
    """A zero dose, an over-cap step and a bolus over the maximum are not the parser's
    business: they reach the controller, which refuses them with a reason."""
    s = sc.loads(MINIMAL + '[[events]]\nat = "1d"\nset_daily_dose_ug = 0\n'
                 '[[events]]\nat = "1d"\nbolus = { dose_ug = 5000, duration = "1min" }\n'
                 '[[events]]\nat = "1d"\ntitrate = { target_daily_dose_ug = 900,'
                 ' step_pct = 95, every = "24h" }\n')
    assert [e.args for e in s.events] == [
        {"daily_dose_ng": 0}, {"dose_ng": 5_000_000, "duration_ms": 60_000},
        {"target_daily_dose_ng": 900_000, "step_pct": 95, "every_ms": 86_400_000}]


def test_every_error_is_reported_with_its_place():
    bad = """
duration_days = -3
colour = "blue"
seed = "x"
[pump]
stroke_nl = "big"
wheels = 4
[drug]
concentration_ug_per_ml = 600
fill_volume_ml = -1
[patient]
origin = "lumbar"
model = "nobody"
[prescription]
daily_dose_ml = 100
[[events]]
at = "tomorrow"
set_daily_dose_ug = 120
[[events]]
at = "1d"
set_daily_dose_ml = 1
[[events]]
at = "1d"
bolus = { dose_ug = "fifty", duration = "1min" }
[[events]]
at = "1d"
bolus = { dose_ug = -5, duration = "1min" }
[[events]]
at = "1d"
refill = { volume_ml = 20, concentration_ug_per_ml = 50 }
[[events]]
at = "1d"
launch_rocket = true
[[events]]
at = "1d"
power_cut = { duration = "2h", why = "storm" }
[[events]]
set_daily_dose_ug = 120
"""
    errs = errors_of(bad)
    text = "\n".join(errs)
    assert all(e.startswith("s.toml: ") for e in errs)
    expected = [
        "duration_days: must be a finite positive number",
        "colour: unknown key",
        "seed: must be a non-negative integer",
        "[pump] stroke_nl: must be a number",
        "[pump] wheels: unknown key",
        "[drug] concentration_ug_per_ml: 600 ug/mL is not in the pump's drug library",
        "[drug] fill_volume_ml: must be a finite non-negative number",
        "[patient] origin: 'lumbar' is not one of",
        "[patient] model: 'nobody' is not one of",
        "[prescription] daily_dose_ml: unit 'ml' is not listed for daily_dose_ng",
        "events[0] at: at 'tomorrow' is not a duration",
        "events[1] set_daily_dose_ml daily_dose_ml: unit 'ml' is not listed",
        "events[2] bolus dose_ug: dose_ug must be a number, got 'fifty'",
        "events[3] bolus dose_ug: dose_ug=-5 is negative",
        "events[4] refill concentration_ug_per_ml: 50 ug/mL is not in the pump's drug library",
        "events[5] launch_rocket: unknown event",
        "events[6] power_cut why: unknown argument",
        "events[7]: missing 'at'",
    ]
    for e in expected:
        assert e in text, (e, text)
    assert len(errs) == len(expected), text


def test_syntax_error_and_unreadable_file(tmp_path):
    errs = errors_of('name = "x\nduration_days = 1')
    assert len(errs) == 1 and "TOML syntax error" in errs[0]
    with pytest.raises(sc.ScenarioError) as e:
        sc.load(tmp_path / "missing.toml")
    assert "cannot read" in e.value.errors[0]


@pytest.mark.parametrize("event, message", [
    ('power_cut = { duration = "0s" }', "must be positive"),
    ('power_cut = "2h"', "expected a table"),
    ('rtc_invalid = false', "takes no arguments"),
    ('bolus_ug = 50', "give the arguments as a table"),
    ('stop_ug = 3', "takes no unit suffix"),
    ('set_daily_dose_ug = { daily_dose_ug = 3 }', "a unit suffix goes with a single value"),
    ('set_daily_dose_ug = 0.00001', "not a whole number"),
    ('stop = "mri"\nemergency_stop = true', "needs exactly one event key"),
    ('prepare = true', "unknown event"),
    ('catheter_error = { actual_length_cm = -1 }', "must be a finite non-negative number"),
    ('catheter_error = { actual_length_cm = inf }', "up to 200"),
    ('catheter_error = { actual_length_cm = nan }', "finite"),
    ('set_daily_dose_ug = "1e3"', "must be a number"),
    ('flex = { steps_ug = [["０0:00", 100]] }', "is not HH:MM"),
    ('bolus = { dose_ug = 20 }', 'missing argument duration (e.g. duration = "24h")'),
    ('refill = { concentration_ug_per_ml = 2000 }', "missing argument volume (e.g. volume_ml"),
    ('bolus = { dose_ug = 20, dose_ng = 3, duration = "1h" }', "given twice"),
])
def test_bad_event_forms(event, message):
    errs = errors_of(MINIMAL + f'[[events]]\nat = "1d"\n{event}\n')
    assert len(errs) == 1 and message in errs[0], errs


def test_event_after_the_end_and_half_screening():
    errs = errors_of(MINIMAL.replace("daily_dose_ug = 400", "daily_dose_ug = 400\n"
                                     "screening_dose_ug = 50")
                     + '[[events]]\nat = "3d"\nemergency_stop = true\n')
    assert any("go together (SR-10)" in e for e in errs)
    assert any("not before the end of the scenario" in e for e in errs)
    errs = errors_of(MINIMAL + '[[events]]\nat = "-1h"\nemergency_stop = true\n')
    assert len(errs) == 1 and "before the start" in errs[0]


@pytest.mark.parametrize("text, ms", [
    ("90s", 90_000), ("15min", 900_000), ("6h", 21_600_000), ("2d", 172_800_000),
    ("2d 6h", 194_400_000), ("1.5h", 5_400_000), ("250ms", 250), ("1d 2h 3min 4s", 93_784_000),
])
def test_durations(text, ms):
    assert units.duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "6", "h", "6 hours", "-2h", "2d-6h", "1.0001ms", "6h x"])
def test_bad_durations(text):
    with pytest.raises(units.UnitError):
        units.duration_ms(text)


def test_signed_duration_and_exact_amounts():
    assert units.duration_ms("-23h", signed=True) == -23 * 3_600_000
    assert units.canonical("refill", "volume_ml", 0.1) == ("volume_nl", 100_000)
    assert units.canonical("set_daily_dose", "daily_dose_ug", 0.1) == ("daily_dose_ng", 100)
    assert units.canonical("titrate", "every", "1d 12h") == ("every_ms", 129_600_000)
    for bad in (True, None, [1], "x", float("nan"), float("inf")):
        with pytest.raises(units.UnitError):
            units.exact(bad, 1000, "v")


@pytest.mark.parametrize("text, message", [
    (MINIMAL.replace("fill_volume_ml = 20", "fill_volume_ml = 25"), "does not fit the reservoir"),
    (MINIMAL + "max_daily_dose_ug = 500\ncap_24h_ug = 600\n", "given twice"),
    (MINIMAL + "max_daly_dose_ug = 5\n", "known: daily_dose_ug, max_daily_dose_ug"),
])
def test_prescription_and_fill_checks(text, message):
    """What cannot run is refused before the run: a fill larger than the reservoir,
    one cap given under two names (which would silently pick one), a typo (the
    message lists the keys as the README writes them)."""
    errs = errors_of(text)
    assert len(errs) == 1 and message in errs[0], errs


def test_a_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes("\ufeff".encode() + MINIMAL.encode())
    assert sc.load(path).duration_ms == 2 * 86_400_000


@pytest.mark.parametrize("text, message", [
    (MINIMAL.replace("[prescription]", "[pump]\nstroke_error_pct = inf\n[prescription]"),
     "stroke_error_pct: must be a finite"),
    (MINIMAL.replace("[prescription]", "[pump]\nstroke_error_pct = nan\n[prescription]"),
     "stroke_error_pct: must be a finite"),
    (MINIMAL.replace("[prescription]", "[pump]\nstroke_error_pct = 50\n[prescription]"),
     "up to 20"),
    (MINIMAL.replace("[prescription]", "[pump]\nbattery_life_days = inf\n[prescription]"),
     "battery_life_days: must be a finite"),
    (MINIMAL.replace("duration_days = 2", "duration_days = 1e308"), "up to 36500"),
    (MINIMAL + "max_daily_dose_ug = 0\n", "a cap of 0 would mean the SR-3 default"),
    (MINIMAL.replace("daily_dose_ug = 400", "daily_dose_ug = 100\ndaily_dose_mg = 0.5"),
     "given twice"),
    ("x = " + "[" * 600 + "]" * 600, "cannot read the TOML"),
    ("x = " + "9" * 5000, "cannot read the TOML"),
])
def test_attack_findings_are_refused_before_the_run(text, message):
    """Attack findings: non-finite or absurd pump-model numbers (which crashed or
    emptied the syringe in one stroke), a century-long run, a zero cap (the default
    in disguise), one amount in two units, TOML the parser cannot hold. (A zero
    screening dose is the controller's to refuse: tests/test_rules.py.)"""
    errs = errors_of(text)
    assert any(message in e for e in errs), errs
