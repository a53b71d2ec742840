"""The Pico adapter (``firmware/board/rp2.py``) on the host, with recording fakes of
``machine`` and ``rp2`` (``tests/fakes``): what it does to pins, PWM, I2C, PIO and
the watchdog. The PIO step program runs in the fake's interpreter, so step counts
are counted as STEP edges, not taken from the adapter. What needs a bench is listed
in the README ("What must be measured on a real board")."""

import asyncio
import datetime
import importlib
import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

FAKES = Path(__file__).resolve().parent / "fakes"
FAKE_MODULES = ("machine", "rp2", "micropython", "devices")
BOARD_MODULES = ("board.rp2", "board.pio_step", "board.pins", "app")
DS3231_ADDR = 0x68


class FakeTime:
    """MicroPython's ``time`` tick functions on a virtual millisecond clock that
    moves only when slept on (a stuck burst then times out at once)."""

    def __init__(self):
        self.ms = 1 << 29  # half way to the RP2040 wrap

    def ticks_ms(self):
        return self.ms & ((1 << 30) - 1)

    def ticks_diff(self, a, b):
        return ((a - b + (1 << 29)) & ((1 << 30) - 1)) - (1 << 29)

    def sleep_ms(self, ms):
        self.ms += ms

    def sleep_us(self, us):
        self.ms += us // 1000


@pytest.fixture
def hw(monkeypatch, tmp_path):
    """The fakes imported fresh, the adapter imported against them, a fake clock,
    flash paths under ``tmp_path``. Yields a namespace of modules."""
    monkeypatch.syspath_prepend(str(FAKES))
    for name in FAKE_MODULES + BOARD_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    machine = importlib.import_module("machine")
    rp2 = importlib.import_module("rp2")
    devices = importlib.import_module("devices")
    micropython = importlib.import_module("micropython")
    board = importlib.import_module("board.rp2")
    pins = importlib.import_module("board.pins")
    machine.reset_state()
    clock = FakeTime()
    monkeypatch.setattr(board, "time", clock)
    monkeypatch.setattr(board, "DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "flash").mkdir()
    monkeypatch.setattr(board, "FLASH_ROOT", str(tmp_path / "flash"))
    monkeypatch.setattr(board, "MAINTENANCE_FLAG", str(tmp_path / "maintenance"))
    ns = type("HW", (), {})()
    ns.machine, ns.rp2, ns.devices, ns.board, ns.pins, ns.clock = (
        machine, rp2, devices, board, pins, clock)
    ns.micropython = micropython
    ns.tmp = tmp_path
    yield ns
    for name in FAKE_MODULES + BOARD_MODULES:  # the next test imports its own
        sys.modules.pop(name, None)


class Load:
    """The load cell's force (HX711 counts): ``base`` plus ``per_step`` for each
    step made so far (the plunger pushing fluid through the catheter)."""

    def __init__(self, hw, per_step=2, base=1000):
        self.base = base
        self.per_step = per_step
        self.steps = 0
        hw.machine.listen(hw.pins.STEP, self.edge)
        self.dev = hw.devices.HX711(hw.pins.HX711_DOUT, hw.pins.HX711_SCK, self.value)

    def edge(self, pin, level):
        if level:
            self.steps += 1

    def value(self):
        return self.base + self.per_step * self.steps


def make_pico(hw, per_step=2, **settings):
    rtc = hw.devices.DS3231()
    hw.machine.DEVICES[DS3231_ADDR] = rtc
    load = Load(hw, per_step)
    pico = hw.board.Pico(settings)
    pico.rtc_dev = rtc
    pico.load = load
    return pico


def expected_steps(volume_nl, steps_per_ml):
    # independent of the adapter's integer form: nearest whole step
    return round(volume_nl * steps_per_ml / 1e6)


def step_edges(hw):
    return hw.machine.PINS[hw.pins.STEP]


# ---------------------------------------------------------------------- strokes
@pytest.mark.sr("SR-4")
@pytest.mark.parametrize("volume_nl", [2000, 1000, 5000])
def test_a_stroke_makes_its_steps_with_the_driver_enabled_only_during_the_burst(hw, volume_nl):
    """One stroke = one count-bounded burst of ``volume * steps_per_ml`` STEP pulses,
    DIR set to dispense, EN (active low) asserted at every pulse and released after."""
    pico = make_pico(hw)
    seen = []
    hw.machine.listen(hw.pins.STEP, lambda pin, level: level and seen.append(
        (hw.machine.PINS[hw.pins.EN_N].level, hw.machine.PINS[hw.pins.DIR].level)))
    assert hw.machine.PINS[hw.pins.EN_N].level == 1  # off from the first instruction
    assert pico.stroke(1, volume_nl, 0) == "ok"
    n = expected_steps(volume_nl, hw.board.STEPS_PER_ML)
    assert len(seen) == n == pico.load.steps
    assert set(seen) == {(hw.pins.EN_N_ACTIVE, 1)}
    assert hw.machine.PINS[hw.pins.EN_N].level == 1 - hw.pins.EN_N_ACTIVE
    assert hw.machine.PINS[hw.pins.STEP].level == 0
    assert pico.last_stroke["made"] == n


@pytest.mark.sr("SR-4")
def test_a_driver_fault_stops_the_burst_early_and_reports_a_stall(hw):
    pico = make_pico(hw)
    stop_at = 100

    def fault(pin, level):
        if level and pico.load.steps >= stop_at:
            hw.machine.drive(hw.pins.DIAG, 1)

    hw.machine.listen(hw.pins.STEP, fault)
    assert pico.stroke(1, 2000, 0) == "stall"
    assert pico.load.steps == stop_at
    assert pico.last_stroke["made"] == stop_at
    assert hw.machine.PINS[hw.pins.EN_N].level == 1 - hw.pins.EN_N_ACTIVE


@pytest.mark.sr("SR-4")
@pytest.mark.parametrize("per_step, outcome", [(0, "stall"), (1000, "occlusion"), (2, "ok")])
def test_the_load_cell_confirms_the_stroke(hw, per_step, outcome):
    """No force rise: the plunger did not move (``stall``, the driver cannot see it at
    2 uL); a rise past the occlusion threshold: ``occlusion``; in between: ``ok``."""
    pico = make_pico(hw, per_step=per_step)
    assert pico.stroke(1, 2000, 0) == outcome
    rise = pico.last_stroke["peak"] - pico.last_stroke["base"]
    assert rise == per_step * expected_steps(2000, hw.board.STEPS_PER_ML)


@pytest.mark.sr("SR-4", "SR-26")
def test_no_sensor_reading_is_an_unknown_outcome_and_the_stroke_still_moves(hw):
    pico = make_pico(hw)
    pico.load.dev.kill()
    assert pico.stroke(1, 2000, 0) == "unknown"
    assert pico.load.steps == expected_steps(2000, hw.board.STEPS_PER_ML)
    assert hw.machine.PINS[hw.pins.EN_N].level == 1 - hw.pins.EN_N_ACTIVE


@pytest.mark.sr("SR-4", "SR-26")
def test_a_stuck_burst_is_aborted_on_time_and_the_next_stroke_works(hw):
    pico = make_pico(hw)
    sm = hw.rp2.MACHINES[0]
    sm.hang = True
    t0 = hw.clock.ms
    assert pico.stroke(1, 2000, 0) == "unknown"
    limit = expected_steps(2000, hw.board.STEPS_PER_ML) * 1000 // hw.board.STEP_HZ
    assert limit < hw.clock.ms - t0 <= limit + hw.board.STROKE_MARGIN_MS + 400
    assert "set(pins, 0)" in sm.executed
    assert hw.machine.PINS[hw.pins.EN_N].level == 1 - hw.pins.EN_N_ACTIVE
    sm.hang = False
    sm.tx.clear()
    assert pico.stroke(2, 2000, 0) == "ok"


@pytest.mark.parametrize("volume_nl", [0, 1, 10**9])
def test_a_stroke_outside_the_step_range_moves_nothing(hw, volume_nl):
    pico = make_pico(hw)
    assert pico.stroke(1, volume_nl, 0) == "unknown"
    assert pico.load.steps == 0
    assert not [e for e in hw.machine.LOG if e[0] == "sm_put"]


def test_an_exception_during_a_stroke_still_releases_the_driver(hw, monkeypatch):
    pico = make_pico(hw)

    def broken(steps):
        raise RuntimeError("PIO gone")

    monkeypatch.setattr(pico.burst, "start", broken)
    with pytest.raises(RuntimeError):
        pico.stroke(1, 2000, 0)
    assert hw.machine.PINS[hw.pins.EN_N].level == 1 - hw.pins.EN_N_ACTIVE


def test_steps_made_from_the_pio_word():
    from board import pio_step

    assert pio_step.steps_made(712, 0xFFFFFFFF) == 712
    assert pio_step.steps_made(712, 711) == 0
    assert pio_step.steps_made(712, 611) == 100


# ---------------------------------------------------------------------- watchdog
@pytest.mark.sr("SR-27")
@pytest.mark.parametrize("timeout_ms", [8389, 10000, 0, -1, "8000"])
def test_a_watchdog_timeout_outside_the_rp2040_range_is_refused(hw, timeout_ms):
    pico = make_pico(hw)
    with pytest.raises(ValueError, match="8388"):
        pico.watchdog(timeout_ms)
    assert not [e for e in hw.machine.LOG if e[0] == "wdt_start"]


@pytest.mark.sr("SR-27")
def test_each_feed_toggles_the_fail_safe_heartbeat(hw):
    pico = make_pico(hw)
    wdt = pico.watchdog(8388)
    beat = hw.machine.PINS[hw.pins.HEARTBEAT]
    levels = []
    for _ in range(4):
        wdt.feed()
        levels.append(beat.level)
    assert levels == [1, 0, 1, 0]
    assert [e for e in hw.machine.LOG if e[0] == "wdt_start"] == [("wdt_start", 8388)]
    assert len([e for e in hw.machine.LOG if e == ("wdt_feed",)]) == 4


def _app(hw, monkeypatch, watchdog_ms=400):
    from app import App

    pico = make_pico(hw)
    pico.mount()
    monkeypatch.setattr(pico, "WATCHDOG_MS", watchdog_ms, raising=False)
    return App(pico), pico


@pytest.mark.sr("SR-27")
def test_the_watchdog_is_fed_only_while_the_tasks_check_in(hw, monkeypatch):
    """The health task feeds (and beats the heartbeat) while the runner and server
    tasks have checked in; once one of them falls silent, neither happens."""
    app, pico = _app(hw, monkeypatch)

    async def run(healthy, seconds):
        task = asyncio.ensure_future(app.health_task())
        end = asyncio.get_event_loop().time() + seconds
        while asyncio.get_event_loop().time() < end:
            if healthy:
                for k in app.beat:
                    app.beat[k] = app.clock.real.read()
            await asyncio.sleep(0.02)
        task.cancel()

    hw.clock.ms += 1  # the therapy clock reads ticks: keep them moving
    asyncio.run(run(True, 0.35))
    feeds = [e for e in hw.machine.LOG if e == ("wdt_feed",)]
    assert len(feeds) >= 2
    beat = hw.machine.PINS[hw.pins.HEARTBEAT]
    assert beat.writes >= len(feeds)  # each feed beats the fail-safe heartbeat
    writes = beat.writes
    hw.clock.ms += 10_000  # the runner and server have been silent for 10 s
    asyncio.run(run(False, 0.35))
    assert [e for e in hw.machine.LOG if e == ("wdt_feed",)] == feeds
    assert beat.writes == writes


# ---------------------------------------------------------------------- RTC
def _utc_ms(dt):
    return int(dt.replace(tzinfo=datetime.timezone.utc).timestamp()) * 1000


@pytest.mark.sr("SR-23")
@given(st.datetimes(min_value=datetime.datetime(2000, 1, 1),
                    max_value=datetime.datetime(2099, 12, 31, 23, 59, 59)))
def test_ds3231_keeps_utc_to_the_second(dt):
    """SR-23: the RTC reads back what was set, truncated to the second, for every
    time the DS3231 can hold (oracle: CPython's datetime)."""
    from board import rp2 as board  # pure functions: no fakes needed for these

    regs = _FakeBus()
    rtc = board.DS3231(regs)
    ms = _utc_ms(dt) + dt.microsecond // 1000
    rtc.set_ms(ms)
    assert rtc.now_ms() == ms - ms % 1000


class _FakeBus:
    def __init__(self):
        self.regs = bytearray(19)
        self.regs[0x0F] = 0x80

    def readfrom_mem(self, addr, reg, n):
        return bytes(self.regs[reg:reg + n])

    def writeto_mem(self, addr, reg, data):
        self.regs[reg:reg + len(data)] = data


@pytest.fixture(autouse=False)
def _plain_import(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKES))


@pytest.mark.sr("SR-23")
def test_ds3231_oscillator_stop_or_silence_is_an_invalid_clock(hw):
    pico = make_pico(hw)
    assert pico.rtc_now() is None  # a new chip: the oscillator-stop flag is set
    pico.rtc_set(_utc_ms(datetime.datetime(2026, 11, 30, 12, 0, 0)))
    assert pico.rtc_now() == _utc_ms(datetime.datetime(2026, 11, 30, 12, 0, 0))
    pico.rtc_dev.regs[0x0F] |= 0x80  # the coin cell ran out while unpowered
    assert pico.rtc_now() is None
    pico.rtc_dev.regs[0x0F] = 0
    pico.rtc_dev.regs[0x05] = 0x13  # month 13: a garbled read
    assert pico.rtc_now() is None
    del hw.machine.DEVICES[DS3231_ADDR]
    assert pico.rtc_now() is None
    with pytest.raises(ValueError):
        pico.rtc_set(_utc_ms(datetime.datetime(2100, 1, 1)))


def test_rtc_skew_moves_the_rtc(hw):
    pico = make_pico(hw)
    t = _utc_ms(datetime.datetime(2026, 1, 1))
    pico.rtc_set(t)
    pico.rtc_skew(3_600_000)
    assert pico.rtc_now() == t + 3_600_000
    pico.rtc_dev.regs[0x0F] |= 0x80
    pico.rtc_skew(1000)  # an invalid clock stays invalid
    assert pico.rtc_now() is None


@given(st.integers(-719_162, 800_000))  # 0001-01-01 .. 4160
def test_civil_date_conversions_match_datetime(days):
    from board import rp2 as board

    d = datetime.date(1970, 1, 1) + datetime.timedelta(days=days)
    assert board.days_from_civil(d.year, d.month, d.day) == days
    assert board.civil_from_days(days) == (d.year, d.month, d.day)


# ---------------------------------------------------------------------- power
@pytest.mark.sr("SR-28")
def test_battery_low_has_hysteresis(hw):
    """Below 4.4 V the battery is low and stays low until above 4.6 V (no chatter)."""
    pico = make_pico(hw)
    top, bottom = hw.pins.BATTERY_ADC_DIVIDER

    def at(mv):
        hw.machine.ADC_VALUES[hw.pins.BATTERY_ADC] = round(mv * bottom / (top + bottom)
                                                            * 65535 / 3300)
        return pico.battery_low()

    assert [at(mv) for mv in (5000, 4300, 4500, 4599, 4700, 4500, 4390)] == [
        False, True, True, True, False, False, True]
    assert abs(pico.battery_mv() - 4390) <= 3


def test_supply_reads_vsys_through_the_pico_divider(hw):
    pico = make_pico(hw)
    hw.machine.ADC_VALUES[hw.pins.VSYS_ADC] = round(5000 / 3 * 65535 / 3300)
    assert abs(pico.supply_mv() - 5000) <= 3
    assert pico.status()["supply_mv"] == pico.supply_mv()


# ---------------------------------------------------------------------- annunciation
def _pulses(hw, gpio, ticks):
    """Rising edges of a PWM pin's duty over ``ticks`` timer ticks."""
    start = len(hw.machine.LOG)
    hw.machine.fire_timers(ticks)
    ups = 0
    for e in hw.machine.LOG[start:]:
        if e[0] == "pwm_duty" and e[1] == gpio and e[2] > 0:
            ups += 1
    return ups


@pytest.mark.sr("SR-28")
@pytest.mark.parametrize("level, pulses", [("high", 10), ("medium", 3), ("low", 2), (None, 0)])
def test_buzzer_bursts_follow_the_iec_60601_1_8_pulse_counts(hw, level, pulses):
    """IEC 60601-1-8: a HIGH burst has 10 pulses, MEDIUM 3, LOW 1 or 2; counted as
    buzzer duty rising edges over exactly one burst period."""
    pico = make_pico(hw)
    pico.annunciate(level)
    period = sum(on + off for on, off in hw.board.BUZZER_PATTERNS.get(level, ((0, 1),)))
    assert _pulses(hw, hw.pins.BUZZER, period) == pulses
    if level == "high":  # pulses of 150 ms, the burst repeats within 15 s
        assert hw.board.BUZZER_PATTERNS["high"][0][0] * hw.board.TICK_MS == 150
        assert period * hw.board.TICK_MS <= 15000


@pytest.mark.sr("SR-28")
def test_led_flashes_faster_for_higher_priority(hw):
    pico = make_pico(hw)
    counts = {}
    for level in (None, "high", "medium", "low"):
        pico.annunciate(level)
        counts[level] = _pulses(hw, hw.pins.LED, 200)  # 10 s
    assert counts["high"] == 20  # 2 Hz
    assert counts["medium"] == 5  # 0.5 Hz
    assert counts["low"] <= 1  # steady
    assert counts[None] == 2  # a blink every 5 s


def test_buttons_are_debounced_and_counted_once_per_press(hw):
    pico = make_pico(hw)
    ack = hw.pins.BTN_ACK
    hw.machine.drive(ack, hw.pins.BTN_ACK_ACTIVE)  # a 100 ms bounce
    hw.machine.fire_timers(2)
    hw.machine.drive(ack, None)
    hw.machine.fire_timers(3)
    assert pico.button_presses() == []
    hw.machine.drive(ack, hw.pins.BTN_ACK_ACTIVE)  # held for 1 s
    hw.machine.fire_timers(20)
    hw.machine.drive(ack, None)
    hw.machine.fire_timers(5)
    hw.machine.drive(hw.pins.BTN_BOLUS, hw.pins.BTN_BOLUS_ACTIVE)
    hw.machine.fire_timers(4)
    assert pico.button_presses() == ["ack", "bolus"]
    assert pico.button_presses() == []
    assert not pico.provisioning()
    hw.machine.drive(hw.pins.BTN_PROVISION, hw.pins.BTN_PROVISION_ACTIVE)
    hw.machine.fire_timers(3)
    assert pico.provisioning()


def test_the_empty_switch_reads_active_low(hw):
    pico = make_pico(hw)
    assert pico.empty_switch() is False  # pulled up: open
    hw.machine.drive(hw.pins.EMPTY_SWITCH, hw.pins.EMPTY_SWITCH_ACTIVE)
    assert pico.empty_switch() is True


# ---------------------------------------------------------------------- boots
@pytest.mark.parametrize("cause, name", [(1, "power_on"), (3, "watchdog"), (2, "reset")])
def test_reset_causes_map_to_the_apps_names(hw, cause, name):
    hw.machine.CAUSE[0] = cause
    assert make_pico(hw).reset_cause() == name


@pytest.mark.sr("SR-27")
def test_maintenance_writes_the_flag_then_resets_after_the_answer(hw):
    pico = make_pico(hw)
    pico.maintenance()
    assert Path(hw.board.MAINTENANCE_FLAG).exists()
    assert ("reset",) not in hw.machine.LOG  # not yet: the answer goes out first
    timer = hw.machine.TIMERS[-1]
    assert timer.mode == hw.machine.Timer.ONE_SHOT and timer.period >= 1000
    with pytest.raises(hw.machine.Reset):
        timer.fire()
    assert pico.ann.level == "high"


@pytest.mark.sr("SR-27")
def test_a_maintenance_boot_does_not_dose_or_start_the_watchdog(hw):
    """SR-27: with the flag present the boot annunciates HIGH, keeps the motor off,
    starts no watchdog, clears the boot-loop count and returns to the REPL."""
    Path(hw.board.MAINTENANCE_FLAG).write_text("deploy\n")
    data = hw.tmp / "data"
    data.mkdir()
    (data / "boots").write_text("1 2\n")
    board = hw.board.main({})
    assert board.ann.level == "high"
    assert hw.machine.PINS[hw.pins.EN_N].level == 1 - hw.pins.EN_N_ACTIVE
    assert not [e for e in hw.machine.LOG if e[0] in ("wdt_start", "sm_put")]
    assert (data / "boots").read_text().split() == []


def test_a_normal_boot_turns_ctrl_c_off_before_the_store_boots(hw, monkeypatch):
    """A 0x03 from the host (mpremote probing a busy board) must not interrupt a boot:
    Ctrl-C is off before the app is even made."""
    import app

    seen = []

    class Stop(Exception):
        pass

    def fake_app(board):
        seen.append(list(hw.micropython.KBD_INTR))
        raise Stop

    monkeypatch.setattr(app, "App", fake_app)
    with pytest.raises(Stop):
        hw.board.main({})
    assert seen == [[-1]]


def test_maintenance_boot_needs_the_flag_or_both_buttons(hw):
    pico = make_pico(hw)
    assert not hw.board.maintenance_boot(pico)
    hw.machine.drive(hw.pins.BTN_ACK, hw.pins.BTN_ACK_ACTIVE)
    assert not hw.board.maintenance_boot(pico)
    hw.machine.drive(hw.pins.BTN_PROVISION, hw.pins.BTN_PROVISION_ACTIVE)
    assert hw.board.maintenance_boot(pico)


def test_the_manifest_is_the_digest_of_the_flash_as_deployed(hw):
    """hello's ``fw``: the Pico hashes its flash root as the host hashes the deploy
    folder (data files do not count)."""
    import shutil

    from host_tools.toolchain import FIRMWARE, source_digest

    flash = Path(hw.board.FLASH_ROOT)
    shutil.copytree(FIRMWARE / "itb", flash / "itb")
    shutil.copy(FIRMWARE / "main.py", flash / "main.py")
    deployed = source_digest(flash)
    (flash / "data").mkdir()
    (flash / "data" / "keys").write_text("secret")
    (flash / "data" / "stray.py").write_text("# state, not firmware\n")
    pico = make_pico(hw)
    assert pico.manifest() == deployed
    (flash / "itb" / "units.py").write_text("# changed\n")
    assert pico.manifest() != source_digest(FIRMWARE)


def test_settings_override_only_known_non_negative_integers(hw):
    pico = make_pico(hw, steps_per_ml=5000, min_rise=-1, bogus=3, occlusion_rise="x")
    assert pico.cfg["steps_per_ml"] == 5000
    assert pico.cfg["min_rise"] == hw.board.MIN_RISE
    assert pico.cfg["occlusion_rise"] == hw.board.OCCLUSION_RISE
    assert "bogus" not in pico.cfg


def test_board_settings_come_from_the_data_directory(hw):
    data = hw.tmp / "data"
    data.mkdir()
    (data / "board.json").write_text(json.dumps({"steps_per_ml": 5000}))
    hw.board.BOARD_CONFIG = str(data / "board.json")
    assert hw.board._read_json(hw.board.BOARD_CONFIG) == {"steps_per_ml": 5000}
    (data / "board.json").write_text("[1]")
    assert hw.board._read_json(hw.board.BOARD_CONFIG) == {}
    assert hw.board._read_json(str(data / "missing.json")) == {}


# ---------------------------------------------------------------------- the app on a Pico
@pytest.mark.sr("SR-4", "SR-27")
def test_the_app_doses_through_the_pico_adapter(hw, monkeypatch):
    """The unchanged app and controller on the Pico adapter: a programmed basal
    makes strokes whose STEP pulses add up to the delivered volume."""
    app, pico = _app(hw, monkeypatch)
    runner = app.runner
    cid = [0]

    def cmd(name, args, role="clinician"):
        cid[0] += 1
        return runner.command({"name": name, "id": cid[0], "role": role, "args": args}, 0)

    for name, args in (("refill", {"aspirated_nl": 0, "volume_nl": 20_000_000,
                                   "concentration_ug_per_ml": 2000}),
                       ("prime", {"contents": "drug"}),
                       ("program", {"daily_dose_ng": 400_000, "origin": "spinal"})):
        res = cmd("prepare", {"command": name, "args": args})
        assert res["ok"], res
        assert cmd("confirm", {"hash": res["hash"]})["ok"]
    for hour in range(1, 25):
        runner.advance(hour * 3_600_000)
    per_stroke = expected_steps(runner.ctrl.cfg.stroke_nl, hw.board.STEPS_PER_ML)
    delivered_nl = runner.ctrl.res.delivered_nl
    assert delivered_nl >= 190_000  # about 0.2 mL a day at 400 ug/day and 2 mg/mL
    assert pico.load.steps == delivered_nl // runner.ctrl.cfg.stroke_nl * per_stroke


def _run_for(coro_fn, seconds):
    async def go():
        task = asyncio.ensure_future(coro_fn())
        await asyncio.sleep(seconds)
        task.cancel()

    asyncio.run(go())


@pytest.mark.sr("SR-28", "SR-29")
def test_the_app_reads_the_battery_and_the_buttons(hw, monkeypatch):
    """The runner task turns a low battery into MEDIUM BATTERY_LOW, the ACK button into
    an acknowledgement and the bolus button into a patient bolus request (refused and
    logged here: no patient bolus is programmed, SR-29), each a logged runner input."""
    app, pico = _app(hw, monkeypatch)
    hw.machine.ADC_VALUES[hw.pins.BATTERY_ADC] = 0  # no battery at all
    hw.machine.drive(hw.pins.BTN_BOLUS, hw.pins.BTN_BOLUS_ACTIVE)
    hw.machine.fire_timers(4)
    _run_for(app.runner_task, 0.05)
    alarms = {a[0]: a for a in app.runner.ctrl.status()["alarms"]}
    assert alarms["BATTERY_LOW"][1] == "medium" and alarms["BATTERY_LOW"][2] == 1
    bolus = app.runner.ctrl.seen[max(app.runner.ctrl.seen)]
    assert bolus["name"] == "patient_bolus" and bolus["ok"] == 0
    hw.machine.drive(hw.pins.BTN_BOLUS, None)
    hw.machine.drive(hw.pins.BTN_ACK, hw.pins.BTN_ACK_ACTIVE)
    hw.machine.fire_timers(4)
    _run_for(app.runner_task, 0.05)
    ack = app.runner.ctrl.seen[max(app.runner.ctrl.seen)]
    assert ack["name"] == "acknowledge" and ack["ok"] == 1
    assert ack["id"] == bolus["id"] + 1


@pytest.mark.sr("SR-27")
def test_ctrl_c_is_off_on_the_console_outside_maintenance(hw, monkeypatch):
    app, pico = _app(hw, monkeypatch)

    class Stop(Exception):
        pass

    async def stop_soon():
        await asyncio.sleep(0.05)
        raise Stop

    monkeypatch.setattr(app, "server_task", stop_soon)
    with pytest.raises(Stop):
        asyncio.run(app.run())
    assert hw.micropython.KBD_INTR == [-1]


def test_usb_serial_never_blocks_the_loop_when_the_host_stops_reading(hw):
    """Reads return what is there; a write to a host that stopped reading waits in
    the loop (the app's write timeout then drops it) instead of blocking it."""
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    os.set_blocking(w_out, False)
    rx, tx = open(r_in, "rb", buffering=0), open(w_out, "wb", buffering=0)
    serial = hw.board.UsbSerial(rx, tx)
    os.write(w_in, b"\x00frame\x00")

    async def go():
        got = await asyncio.wait_for(serial.read(), 1)
        await asyncio.wait_for(serial.write(b"answer"), 1)
        ticks = [0]

        async def ticker():  # the loop keeps running while the write waits
            while True:
                ticks[0] += 1
                await asyncio.sleep(0.005)

        t = asyncio.ensure_future(ticker())
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(serial.write(b"x" * 1_000_000), 0.2)
        t.cancel()
        return got, ticks[0]

    got, ticks = asyncio.run(go())
    assert got == b"\x00frame\x00"
    assert os.read(r_out, 6) == b"answer"
    assert ticks >= 10
    for f in (rx, tx):
        f.close()
    for fd in (w_in, r_out):
        os.close(fd)


def test_dev_builds_inject_outcomes_without_moving(hw):
    """Bench HIL on a dev build: injected outcomes replace the next strokes (the
    motor does not move for them); the empty switch can be overridden."""
    pico = make_pico(hw, dev=1)
    assert pico.DEV
    pico.inject("occlusion", 2, 1)
    assert [pico.stroke(i, 2000, 0) for i in (1, 2, 3)] == ["occlusion", "occlusion", "ok"]
    assert pico.load.steps == expected_steps(2000, hw.board.STEPS_PER_ML)
    assert pico.empty_switch() is True
    pico.inject("ok", 0, 2)
    assert pico.empty_switch() is True
    pico.inject("ok", 0, 0)
    assert pico.empty_switch() is False
    assert not make_pico(hw).DEV
