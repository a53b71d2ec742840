"""Pure-function example tests: units.py, limits.py, therapy.py, fluidpath.py,
reservoir.py and commands.validate. Expected values are worked out by hand from
SAFETY_RULES.md in each test, never with the helper the code uses."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itb import (
    board_commands,
    commands,
    drugs,
    fluidpath,
    ledger,
    limits,
    reservoir,
    therapy,
    units,
)
from itb.commands import CommandError

HOUR = 3_600_000
DAY = 86_400_000
ML = 1_000_000


# ---------------------------------------------------------------- SR-1 units


@pytest.mark.sr("SR-1")
def test_sr1_unit_constants_and_exact_integer_conversions():
    assert units.DAY_MS == 24 * 60 * 60 * 1000
    assert units.NL_PER_ML == 10**6
    # 2 uL at 2000 ug/mL = 4 ug = 4_000_000 pg (1 nL at 1 ug/mL = 1 pg)
    assert units.mass_pg(2000, 2000) == 4_000_000
    # 1 nL at 500 ug/mL = 0.5 ng: up -> 1, down -> 0
    assert units.mass_ng_up(1, 500) == 1
    assert units.mass_ng_down(1, 500) == 0
    assert units.mass_ng_up(2000, 500) == 1000
    # 100 ug at 500 ug/mL = 0.2 mL; 1 ng at 2000 ug/mL = 0.5 nL -> 1 nL rounded up
    assert units.volume_nl_up(100_000, 500) == 200_000
    assert units.volume_nl_up(1, 2000) == 1
    assert units.ceil_div(7, 2) == 4
    assert units.ceil_div(-7, 2) == -3
    assert units.ceil_div(6, 3) == 2
    assert type(units.mass_ng_up(3, 1000)) is int


@pytest.mark.sr("SR-1")
@pytest.mark.parametrize("value", [1.0, True, "1", None, 2**70])
def test_sr1_check_int_refuses_non_int_and_out_of_range(value):
    with pytest.raises(ValueError):
        units.check_int("x", value, 0, 2**62)


@pytest.mark.sr("SR-1")
def test_sr1_check_int_bounds_inclusive():
    assert units.check_int("x", 0, 0, 10) == 0
    assert units.check_int("x", 10, 0, 10) == 10
    with pytest.raises(ValueError):
        units.check_int("x", -1, 0, 10)
    with pytest.raises(ValueError):
        units.check_int("x", 11, 0, 10)


@pytest.mark.sr("SR-1")
def test_sr1_records_are_range_checked_before_storing():
    ok = {"k": "cmd", "t": 5, "id": 1, "name": "stop", "ok": 1, "reason": None}
    assert ledger.check_record(ok) is ok
    for bad in (
        {"k": "cmd", "t": 2**62},  # outside the signed 63-bit range
        {"k": "cmd", "t": -(2**62) - 1},
        {"k": "cmd", "t": 1.5},  # a float never reaches a record
        {"k": "cmd", "name": "x" * 161},
        {"k": "cmd", "name": "caf\u00e9"},
        {"k": "nope", "t": 0},
    ):
        with pytest.raises(ValueError):
            ledger.check_record(bad)
    store = ledger.MemoryStore()
    with pytest.raises(ValueError):
        store.append({"k": "intent", "t": 2**63})
    assert store.count == 0


@pytest.mark.sr("SR-1")
def test_sr1_validate_dose_resolution_is_0_1_ug_per_day():
    assert commands.validate("set_daily_dose", {"daily_dose_ng": 100_100}) == {
        "daily_dose_ng": 100_100
    }
    with pytest.raises(CommandError) as e:
        commands.validate("set_daily_dose", {"daily_dose_ng": 100_050})
    assert e.value.reason == "OUT_OF_RANGE"


@pytest.mark.sr("SR-1", "SR-14")
@pytest.mark.parametrize("value", [100_000.0, True, "100000", None, [100_000]])
def test_sr1_validate_never_coerces(value):
    with pytest.raises(CommandError) as e:
        commands.validate("set_daily_dose", {"daily_dose_ng": value})
    assert e.value.reason == "BAD_ARGUMENT"


@pytest.mark.sr("SR-1", "SR-14")
def test_sr1_validate_unknown_missing_and_defaults():
    with pytest.raises(CommandError) as e:
        commands.validate("nope", {})
    assert e.value.reason == "UNKNOWN_COMMAND"
    with pytest.raises(CommandError) as e:
        commands.validate("set_daily_dose", {})
    assert e.value.reason == "BAD_ARGUMENT"
    with pytest.raises(CommandError) as e:
        commands.validate("set_daily_dose", {"daily_dose_ng": 100_000, "x": 1})
    assert e.value.reason == "BAD_ARGUMENT"
    out = commands.validate("program", {"daily_dose_ng": 100_000, "origin": "spinal"})
    assert out["cap_24h_ng"] == 0 and out["cap_1h_ng"] == 0
    assert out["start_rule"] == "us" and out["patient_bolus_ng"] == 0
    with pytest.raises(CommandError) as e:
        commands.validate("program", {"daily_dose_ng": 100_000, "origin": "lumbar"})
    assert e.value.reason == "OUT_OF_RANGE"
    with pytest.raises(CommandError) as e:
        commands.validate(
            "refill", {"aspirated_nl": -1, "volume_nl": 1, "concentration_ug_per_ml": 500}
        )
    assert e.value.reason == "OUT_OF_RANGE"


def test_board_commands_share_the_schema_but_not_the_controller_names():
    """Board commands (answered by the app, issue 6) are looked up like controller
    commands by spec/roles/params/is_two_phase, are never two-phase and never
    listed in NAMES (the controller's commands)."""
    assert commands.board_table() is board_commands.BOARD_COMMANDS
    assert set(commands.board_table()) == {"status", "log", "time_sync", "test_clock", "inject"}
    assert not set(commands.board_table()) & set(commands.COMMANDS)
    assert commands.NAMES == tuple(sorted(commands.COMMANDS))
    for name, entry in commands.board_table().items():
        roles, two_phase, params, doc = entry
        assert commands.spec(name) is entry
        assert commands.roles(name) == roles and roles and set(roles) <= set(commands.ROLES)
        assert commands.params(name) is params
        assert two_phase == 0 and commands.is_two_phase(name) is False
        assert doc
    assert commands.roles("status") == commands.ROLES
    assert commands.roles("log") == commands.roles("time_sync") == ("clinician", "service")
    assert commands.roles("test_clock") == commands.roles("inject") == ("service",)
    assert [p["name"] for p in commands.params("inject")] == ["fault", "count", "switch"]
    assert commands.spec("program") is commands.COMMANDS["program"]
    assert commands.is_two_phase("program") and not commands.is_two_phase("emergency_stop")
    with pytest.raises(KeyError):
        commands.spec("nope")


@pytest.mark.sr("SR-14")
@pytest.mark.parametrize("name, args, want", [
    ("status", {}, {}),
    ("log", {}, {"from_seq": 0}),
    ("log", {"from_seq": 1 << 62}, {"from_seq": 1 << 62}),
    ("time_sync", {"utc_ms": 0}, {"utc_ms": 0}),
    ("time_sync", {"utc_ms": board_commands.UTC_MAX_MS}, {"utc_ms": board_commands.UTC_MAX_MS}),
    ("test_clock", {"mode": "stepped"}, {"mode": "stepped", "factor": 1, "advance_ms": 0}),
    ("test_clock", {"mode": "accelerated", "factor": 100000},
     {"mode": "accelerated", "factor": 100000, "advance_ms": 0}),
    ("test_clock", {"mode": "real", "advance_ms": 400 * DAY},
     {"mode": "real", "factor": 1, "advance_ms": 400 * DAY}),
    ("inject", {}, {"fault": "ok", "count": 0, "switch": 2}),
    ("inject", {"fault": "unknown", "count": 100000, "switch": 0},
     {"fault": "unknown", "count": 100000, "switch": 0}),
])
def test_board_command_arguments_and_defaults(name, args, want):
    assert commands.validate(name, args) == want


@pytest.mark.sr("SR-14")
@pytest.mark.parametrize("name, args, reason", [
    ("status", {"x": 1}, "BAD_ARGUMENT"),
    ("status", [], "BAD_ARGUMENT"),
    ("log", {"from_seq": -1}, "OUT_OF_RANGE"),
    ("log", {"from_seq": (1 << 62) + 1}, "OUT_OF_RANGE"),
    ("log", {"from_seq": "1"}, "BAD_ARGUMENT"),
    ("time_sync", {}, "BAD_ARGUMENT"),
    ("time_sync", {"utc_ms": board_commands.UTC_MAX_MS + 1}, "OUT_OF_RANGE"),
    ("time_sync", {"utc_ms": True}, "BAD_ARGUMENT"),
    ("time_sync", {"utc_ms": 1.0}, "BAD_ARGUMENT"),
    ("test_clock", {}, "BAD_ARGUMENT"),
    ("test_clock", {"mode": "fast"}, "OUT_OF_RANGE"),
    ("test_clock", {"mode": "real", "factor": 0}, "OUT_OF_RANGE"),
    ("test_clock", {"mode": "real", "advance_ms": 400 * DAY + 1}, "OUT_OF_RANGE"),
    ("inject", {"fault": "fire"}, "OUT_OF_RANGE"),
    ("inject", {"switch": 3}, "OUT_OF_RANGE"),
    ("inject", {"count": -1}, "OUT_OF_RANGE"),
    ("inject", {"fault": 1}, "BAD_ARGUMENT"),
])
def test_board_command_arguments_are_refused_never_clamped(name, args, reason):
    with pytest.raises(CommandError) as e:
        commands.validate(name, args)
    assert e.value.reason == reason and e.value.message


@pytest.mark.sr("SR-14")
@pytest.mark.parametrize("name, shown", [
    (None, "<NoneType>"), (1, "1"), (b"status", "<bytes>"), (["status"], "<list>"),
    ({"status": 1}, "<dict>"), (("status",), "<tuple>"), ("Status", "'Status'"),
    ("", "''"), ("st\u00e4tus", "'st\\u00e4tus'"),
])
def test_a_command_name_that_is_not_a_known_string_is_unknown(name, shown):
    """The name comes from a peer's JSON: any type, never looked up unless it is a
    string (an unhashable list must not raise TypeError); the message quotes it
    as printable ASCII."""
    with pytest.raises(CommandError) as e:
        commands.validate(name, {})
    assert e.value.reason == "UNKNOWN_COMMAND"
    assert e.value.message == "unknown command " + shown


@pytest.mark.sr("SR-2")
def test_sr2_hard_limits_are_not_command_parameters():
    # a command cannot carry a hard limit: the schema has no such parameter
    for name in commands.NAMES:
        for p in commands.params(name):
            assert p["name"] not in [f[0] for f in drugs.CONFIG_FIELDS], (name, p["name"])
    with pytest.raises(CommandError) as e:
        commands.validate(
            "program",
            {"daily_dose_ng": 100_000, "origin": "spinal", "max_daily_dose_ng": 9_000_000},
        )
    assert e.value.reason == "BAD_ARGUMENT"


@pytest.mark.sr("SR-2")
def test_sr2_drug_library_and_device_defaults():
    assert drugs.PUMP_CONCENTRATIONS_UG_PER_ML == (500, 1000, 2000)
    for c in (500, 1000, 2000):
        assert drugs.is_pump_concentration(c)
    for c in (50, 0, 750, 2001, 5000):
        assert not drugs.is_pump_concentration(c)
    cfg = drugs.DeviceConfig()
    assert cfg.max_daily_dose_ng == 2000 * 1000
    assert cfg.max_bolus_ng == 100 * 1000
    assert cfg.max_rate_nl_per_min == 1 * ML
    assert cfg.min_rate_nl_per_day == 20 * 1000
    # 2 uL stroke at 1 mL/min: 0.12 s between strokes
    assert cfg.min_stroke_interval_ms == 120
    with pytest.raises(ValueError):
        drugs.DeviceConfig({"max_daily_dose_ng": 10_000_001})
    with pytest.raises(ValueError):
        drugs.DeviceConfig({"no_such_field": 1})


@pytest.mark.sr("SR-8", "SR-9", "SR-19", "SR-22")
def test_sr8_config_defaults_match_rules():
    cfg = drugs.DeviceConfig()
    assert (cfg.up_pct("spinal"), cfg.up_pct("cerebral"), cfg.up_pct("paediatric")) == (30, 15, 15)
    assert cfg.taper_down_pct == 20
    assert cfg.settle_ms == HOUR
    assert cfg.low_reservoir_nl == 4 * ML and cfg.low_reservoir_days == 5
    assert cfg.confirm_window_ms == 60_000
    assert cfg.tubing_nl == 140_000


# ---------------------------------------------------------------- SR-22


@pytest.mark.sr("SR-22")
def test_sr22_dead_volume_tubing_plus_catheter():
    # 0.0026 mL/cm: 90 cm -> 0.234 mL, plus 0.140 mL tubing
    assert units.dead_volume_nl(140_000, 900) == 374_000
    assert units.dead_volume_nl(140_000, 0) == 140_000
    assert units.dead_volume_nl(0, 10) == 2_600  # 1 cm = 2.6 uL
    assert units.dead_volume_nl(140_000, 1100) == 140_000 + 286_000  # 110 cm
    assert units.TUBING_NL_DEFAULT == 140_000  # never the recalled 0.199 mL
    cfg = drugs.DeviceConfig({"catheter_length_mm": 700})
    assert cfg.dead_volume_nl == 140_000 + 70 * 2_600


# ---------------------------------------------------------------- SR-3


@pytest.mark.sr("SR-3")
def test_sr3_default_caps_by_hand():
    # 100 ug/day, 1 ug strokes (500 ug/mL), max bolus 100 ug, hard max 2000 ug/day
    # 24 h: 2 x 100 + 100 = 300 ug; 1 h: 100 strokes + ceil(4166.7 ng / 1000) = 5 -> 105 ug
    assert limits.default_caps(100_000, 100_000, 1000, 100_000, 2_000_000) == [300_000, 105_000]
    # 4 ug strokes (2000 ug/mL): 25 + ceil(4167/4000)=2 strokes -> 27 x 4 ug
    assert limits.default_caps(100_000, 100_000, 4000, 100_000, 2_000_000) == [300_000, 108_000]
    # bounded by the hard maximum: 2 x 1000 + 100 = 2100 -> 2000
    assert limits.default_caps(1_000_000, 1_000_000, 1000, 100_000, 2_000_000)[0] == 2_000_000
    # the 1 h cap uses the highest flex-step rate: 240 ug/day -> 10 ug/h
    assert limits.default_caps(100_000, 240_000, 1000, 100_000, 2_000_000)[1] == 110_000


# ---------------------------------------------------------------- SR-4/5 windows


@pytest.mark.sr("SR-4", "SR-5")
def test_sr5_window_log_is_half_open():
    w = limits.WindowLog()
    w.add(1000, 7)
    assert w.sums(1000) == [7, 7]
    w.add(1000 + HOUR - 1, 5)
    # (t - 1 h, t]: the event at 1000 leaves the 1 h window at exactly 1000 + 1 h
    assert w.sums(1000 + HOUR - 1) == [12, 12]
    assert w.sums(1000 + HOUR) == [12, 5]
    assert w.sums(1000 + DAY - 1) == [12, 0]
    assert w.sums(1000 + DAY) == [5, 0]
    assert w.sums(1000 + DAY + HOUR - 1) == [0, 0]


def _log(events):
    w = limits.WindowLog()
    for t, m in events:
        w.add(t, m)
    return w


@pytest.mark.sr("SR-6")
def test_sr6_max_window_sum_by_hand():
    w = _log([(0, 5), (HOUR, 3), (HOUR + 1, 4), (2 * HOUR, 1)])
    # from start 0: windows (p - 1 h, p]; p = 1 h + 1 holds 3 + 4 (0 is out at p = 1 h)
    assert w.max_sum(0, HOUR) == 7
    assert w.max_sum(0, HOUR + 1) == 8  # (0, 1h+1] still excludes 0 -> 3+4+1
    assert w.max_sum(0, HOUR + 2) == 12  # (-1, 1h+1] includes t=0
    assert w.max_sum(0, DAY) == 13
    assert _log([]).max_sum(0, DAY) == 0


@pytest.mark.sr("SR-6")
@given(
    st.lists(st.tuples(st.integers(0, 60), st.integers(1, 9)), max_size=12),
    st.integers(0, 70),
    st.integers(1, 25),
)
def test_sr6_max_sum_is_the_largest_half_open_window_from_start(events, start, window):
    """SR-6: the mass already counted, checked against a new cap, is the largest
    sum over every half-open window (p - W, p] with p from ``start`` on; brute
    force over every integer position p up to the last event + W."""
    events.sort()
    last = max([t for t, _ in events] + [start])
    expected = max(
        sum(m for t, m in events if p - window < t <= p) for p in range(start, last + window + 1)
    )
    assert _log(events).max_sum(start, window) == expected


# ---------------------------------------------------------------- SR-8/9/11 history


def _hist(*segs):
    h = limits.BasalHistory()
    for t, d, k in segs:
        h.record(t, d, k)
    return h


R, INT = limits.RUNNING, limits.INTERRUPTED


@pytest.mark.sr("SR-8")
def test_sr8_lowest_dose_window_edge():
    h = _hist((0, 100_000, R), (2 * DAY, 130_000, R))
    # 100 is in effect until exactly 2 d: out of (t - 24 h, t] at t = 3 d, in at 3 d - 1
    assert h.lowest_dose(3 * DAY) == 130_000
    assert h.lowest_dose(3 * DAY - 1) == 100_000


@pytest.mark.sr("SR-8")
def test_sr8_lowest_dose_excludes_interruptions():
    h = _hist((0, 100_000, R), (DAY, 0, INT), (DAY + HOUR, 100_000, R))
    assert h.lowest_dose(DAY + 2 * HOUR) == 100_000


@pytest.mark.sr("SR-8")
def test_sr8_up_cap_by_hand():
    assert limits.up_cap_ok(130_000, 100_000, 30)
    assert not limits.up_cap_ok(130_001, 100_000, 30)
    assert limits.up_cap_ok(115_000, 100_000, 15)
    assert not limits.up_cap_ok(115_100, 100_000, 15)
    assert limits.up_cap_max(100_000, 30) == 130_000
    # 123.4 x 1.15 = 141.91 -> 141.9 ug/day (0.1 ug/day resolution, rounded down)
    assert limits.up_cap_max(123_400, 15) == 141_900


@pytest.mark.sr("SR-9")
def test_sr9_down_cap_by_hand():
    assert limits.down_cap_ok(80_000, 100_000, 20)
    assert not limits.down_cap_ok(79_999, 100_000, 20)
    assert limits.down_cap_min(100_000, 20) == 80_000
    # 123.4 x 0.8 = 98.72 -> 98.8 ug/day (rounded up)
    assert limits.down_cap_min(123_400, 20) == 98_800


@pytest.mark.sr("SR-9")
def test_sr9_highest_settled_needs_the_settle_time_and_skips_pre_interruption():
    h = _hist((0, 100_000, R), (DAY, 130_000, R))
    assert h.highest_settled(DAY + HOUR - 1, HOUR) == 100_000  # 130 not yet settled
    assert h.highest_settled(DAY + HOUR, HOUR) == 130_000
    h2 = _hist((0, 200_000, R), (DAY, 0, INT), (DAY + HOUR, 100_000, R))
    assert h2.highest_settled(DAY + HOUR + 30 * 60_000, HOUR) is None
    assert h2.highest_settled(DAY + 2 * HOUR, HOUR) == 100_000


@pytest.mark.sr("SR-9")
def test_sr9_settled_within_the_window():
    # 100 until 2 d, then 80: at t the 100 is in (t - 24 h, t] for 2 d - (t - 24 h)
    h = _hist((0, 100_000, R), (2 * DAY, 80_000, R))
    t = 3 * DAY - HOUR  # exactly 1 h of the 100 inside the window
    assert h.highest_settled(t, HOUR) == 100_000
    assert h.highest_settled(t + 1, HOUR) == 80_000


@pytest.mark.sr("SR-11")
def test_sr11_last_settled_before():
    h = _hist((0, 100_000, R), (DAY, 130_000, R), (DAY + 10 * 60_000, 0, INT))
    # 130 lasted 10 min: not settled -> the 100 before it
    assert h.last_settled_before(DAY + 10 * 60_000, HOUR) == 100_000
    h2 = _hist((0, 100_000, R), (DAY, 0, INT))
    assert h2.last_settled_before(DAY, HOUR) == 100_000


@pytest.mark.sr("SR-10")
def test_sr10_start_limit_by_hand():
    assert limits.start_limit_ng(50_000, 6 * HOUR, "us") == 100_000
    assert limits.start_limit_ng(50_000, 8 * HOUR, "us") == 100_000  # not longer than 8 h
    assert limits.start_limit_ng(50_000, 8 * HOUR + 1, "us") == 50_000
    assert limits.start_limit_ng(50_000, 10 * HOUR, "us") == 50_000
    assert limits.start_limit_ng(50_000, 10 * HOUR, "eu") == 100_000
    assert limits.start_limit_ng(50_000, 12 * HOUR, "eu") == 100_000
    assert limits.start_limit_ng(50_000, 12 * HOUR + 1, "eu") == 50_000


@pytest.mark.sr("SR-11")
def test_sr11_restart_percent_edges():
    assert limits.restart_pct(0) == 100
    assert limits.restart_pct(4 * HOUR) == 100
    assert limits.restart_pct(4 * HOUR + 1) == 75
    assert limits.restart_pct(DAY - 1) == 75
    assert limits.restart_pct(DAY) == 50
    assert limits.restart_pct(48 * HOUR + 1) == 50
    assert limits.restart_pct(None) == 50


# ---------------------------------------------------------------- SR-13/24 therapy


@pytest.mark.sr("SR-13")
def test_sr13_plan_doses_by_hand():
    # titrate 100 -> 200 at 30 %: 130, 169, then the target (219.7 would overshoot)
    assert therapy.plan_doses(100_000, 200_000, 30, True) == [130_000, 169_000, 200_000]
    # taper 100 -> 50 at 15 %: 85, 72.25, 61.4125 -> 61413 (toward previous = up),
    # 52.20105 -> 52202, then 50
    assert therapy.plan_doses(100_000, 50_000, 15, False) == [
        85_000,
        72_250,
        61_413,
        52_202,
        50_000,
    ]
    # titrate 100 -> 120 at 15 %: 115 then target
    assert therapy.plan_doses(100_000, 120_000, 15, True) == [115_000, 120_000]
    # 3 ng/day x 1.10 = 3.3 -> 3 (rounded toward previous): no progress
    with pytest.raises(ValueError):
        therapy.plan_doses(3, 10, 10, True)
    with pytest.raises(ValueError):
        therapy.plan_doses(100_000, 90_000, 10, True)
    with pytest.raises(ValueError):
        therapy.plan_doses(100_000, 110_000, 10, False)


@pytest.mark.sr("SR-24")
def test_sr24_flex_daily_dose_and_fallback():
    steps = [[0, 50_000], [720, 150_000]]
    assert therapy.daily_dose_up(steps) == 100_000
    assert therapy.rate_at(steps, 0) == 50_000
    assert therapy.rate_at(steps, 719) == 50_000
    assert therapy.rate_at(steps, 720) == 150_000
    assert therapy.rate_at(steps, None) == 100_000  # local time unknown: 24 h average
    odd = [[0, 100], [1, 0]]  # 100 ng/day for 1 min of 1440
    assert therapy.daily_dose_up(odd) == 1 and therapy.daily_dose_down(odd) == 0
    assert therapy.peak_rate(steps) == 150_000
    assert therapy.next_boundary_min(steps, 700) == 20
    assert therapy.next_boundary_min(steps, 720) == 720


@pytest.mark.sr("SR-24")
def test_sr24_validate_flex_steps():
    good = [[0, 50_000], [720, 150_000]]
    assert commands.validate("flex", {"steps": good}) == {"steps": good}
    for bad in (
        [[1, 50_000]],
        [[0, 1], [720, 2]],
        [[0, 100], [0, 200]],
        [[0, 100], [1440, 200]],
        [[0, 100]] * 14,
        [],
    ):
        with pytest.raises(CommandError):
            commands.validate("flex", {"steps": bad})


# ---------------------------------------------------------------- SR-21 fluid path


@pytest.mark.sr("SR-21")
def test_sr21_fifo_tip_concentration_and_push():
    p = fluidpath.FluidPath(10_000, 500)
    assert p.band_nl == 2_000
    assert p.tip_concentration(2000) == 500
    m, hi, lo = p.push(2000, 2000)  # interface 8000 nL from the tip: outside the band
    assert m == 2000 * 500 and (hi, lo) == (500, 500)
    for _ in range(3):
        p.push(2000, 2000)
    # 2000 nL of old fluid left; next push empties it: the tip is the new fluid
    m, hi, lo = p.push(2000, 2000)
    assert m == 2000 * 500
    assert hi == 2000 and lo == 500
    assert p.tip_concentration(2000) == 2000
    # saline at the tip is skipped for the drug behind it
    s = fluidpath.FluidPath(10_000, 0)
    s.push(2000, 1000)
    assert s.tip_concentration(1000) == 1000
    assert s.drug_front_nl() == 2000


@pytest.mark.sr("SR-4", "SR-21")
def test_sr21_uncertainty_band_is_20_percent_of_dead_volume():
    dead = 100_000  # band 20 000 nL
    p = fluidpath.FluidPath(dead, 500)
    out = [p.push(1000, 2000) for _ in range(130)]
    # stroke k leaves 100 000 - 1000 k of old fluid ahead; uncertain (hi = new) when
    # that is below 20 000 -> k >= 81; the new fluid reaches the tip at k = 101
    his = [o[1] for o in out]
    assert his[79] == 500 and his[80] == 2000
    masses = [o[0] for o in out]
    assert masses[99] == 1000 * 500 and masses[100] == 1000 * 2000
    # behind: before stroke k, 1000 (k - 101) nL of new fluid has left the tip; the old
    # fluid is within the band (lo = 500) while that is below 20 000 -> k <= 120
    los = [o[2] for o in out]
    assert los[119] == 500 and los[120] == 2000


# ---------------------------------------------------------------- SR-19/20 reservoir


@pytest.mark.sr("SR-19")
def test_sr19_pessimistic_and_optimistic_bounds():
    r = reservoir.Reservoir(145)
    r.refill(0, 20 * ML, 500, 0)
    r.delivered_nl = 10 * ML
    assert r.remaining_nl() == 10 * ML
    assert r.pessimistic_nl() == 10 * ML - 1_450_000
    assert r.optimistic_nl() == 10 * ML + 1_450_000
    r.delivered_nl = 3  # 3 x 0.145 = 0.435 -> rounded outward to 1
    assert r.pessimistic_nl() == 20 * ML - 4 and r.optimistic_nl() == 20 * ML - 2


@pytest.mark.sr("SR-19")
def test_sr19_levels_and_can_deliver():
    r = reservoir.Reservoir(100)
    r.refill(0, 20 * ML, 500, 0)
    # R_p = 20 - 1.1 V; 4 mL at V = 16/1.1 = 14.545 mL
    # (tol x V rounded up: 14 545 453 + 1 454 546 = 15 999 999 -> R_p = 4.000001 mL)
    r.delivered_nl = 14_545_453
    assert r.levels(500_000, 4 * ML, 5) == (False, False)
    r.delivered_nl = 14_545_454  # + 1 454 546 = 16 mL -> R_p = 4 mL exactly
    assert r.levels(500_000, 4 * ML, 5) == (True, False)
    # days rule: R_p <= 5 days x planned (2 mL/day -> 10 mL) at V = 10/1.1 = 9.0909 mL
    r.delivered_nl = 9_090_908  # + 909 091 = 9 999 999
    assert r.levels(2 * ML, 4 * ML, 5)[0] is False
    r.delivered_nl = 9_090_909  # + 909 091 = 10 mL
    assert r.levels(2 * ML, 4 * ML, 5)[0] is True
    # empty soon at R_p <= 0: V = 20/1.1 = 18.1818 mL
    r.delivered_nl = 18_181_817  # + 1 818 182 = 19 999 999
    assert r.levels(500_000, 4 * ML, 5)[1] is False
    r.delivered_nl = 18_181_818  # + 1 818 182 = 20 mL
    assert r.levels(500_000, 4 * ML, 5)[1] is True
    # delivery goes on while R_o > 0: 20 - 0.9 V > 0 -> V < 22.222 mL
    assert r.can_deliver()
    r.delivered_nl = 22_222_222  # R_o = 20 - 22.222222 + 2.222223 = 1 nL
    assert r.can_deliver()
    r.delivered_nl = 22_222_223
    assert not r.can_deliver()
    r.delivered_nl = 0
    r.switch = 1
    assert not r.can_deliver()


@pytest.mark.sr("SR-20")
def test_sr20_refill_discrepancy_edges():
    def run(delivered, aspirated, fill=20 * ML):
        r = reservoir.Reservoir(145)
        r.refill(0, fill, 500, 0)
        r.delivered_nl = delivered
        return r.refill(aspirated, 20 * ML, 500, 0)

    # V = 15 mL: limit max(2.175, 0.5) mL; removed = 20 - aspirated
    assert run(15 * ML, 2_825_000)[:2] == (2_175_000, False)  # removed 17.175
    assert run(15 * ML, 2_824_999)[:2] == (2_175_001, True)
    assert run(15 * ML, 7_175_000)[:2] == (2_175_000, False)  # removed 12.825
    assert run(15 * ML, 7_175_001)[:2] == (2_175_001, True)
    # small V: the 0.5 mL floor applies (14.5 % of 1 mL is only 0.145 mL)
    assert run(1 * ML, 18_500_000)[:2] == (500_000, False)
    assert run(1 * ML, 18_499_999)[:2] == (500_001, True)
    # a partial refill is not reconciled; it keeps what was not aspirated
    r = reservoir.Reservoir(145)
    r.refill(0, 20 * ML, 500, 0)
    r.delivered_nl = 5 * ML
    disc, flagged, discarded = r.refill(1 * ML, 3 * ML, 500, 1)
    assert (disc, flagged, discarded) == (0, False, 1 * ML)
    assert r.remaining_nl() == 15 * ML - 1 * ML + 3 * ML
    assert r.delivered_nl == 0


@pytest.mark.sr("SR-19")
def test_sr19_days_to_uses_pessimistic_rate():
    r = reservoir.Reservoir(100)
    r.refill(0, 20 * ML, 500, 0)
    # R_p falls 0.55 mL/day at 0.5 mL/day planned; 16 mL to 4 mL -> 29.0909 d
    t = r.days_to(4 * ML, 500_000)
    assert abs(t - 16 / 0.55 * DAY) <= 1
    assert r.days_to(4 * ML, 0) == -1


@pytest.mark.sr("SR-14")
def test_sr14_shown_quotes_peer_values_in_ascii_the_same_everywhere():
    """A peer's value in a refusal message is printable ASCII, bounded, and does not
    depend on the interpreter's repr (MicroPython writes '\\xe9' where CPython
    writes 'é': the MicroPython differential found it in an example trace)."""
    assert commands.shown("prime") == "'prime'"
    assert commands.shown("\u00e9") == "'\\u00e9'"
    assert commands.shown("a'b\\") == "'a\\u0027b\\u005c'"
    assert commands.shown("\U0001f600") == "'\\U0001f600'"
    assert commands.shown("x" * 61) == "'" + "x" * 60 + "...'"
    assert commands.shown(7) == "7"
    assert commands.shown(True) == "<bool>" and commands.shown([1]) == "<list>"
    assert all(32 <= ord(c) < 127 for c in commands.shown("\x00\u2028\ud7ff"))
