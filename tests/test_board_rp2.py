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
def test_a_load_cell_that_dies_during_the_stroke_makes_it_unknown(hw):
    """Found by the attacker: the burst completed but the sensor went silent after the
    baseline; that was a ``stall`` (not delivered) though the plunger moved."""
    pico = make_pico(hw)
    hw.machine.listen(hw.pins.STEP, lambda pin, level: level and pico.load.dev.kill())
    assert pico.stroke(1, 2000, 0) == "unknown"
    assert pico.load.steps == expected_steps(2000, hw.board.STEPS_PER_ML)


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
    sm.hang = False  # the machine runs again: the stuck word must not run with it
    before = pico.load.steps
    assert pico.stroke(2, 2000, 0) == "ok"
    assert pico.load.steps - before == expected_steps(2000, hw.board.STEPS_PER_ML)
    assert sm.tx == [] and sm.rx == []


def test_a_stale_word_in_the_step_machine_stops_the_stroke_before_it_moves(hw):
    """Found by the attacker: a word left in the RX FIFO (an exception mid-stroke, a
    late push) made the next stroke end at once and release the driver while its
    burst still ran. The machine must be idle: else no move, ``stall``, FIFOs cleared."""
    pico = make_pico(hw)
    sm = hw.rp2.MACHINES[0]
    sm.rx.append(0xFFFFFFFF)
    assert pico.stroke(1, 2000, 0) == "stall"
    assert pico.load.steps == 0 and sm.rx == []
    assert pico.stroke(2, 2000, 0) == "ok"


def _max_nl(hw):
    """The largest stroke volume that still rounds to MAX_STROKE_STEPS steps."""
    spm = hw.board.STEPS_PER_ML
    return ((hw.board.MAX_STROKE_STEPS * 2 + 1) * 1_000_000 // 2 - 1) // spm


@pytest.mark.sr("SR-4")
@pytest.mark.parametrize("extra_nl, moves", [(0, True), (1, False)])
def test_the_longest_stroke_moves_and_one_nl_more_is_a_stall(hw, extra_nl, moves):
    """Found by the attacker: a stroke the adapter refuses to move was "unknown"
    (counted as delivered by the controller): it is a ``stall`` (not delivered, HIGH)."""
    pico = make_pico(hw, per_step=0)
    res = pico.stroke(1, _max_nl(hw) + extra_nl, 0)
    assert pico.load.steps == (hw.board.MAX_STROKE_STEPS if moves else 0)
    assert res == "stall"  # per_step 0: the load cell saw no push either way
    if not moves:
        assert not [e for e in hw.machine.LOG if e[0] == "sm_put"]


@pytest.mark.parametrize("volume_nl", [0, 1, 10**9])
def test_a_stroke_outside_the_step_range_moves_nothing_and_is_a_stall(hw, volume_nl):
    pico = make_pico(hw)
    assert pico.stroke(1, volume_nl, 0) == "stall"
    assert pico.load.steps == 0
    assert not [e for e in hw.machine.LOG if e[0] == "sm_put"]


@pytest.mark.sr("SR-27")
def test_the_longest_stroke_fits_well_inside_the_watchdog(hw):
    """Found by the attacker: a stroke blocks the loop; the longest one, with both
    sensor reads at their timeout and the margin, takes at most half the watchdog."""
    b = hw.board
    worst_ms = (b.MAX_STROKE_STEPS * 1000 // b.STEP_HZ + 2 * b.HX711_TIMEOUT_MS
                + b.STROKE_MARGIN_MS + b.ENABLE_SETTLE_US // 1000 + 1)
    assert worst_ms <= b.Pico.WATCHDOG_MS // 2


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

    def fake_app(board, config=None):
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


def test_good_settings_apply(hw):
    pico = make_pico(hw, steps_per_ml=5000, min_rise=10, occlusion_rise=500)
    assert (pico.cfg["steps_per_ml"], pico.cfg["min_rise"], pico.cfg["occlusion_rise"]) == (
        5000, 10, 500)
    assert pico.settings_error is None
    assert pico.stroke(1, 2000, 0) == "ok" and pico.load.steps == 10


@pytest.mark.sr("SR-4")
@pytest.mark.parametrize("settings", [
    {"steps_per_ml": 999}, {"steps_per_ml": 10_000_001}, {"steps_per_ml": 3560.0},
    {"min_rise": -1}, {"occlusion_rise": "x"}, {"bogus": 3}, {"dev": 2},
    {"min_rise": 500, "occlusion_rise": 500}, {"steps_per_ml": 5000, "min_rise": 0},
    {"device": {"reservoir_capacity_nl": 10}}, {"device": {"bogus": 1}}, {"device": [1]},
    # found by the attacker (round 2): a falsy device crashed every boot; a calibration
    # file raised the hard maximum daily dose and the session timeout
    {"device": None}, {"device": 0}, {"device": {"max_daily_dose_ng": 10_000_000}},
    {"device": {"session_timeout_ms": 12 * 3_600_000}},
    {"device": {"volume_accuracy_permille": 0}}, False])
def test_bad_settings_are_rejected_whole_and_the_board_does_not_dose(hw, settings):
    """Found by the attacker: any non-negative integer was taken (a typo is a wrong
    dose) and a torn board.json crashed the boot. A bad file is rejected whole (the
    defaults stay, no setting of it applies) and every stroke is a ``stall`` without
    moving (HIGH MOTOR_STALL: nobody is told a dose was given)."""
    pico = hw.board.Pico(settings) if settings is False else make_pico(hw, **settings)
    defaults = hw.board.check_settings({})[0]
    assert pico.cfg == defaults and pico.settings_error
    if settings is not False:
        assert pico.stroke(1, 2000, 0) == "stall"
        assert pico.load.steps == 0
        assert pico.status()["settings_error"] == pico.settings_error


def test_the_shipped_bench_board_json_is_accepted_and_is_the_readme_s(hw):
    import re

    repo = Path(__file__).resolve().parents[1]  # not the firmware's: mutants use a copy
    shipped = (repo / "examples" / "board" / "board.json").read_text()
    readme = (repo / "README.md").read_text()
    assert re.search(r'```json\n(\{"steps_per_ml".*?)```', readme, re.S).group(1) == shipped
    pico = make_pico(hw, **json.loads(shipped))
    assert pico.settings_error is None and pico.cfg["device"]["reservoir_capacity_nl"]


def test_board_json_configures_the_controller_for_the_bench_syringe(hw):
    """A 1 mL bench syringe and its tubing come from board.json's ``device``; the pump
    rate stays capped at what the board moves, whatever the file asks."""
    from itb.drugs import DeviceConfig

    pico = make_pico(hw, device={"reservoir_capacity_nl": 1_000_000,
                                 "low_reservoir_nl": 200_000})
    assert pico.settings_error is None
    cfg = DeviceConfig(pico.device_config())
    assert cfg.reservoir_capacity_nl == 1_000_000 and cfg.low_reservoir_nl == 200_000
    cap = hw.board.rate_cap(hw.board.STEPS_PER_ML)
    assert cfg.max_rate_nl_per_min == cfg.prime_rate_nl_per_min == cap  # the default
    slow = make_pico(hw, device={"max_rate_nl_per_min": 5000}).device_config()
    assert slow["max_rate_nl_per_min"] == 5000  # lower than the cap: kept
    fast = make_pico(hw, device={"max_rate_nl_per_min": cap + 1000})  # refused, not clamped
    assert "above the" in fast.settings_error and fast.cfg["device"] == {}


def test_board_settings_come_from_the_data_directory(hw, monkeypatch):
    data = hw.tmp / "data"
    data.mkdir()
    path = data / "board.json"
    path.write_text(json.dumps({"steps_per_ml": 5000}))
    assert hw.board._read_json(str(path)) == {"steps_per_ml": 5000}
    for bad in ("[1]", '{"steps_per_ml": 3560', ""):
        path.write_text(bad)
        assert hw.board._read_json(str(path)) is False
    assert hw.board._read_json(str(data / "missing.json")) == {}
    path.write_text('{"steps_per_ml": 3560')  # torn: the boot goes on, without dosing
    monkeypatch.setattr(hw.board, "BOARD_CONFIG", str(path))
    import app

    made = []

    class Stop(Exception):
        pass

    def fake_app(board, config=None):
        made.append(board)
        raise Stop

    monkeypatch.setattr(app, "App", fake_app)
    with pytest.raises(Stop):
        hw.board.main()
    assert made and made[0].settings_error


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


# ---------------------------------------------------------------------- attack findings
@pytest.mark.sr("SR-27")
def test_a_boot_that_fails_leaves_the_motor_off_the_alarm_on_and_the_watchdog_running(
        hw, monkeypatch):
    """Found by the attacker: the watchdog was started only by the app's health task,
    so a store that could not be read (EIO) left the board in the REPL, not dosing and
    silent. It starts before the app is made; a failure annunciates HIGH and the
    watchdog resets the board (three times: SAFE)."""
    from itb import store

    def broken(*args, **kwargs):
        raise OSError(5, "EIO")

    monkeypatch.setattr(store, "boot", broken)
    with pytest.raises(OSError):
        hw.board.main({})
    starts = [e for e in hw.machine.LOG if e[0] == "wdt_start"]
    assert starts == [("wdt_start", hw.board.Pico.WATCHDOG_MS)]
    assert hw.machine.PINS[hw.pins.EN_N].level == 1 - hw.pins.EN_N_ACTIVE
    assert ("pwm_freq", hw.pins.BUZZER, hw.board.BUZZER_HZ) in hw.machine.LOG
    hw.machine.fire_timers(3)
    assert [e for e in hw.machine.LOG if e[0] == "pwm_duty" and e[1] == hw.pins.BUZZER]


def test_a_failure_before_the_board_exists_still_starts_a_watchdog(hw, monkeypatch):
    def broken(settings=None):
        raise RuntimeError("I2C gone")

    monkeypatch.setattr(hw.board, "Pico", broken)
    with pytest.raises(RuntimeError):
        hw.board.main({})
    assert ("wdt_start", hw.board.WDT_MAX_MS) in hw.machine.LOG
    assert hw.machine.PINS[hw.pins.EN_N].level == 1 - hw.pins.EN_N_ACTIVE


def _hold_both(hw):
    hw.machine.drive(hw.pins.BTN_ACK, hw.pins.BTN_ACK_ACTIVE)
    hw.machine.drive(hw.pins.BTN_PROVISION, hw.pins.BTN_PROVISION_ACTIVE)


@pytest.mark.sr("SR-27")
@pytest.mark.parametrize("cause, release_after_ms, maintenance", [
    (1, None, True),  # power-on, held throughout: MAINTENANCE
    (1, 4900, False),  # power-on, let go before 5 s
    (3, None, False),  # a watchdog reset with both held (a patient leaning on them)
    (2, None, False)])  # any other reset
def test_the_maintenance_gesture_needs_a_power_on_and_five_seconds(
        hw, cause, release_after_ms, maintenance):
    """Found by the attacker: ACK + PROVISION held at any boot stopped a RUNNING pump.
    Only a power-on with both held for GESTURE_MS boots into MAINTENANCE."""
    hw.machine.CAUSE[0] = cause
    _hold_both(hw)
    pico = make_pico(hw)
    if release_after_ms is not None:
        start = hw.clock.ms

        def sleep_ms(ms):
            hw.clock.ms += ms
            if hw.clock.ms - start >= release_after_ms:
                hw.machine.drive(hw.pins.BTN_ACK, None)

        hw.clock.sleep_ms = sleep_ms
    t0 = hw.clock.ms
    assert hw.board.maintenance_boot(pico) is maintenance
    if maintenance:
        assert hw.clock.ms - t0 >= hw.board.GESTURE_MS
        assert pico.ann.level == "gesture"  # chirping, from the annunciation timer
    elif cause == 1:
        assert pico.ann.level is None  # let go: the chirps stop


@pytest.mark.sr("SR-23")
@pytest.mark.parametrize("regs, why", [
    (bytes([0x00, 0x00, 0x12, 0x1, 0x1A, 0x06, 0x26]), "day 0x1A is no BCD"),
    (bytes([0x4F, 0x00, 0x12, 0x1, 0x10, 0x06, 0x26]), "seconds 0x4F"),
    (bytes([0x00, 0x00, 0x12, 0x1, 0x31, 0x02, 0x26]), "31 February"),
    (bytes([0x00, 0x00, 0x12, 0x1, 0x29, 0x02, 0x25]), "29 February 2025"),
    (bytes([0x00, 0x00, 0x12, 0x1, 0x31, 0x04, 0x26]), "31 April"),
    (bytes([0x00, 0x00, 0x12, 0x1, 0x10, 0x06, 0xFF]), "year 0xFF"),
    (bytes([0x00, 0x00, 0x52, 0x1, 0x10, 0x06, 0x26]), "12-hour mode"),
    (bytes([0x00, 0x00, 0x12, 0x1, 0x10, 0x86, 0x26]), "century bit"),
    (bytes([0x00, 0x60, 0x12, 0x1, 0x10, 0x06, 0x26]), "minute 60"),
    (bytes([0x00, 0x00, 0x24, 0x1, 0x10, 0x06, 0x26]), "hour 24"),
    (bytes([0x00, 0x00, 0x12, 0x1, 0x00, 0x06, 0x26]), "day 0"),
    (bytes([0x00, 0x00, 0x12, 0x1, 0x10, 0x00, 0x26]), "month 0")])
def test_a_garbled_rtc_reading_is_no_time(hw, regs, why):
    """Found by the attacker: garbled registers decoded to a wrong date, and at boot a
    wrong RTC moves the outage bounds (SR-23: a 10-day jump reopened a bolus lockout).
    Only what ``set_ms`` writes reads back as a time."""
    pico = make_pico(hw)
    pico.rtc_dev.regs[0:7] = regs
    pico.rtc_dev.regs[0x0F] = 0
    assert pico.rtc_now() is None, why


def test_a_leap_day_that_exists_reads_back(hw):
    pico = make_pico(hw)
    for dt in (datetime.datetime(2024, 2, 29, 23, 59, 59), datetime.datetime(2000, 2, 29),
               datetime.datetime(2099, 12, 31, 23, 59, 59)):
        pico.rtc_set(_utc_ms(dt))
        assert pico.rtc_now() == _utc_ms(dt)


@pytest.mark.sr("SR-23")
def test_the_rtc_is_read_until_two_reads_agree(hw):
    """A read across a second's edge is read again; reads that keep changing are no time."""
    pico = make_pico(hw)
    t = _utc_ms(datetime.datetime(2026, 6, 10, 12, 0, 0))
    pico.rtc_set(t)
    dev = pico.rtc_dev
    real = dev.readfrom_mem
    ticks = [0]

    def moving(reg, n):
        if reg == 0 and n == 7:
            ticks[0] += 1
            if ticks[0] == 2:  # the second changes between the first and the second read
                dev.regs[0] = 0x01
        return real(reg, n)

    dev.readfrom_mem = moving
    assert pico.rtc_now() == t + 1000

    def garbage(reg, n):
        if reg == 0 and n == 7:
            ticks[0] += 1
            return bytes([ticks[0] % 50, 0, 0x12, 1, 0x10, 0x06, 0x26])
        return real(reg, n)

    dev.readfrom_mem = garbage
    assert pico.rtc_now() is None


def test_main_py_turns_ctrl_c_off_before_any_other_import():
    """Found by the attacker: a 0x03 from a host during the imports ended main.py in the
    REPL. The first statements of main.py turn Ctrl-C off."""
    import ast

    from host_tools.toolchain import FIRMWARE

    body = ast.parse((FIRMWARE / "main.py").read_text()).body
    code = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert ast.unparse(code[0]) == "import micropython"
    assert ast.unparse(code[1]) == "micropython.kbd_intr(-1)"


def test_a_maintenance_boot_annunciates_before_it_gives_the_repl_back(hw):
    Path(hw.board.MAINTENANCE_FLAG).write_text("deploy\n")
    board = hw.board.main({})
    assert board.ann.level == "high"
    assert hw.micropython.KBD_INTR == [-1, 3]  # off while booting, back for mpremote


def test_a_button_held_through_a_reset_is_no_press(hw):
    """Found by the attacker: a button held (or stuck) through a reset counted as a
    press at boot. It counts only after it was seen released."""
    hw.machine.drive(hw.pins.BTN_ACK, hw.pins.BTN_ACK_ACTIVE)
    hw.machine.drive(hw.pins.BTN_BOLUS, hw.pins.BTN_BOLUS_ACTIVE)
    pico = make_pico(hw)
    hw.machine.fire_timers(10)
    assert pico.button_presses() == []
    hw.machine.drive(hw.pins.BTN_BOLUS, None)
    hw.machine.fire_timers(5)
    hw.machine.drive(hw.pins.BTN_BOLUS, hw.pins.BTN_BOLUS_ACTIVE)
    hw.machine.fire_timers(5)
    assert pico.button_presses() == ["bolus"]


def test_usb_writes_go_one_byte_at_a_time(hw):
    """Found by the attacker: rp2 reports "writable" when any space is free, and a
    longer write then blocks up to 500 ms; one byte never waits."""

    class Tx:
        def __init__(self):
            self.sizes = []
            self.r, self.w = os.pipe()

        def fileno(self):
            return self.w

        def write(self, b):
            self.sizes.append(len(b))
            return len(b)

    tx = Tx()
    r, w = os.pipe()
    serial = hw.board.UsbSerial(open(r, "rb", buffering=0), tx)
    asyncio.run(serial.write(b"x" * 300))
    assert sum(tx.sizes) == 300 and max(tx.sizes) == 1
    for fd in (w, tx.r, tx.w):
        os.close(fd)


@pytest.mark.sr("SR-27")
def test_the_pump_rate_is_one_the_board_keeps_up_with(hw):
    """Found by the attacker: at the default 1 mL/min a bolus or a priming made strokes
    due faster than the board moves them, and the backlog outran the watchdog. The
    board's configuration caps the rate so that strokes (burst plus both sensor reads
    at their timeout) fill at most half of the time between them."""
    from itb.drugs import DeviceConfig

    pico = make_pico(hw)
    cfg = DeviceConfig(pico.device_config())
    steps = expected_steps(cfg.stroke_nl, pico.cfg["steps_per_ml"])
    stroke_ms = (steps * 1000 // hw.board.STEP_HZ + 2 * hw.board.HX711_TIMEOUT_MS
                 + hw.board.STROKE_MARGIN_MS)
    assert 2 * stroke_ms <= cfg.min_stroke_interval_ms
    assert cfg.prime_rate_nl_per_min <= cfg.max_rate_nl_per_min


@pytest.mark.sr("SR-27")
def test_the_runner_task_lets_the_other_tasks_run_between_strokes(hw, monkeypatch):
    """A backlog of due strokes is worked off one wake-up at a time, the loop turning
    between them (the health task feeds the watchdog there)."""
    app, pico = _app(hw, monkeypatch)
    _program(app)
    events = []
    real = pico.stroke

    def stroke(n, volume_nl, now):
        events.append("stroke")
        return real(n, volume_nl, now)

    monkeypatch.setattr(pico, "stroke", stroke)
    hw.clock.ms += 10 * 3_600_000  # ten hours of strokes (about 40) are due at once

    async def go():
        async def ticker():
            while True:
                events.append("tick")
                await asyncio.sleep(0)

        t = asyncio.ensure_future(ticker())
        r = asyncio.ensure_future(app.runner_task())
        await asyncio.sleep(0.3)
        t.cancel()
        r.cancel()

    asyncio.run(go())
    strokes = events.count("stroke")
    assert strokes >= 10
    assert "stroke,stroke" not in ",".join(events)


def _program(app):
    cid = [0]
    for name, args in (("refill", {"aspirated_nl": 0, "volume_nl": 20_000_000,
                                   "concentration_ug_per_ml": 2000}),
                       ("prime", {"contents": "drug"}),
                       ("program", {"daily_dose_ng": 400_000, "origin": "spinal"})):
        cid[0] += 1
        res = app.runner.command({"name": "prepare", "id": cid[0], "role": "clinician",
                                  "args": {"command": name, "args": args}}, app.now())
        assert res["ok"], res
        cid[0] += 1
        assert app.runner.command({"name": "confirm", "id": cid[0], "role": "clinician",
                                   "args": {"hash": res["hash"]}}, app.now())["ok"]


def test_a_programmed_pump_with_keys_is_not_re_keyed_by_the_button(hw, monkeypatch):
    """Found by the attacker: whoever held PROVISION on a RUNNING pump became its
    clinician (every key replaced, nothing logged). Keys are taken while the button is
    held only on a board without keys or an UNPROGRAMMED one."""
    from itb import protocol as pr

    app, pico = _app(hw, monkeypatch)
    hw.machine.drive(hw.pins.BTN_PROVISION, hw.pins.BTN_PROVISION_ACTIVE)
    hw.machine.fire_timers(4)
    assert pico.provisioning()

    def provision(seed):
        keys = {r: bytes((seed + i + 7 * j) & 0xFF for j in range(32))
                for i, r in enumerate(pr.ROLE_CODES[1:])}
        body = pr.dumps({"keys": {r: k.hex() for r, k in keys.items()}})
        return pr.opened(app._provision(pr.seal(pr.PROVISION, "", body)))

    assert provision(1)[0] == pr.PROVISIONED  # a new board
    assert provision(11)[0] == pr.PROVISIONED  # still UNPROGRAMMED: re-keyed
    first = dict(app.keys)
    _program(app)
    kind, _role, body = provision(21)
    assert kind == pr.REFUSAL and pr.parse_body(body)["reason"] == "NOT_PROVISIONING"
    assert app.keys == first and app.runner.ctrl.state == "RUNNING"


# ---------------------------------------------------------------------- second attack round
def test_inputs_after_a_backlog_use_the_time_after_it(hw, monkeypatch):
    """Found by the attacker (round 2): a command handled between two strokes of a
    backlog moved the runner past the loop's ``now``; a battery change then went in
    at that older time and the runner task died (clock backwards)."""
    app, pico = _app(hw, monkeypatch)
    _program(app)
    real = pico.stroke
    strokes = []
    sent = []

    def stroke(n, volume_nl, now):
        strokes.append(n)
        return real(n, volume_nl, now)

    async def server():  # answers a command between two strokes of the backlog
        while not strokes:
            await asyncio.sleep(0)
        hw.clock.ms += 50
        sent.append(app.runner.command({"name": "acknowledge", "id": 900, "role": "patient",
                                        "args": {"code": "all"}}, app.now()))
        hw.machine.ADC_VALUES[hw.pins.BATTERY_ADC] = 0  # and the battery goes low

    monkeypatch.setattr(pico, "stroke", stroke)
    hw.machine.ADC_VALUES[hw.pins.BATTERY_ADC] = 50000  # 5.0 V: not low
    app._poll_inputs(app.now())
    hw.clock.ms += 3 * 3_600_000

    async def go():
        task = asyncio.ensure_future(app.runner_task())
        asyncio.ensure_future(server())
        await asyncio.sleep(0.2)
        assert not task.done(), task.exception()
        task.cancel()

    asyncio.run(go())
    assert sent and sent[0]["ok"]
    assert app.runner.ctrl.alarms.active("BATTERY_LOW")


@pytest.mark.sr("SR-23", "SR-11")
def test_the_ledger_stamps_follow_the_rtc_and_a_short_reset_is_short(hw, monkeypatch):
    """Found by the attacker (round 2): the stamps came from the tick crystal plus the
    offset read at boot; after days of drift a 5 s reset saw the RTC behind the last
    stamp ("unknown": a restart at 50 %). The app re-syncs the stamps to the RTC, and
    a gap within the RTC's resolution below zero is a short outage."""
    from app import App

    pico = make_pico(hw)
    t0 = _utc_ms(datetime.datetime(2026, 6, 10, 12, 0, 0))
    pico.rtc_set(t0)
    pico.mount()
    app = App(pico)
    _program(app)
    dose = app.runner.ctrl.daily_dose_ng()
    hw.clock.ms += 3_600_000  # an hour of ticks, but the DS3231 says 20 s less (drift)
    pico.rtc_set(t0 + 3_600_000 - 20_000)
    app._poll_inputs(app.now())
    stamped = app.now() + app.runner.ctrl.wall_delta
    assert abs(stamped - pico.rtc_now()) <= 1000
    app.runner.journal.sync()
    hw.clock.ms += 5_000  # a 5 s reset
    pico.rtc_set(pico.rtc_now() + 4_000)
    hw.machine.CAUSE[0] = hw.machine.WDT_RESET
    again = App(pico)
    assert again.runner.ctrl.daily_dose_ng() == dose
    assert not again.runner.ctrl.alarms.active("RESTART_REDUCED")


def test_an_rtc_read_error_at_boot_is_read_again(hw):
    """Found by the attacker (round 2): one I2C error on the boot read made the outage
    "unknown" (a restart at 50 %)."""
    pico = make_pico(hw)
    t0 = _utc_ms(datetime.datetime(2026, 6, 10, 12, 0, 0))
    pico.rtc_set(t0)
    dev = pico.rtc_dev
    real = dev.readfrom_mem
    fails = [1]

    def flaky(reg, n):
        if fails[0]:
            fails[0] -= 1
            raise OSError(5, "EIO")
        return real(reg, n)

    dev.readfrom_mem = flaky
    assert pico.rtc_now() == t0


def test_a_stalled_link_still_gets_whole_answers_through(hw, monkeypatch):
    """Found by the attacker (round 2): after one timed-out answer every later answer
    had 10 ms, less than a Pico needs to write one byte at a time: the link was lost
    until reset. The stalled limit grows with the answer's length."""
    from itb import protocol as pr

    app, pico = _app(hw, monkeypatch)

    class Slow:
        def __init__(self):
            self.sent = b""
            self.frames = [pr.pack(bytes([pr.HELLO]))]

        async def read(self):
            if self.frames:
                return self.frames.pop()
            await asyncio.sleep(1)
            return b""

        async def write(self, data):
            for i in range(len(data)):  # 50 us a byte
                if i % 64 == 0:
                    await asyncio.sleep(64 * 0.00005)
            self.sent += data

    pico.serial = Slow()
    app.stalled = True

    async def go():
        task = asyncio.ensure_future(app.server_task())
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(go())
    assert pico.serial.sent and not app.stalled


@pytest.mark.sr("SR-27")
def test_the_boot_is_watched_with_a_bounded_feed(hw, monkeypatch):
    """Found by the attacker (round 2): nothing fed the watchdog between its start and
    the health task, and store recovery on a Pico may outlast one timeout. A timer
    feeds it during the boot for at most BOOT_BUDGET_MS; the health task's
    ``watchdog()`` ends that feed; a boot that hangs is reset."""
    pico = make_pico(hw)
    pico.boot_watchdog()
    timer = hw.machine.TIMERS[-1]
    assert timer.period <= 1000  # a heartbeat edge every 2 s, as with the health task
    feeds = lambda: len([e for e in hw.machine.LOG if e == ("wdt_feed",)])  # noqa: E731
    timer.fire()
    assert feeds() == 1
    hw.clock.ms += hw.board.BOOT_BUDGET_MS  # a boot that never ends
    timer.fire()
    assert feeds() == 1  # not fed any more: the watchdog resets the board
    pico2 = make_pico(hw)
    pico2.boot_watchdog()
    wdt = pico2.watchdog(pico2.WATCHDOG_MS)  # the health task takes over
    assert not hw.machine.TIMERS[-1].active and wdt is pico2.wdt


def test_a_chattering_button_is_one_request_per_two_seconds(hw):
    """Found by the attacker (round 2): every press is a logged command; a chattering
    contact or a fidgeting hand wrote the ledger's export history away in minutes."""
    pico = make_pico(hw)
    for _ in range(6):  # six clean presses in 1.8 s
        hw.machine.drive(hw.pins.BTN_BOLUS, hw.pins.BTN_BOLUS_ACTIVE)
        hw.machine.fire_timers(3)
        hw.machine.drive(hw.pins.BTN_BOLUS, None)
        hw.machine.fire_timers(3)
    assert pico.button_presses() == ["bolus"]
    hw.machine.fire_timers(40)
    hw.machine.drive(hw.pins.BTN_BOLUS, hw.pins.BTN_BOLUS_ACTIVE)
    hw.machine.fire_timers(3)
    assert pico.button_presses() == ["bolus"]
    assert pico.status()["held"] == ["bolus"]  # a stuck button shows in status


def test_a_test_clock_step_moves_one_wake_up_at_a_time(hw, monkeypatch):
    """Found by the attacker (round 2): a stepped hour ran all its strokes in one call
    (a real Pico blocks per stroke). Between two turns of the loop, at most one stroke."""
    app, pico = _app(hw, monkeypatch)
    _program(app)
    strokes = []
    real = pico.stroke
    monkeypatch.setattr(pico, "stroke", lambda n, v, t: strokes.append(n) or real(n, v, t))
    per_turn = []
    for _ in app._step(6 * 3_600_000):
        per_turn.append(len(strokes))
        strokes.clear()
    assert sum(per_turn) >= 20 and max(per_turn) <= 1


# ---------------------------------------------------------------------- calibration
def _calibration_file(hw, monkeypatch, settings):
    data = hw.tmp / "data"
    data.mkdir(exist_ok=True)
    path = data / "board.json"
    path.write_text(json.dumps(settings))
    monkeypatch.setattr(hw.board, "BOARD_CONFIG", str(path))
    return path


@pytest.mark.sr("SR-4")
def test_calibrate_rescales_steps_per_ml_and_rewrites_board_json(hw, monkeypatch):
    """Strokes of 2000 nL moved 712 steps and delivered 1900 nL: one step is 1900/712
    nL, so a 2000 nL stroke needs 2000 x 712 / 1900 = 749.5 steps: 374737 steps/mL
    (computed here from the measurement, not the adapter's formula). The other
    settings stay as they were; the next stroke moves the new count."""
    settings = {"steps_per_ml": 356000, "min_rise": 150, "dev": 1}
    path = _calibration_file(hw, monkeypatch, settings)
    pico = make_pico(hw, **settings)
    steps = expected_steps(2000, 356000)
    assert steps == 712
    pico.calibrate(2000, 1900)
    new = round(steps * 1e6 / 1900)
    assert json.loads(path.read_text()) == {**settings, "steps_per_ml": new,
                                            "steps_per_ml_set": 356000}
    assert pico.cfg["steps_per_ml"] == new and pico.cfg["min_rise"] == 150
    assert pico.status()["calibration"] == {"stroke_nl": 2000, "measured_nl": 1900,
                                            "steps_per_ml_was": 356000, "steps_per_ml": new}
    assert pico.stroke(1, 2000, 0) == "ok"
    assert pico.last_stroke["made"] == expected_steps(2000, new) == 749
    assert not (hw.tmp / "data" / "board.json.tmp").exists()


@pytest.mark.sr("SR-14")
def test_a_calibration_the_settings_refuse_changes_nothing(hw, monkeypatch):
    """A factor that would put a board.json rate above what the board then moves
    (more steps per mL: a lower rate cap) is refused whole: file and factor unchanged,
    the reason in ``status``."""
    cap = hw.board.rate_cap(356000)
    settings = {"steps_per_ml": 356000, "device": {"max_rate_nl_per_min": cap}}
    path = _calibration_file(hw, monkeypatch, settings)
    before = path.read_text()
    pico = make_pico(hw, **settings)
    pico.calibrate(2000, 1600)  # 25 % more steps per mL
    assert path.read_text() == before and pico.cfg["steps_per_ml"] == 356000
    assert "above the" in pico.status()["calibration"]["error"]


def test_a_calibration_that_cannot_be_written_changes_nothing(hw, monkeypatch):
    path = _calibration_file(hw, monkeypatch, {"steps_per_ml": 356000})
    pico = make_pico(hw, steps_per_ml=356000)

    def full(*a):
        raise OSError(28, "no space left")

    monkeypatch.setattr(hw.board.os, "rename", full)
    pico.calibrate(2000, 1900)
    assert json.loads(path.read_text()) == {"steps_per_ml": 356000}
    assert pico.cfg["steps_per_ml"] == 356000
    assert "not written" in pico.calibration["error"]


def test_a_bad_board_json_is_not_rewritten_by_a_calibration(hw, monkeypatch):
    """A board with a bad board.json moves nothing (every stroke a stall), so only an
    injected outcome could make a measurement: the file is not rewritten from it."""
    path = _calibration_file(hw, monkeypatch, {"steps_per_ml": 1})
    pico = make_pico(hw, steps_per_ml=1)
    assert pico.settings_error
    pico.calibrate(2000, 1900)
    assert json.loads(path.read_text()) == {"steps_per_ml": 1}
    assert "fix it first" in pico.calibration["error"]


@pytest.mark.sr("SR-4")
def test_calibrations_never_add_up_to_another_syringe(hw, monkeypatch):
    """Found by the attacker: corrections of 25 % each compounded without limit (x7.5
    after seven). The first calibration keeps the hand-set value as steps_per_ml_set;
    every later one stays within 25 % of it, and a board.json whose steps_per_ml is
    further from it is bad (set both for a new syringe)."""
    path = _calibration_file(hw, monkeypatch, {"steps_per_ml": 356000})
    pico = make_pico(hw, steps_per_ml=356000)
    pico.calibrate(2000, 1700)  # +17.6 %
    first = json.loads(path.read_text())
    assert first == {"steps_per_ml": round(712e6 / 1700), "steps_per_ml_set": 356000}
    again = make_pico(hw, **first)
    assert again.settings_error is None
    again.calibrate(2000, 1800)  # 838 steps -> 465556: 30.8 % over the hand-set value
    assert json.loads(path.read_text()) == first
    assert "steps_per_ml_set" in again.calibration["error"]
    far = make_pico(hw, steps_per_ml=460000, steps_per_ml_set=356000)
    assert "set both for a new syringe" in far.settings_error


def test_a_calibration_past_the_longest_stroke_is_refused(hw, monkeypatch):
    path = _calibration_file(hw, monkeypatch, {"steps_per_ml": 2_900_000})
    pico = make_pico(hw, steps_per_ml=2_900_000)  # 5800 steps a stroke
    pico.calibrate(2000, 1900)  # 6105 steps: more than MAX_STROKE_STEPS
    assert json.loads(path.read_text()) == {"steps_per_ml": 2_900_000}
    assert "more than 6000 steps" in pico.calibration["error"]


def test_a_calibration_starts_from_the_settings_read_at_boot(hw, monkeypatch):
    """Found by the attacker: a board.json changed on the flash since boot (a lower
    min_rise, dev 1) took effect with a calibration, without a reboot."""
    boot = {"steps_per_ml": 356000, "min_rise": 200}
    path = _calibration_file(hw, monkeypatch, boot)
    pico = make_pico(hw, **boot)
    path.write_text(json.dumps({"steps_per_ml": 356000, "min_rise": 1, "dev": 1}))
    pico.calibrate(2000, 1900)
    written = json.loads(path.read_text())
    assert written["min_rise"] == 200 and "dev" not in written
    assert pico.cfg["min_rise"] == 200 and pico.DEV is False
