"""The Pico board adapter (RP2040 Pico, RP2350 Pico 2): pins and peripherals for
``app.App`` (its docstring lists the board interface). No dosing decision lives
here (DESIGN principle 8): a stroke is moved and measured, and its outcome goes
back to the runner, which decides.

Wiring: ``board/pins.py`` (generated from ``hardware/pins.toml``).

- **Stroke**: ``STEPS_PER_ML`` steps per mL (syringe and lead screw; set by a
  gravimetric calibration, ``calibrate``) make a count-bounded PIO burst (``board/pio_step.py``)
  that stops by itself and reports the steps made. The driver is enabled only
  for the burst (EN released in a ``finally``; an external pull-up keeps it off
  while the MCU is in reset). The load cell between carriage and plunger
  (HX711) confirms it: ``stall`` when the burst stopped early (driver fault) or
  the push force did not rise by ``MIN_RISE``, ``occlusion`` when it rose by
  ``OCCLUSION_RISE`` or more, ``unknown`` when the burst overran its time or the
  sensor gave no reading. Thresholds are raw HX711 counts over the pre-stroke
  baseline; they are set on the bench (``/data/board.json``, ``check_settings``:
  a bad file is rejected whole and every stroke is then a ``stall`` without
  moving). A stroke the adapter will not move is a ``stall`` too, never
  ``unknown`` (which the controller counts as delivered). The pump rate is
  capped at what the board moves (``device_config``), and the app yields to its
  other tasks between strokes: a stroke blocks the loop for its burst.
- **RTC**: a DS3231 on I2C0 (battery-backed). Its oscillator-stop flag means the
  time is lost: ``rtc_now()`` is then None (SR-23 CLOCK_INVALID) until set.
  Resolution 1 s: ``rtc_now`` is the start of the current second. A reading
  that is not a real date is no time (``decode_time``); the app re-syncs the
  ledger's stamps to it (``app.App._check_rtc``).
- **Ticks**: ``time.ticks_ms`` wraps at 2^30 ms here; the app converts them to the
  therapy clock with ``board.ticks.TherapyClock``.
- **Battery**: ADC0 through a divider; ``battery_low()`` with hysteresis
  (``BATTERY_LOW_MV`` / ``BATTERY_OK_MV``) drives MEDIUM ``BATTERY_LOW``.
- **Annunciation**: buzzer pulse patterns and LED flash rates by IEC 60601-1-8
  priority, played from a 50 ms hardware timer (they go on in a MAINTENANCE
  boot, where no asyncio loop runs). The same timer debounces the buttons.
- **Watchdog**: ``machine.WDT`` (at most ``WDT_MAX_MS`` = 8388 ms on the
  RP2040: longer is refused); every feed also toggles HEARTBEAT, whose
  fail-safe buzzer sounds when the toggling stops. It cannot be stopped, so
  ``maintenance()`` writes ``/maintenance`` and resets into a MAINTENANCE boot:
  no dosing, no watchdog, HIGH annunciation, the REPL free for ``mpremote``.
  The flag stays until ``itbctl deploy`` removes it (a half-copied firmware
  never boots); ACK + PROVISION held 5 s at a power-on also boot into
  MAINTENANCE. ``main`` starts the watchdog before the app is made, with a
  bounded feed through the boot (``boot_watchdog``), and ``fatal`` handles a
  boot or app failure (motor off, HIGH, the watchdog resets).
- **Serial**: the USB CDC port the REPL uses (``CONSOLE``: Ctrl-C is disabled
  outside MAINTENANCE, from ``main.py``'s first line), read and written one byte
  at a time as ``select.poll`` allows, so a host that stops reading never blocks
  the loop.
- **Sleep**: never ``machine.lightsleep`` (it freezes PWM and PIO).

Bench figures still to measure are listed in the README ("What must be measured
on a real board").
"""

import asyncio
import json
import os
import select
import sys
import time

import machine
import rp2

from board import pins, pio_step
from itb import fs
from itb.drugs import DeviceConfig

FLASH_ROOT = ""  # the firmware's files: /main.py, /app.mpy, /itb/..., /board/...
DATA_DIR = "/data"
MAINTENANCE_FLAG = "/maintenance"
BOARD_CONFIG = DATA_DIR + "/board.json"

WDT_MAX_MS = 8388  # RP2040: the counter runs at 2 per us tick, 24 bits
STEP_HZ = 2000  # steps per second
STEPS_PER_ML = 356000  # 1 mL syringe (4.78 mm bore), 0.5 mm lead, 3200 steps/rev
MAX_STROKE_STEPS = 6000  # 3 s at STEP_HZ: a stroke and its sensor reads fit in half the watchdog
ENABLE_SETTLE_US = 1000  # driver enable to first step
STROKE_MARGIN_MS = 200  # a burst may run this much past its nominal time
MIN_RISE = 200  # HX711 counts: the plunger pushed
OCCLUSION_RISE = 60000  # HX711 counts: the fluid cannot leave
HX711_TIMEOUT_MS = 150  # 10 samples/s: a reading is due within 100 ms
LOOP_DUTY_PCT = 25  # strokes may take at most this share of the loop's time (F17 below)
# board.json's "device" may set the bench's geometry only (and the low-reservoir levels,
# which follow the syringe's size): a calibration file must not loosen a dose limit, a
# timeout or the volume accuracy (found by the attacker: it raised the hard maximum
# daily dose and the session timeout)
BENCH_FIELDS = ("stroke_nl", "reservoir_capacity_nl", "tubing_nl", "catheter_length_mm",
                "low_reservoir_nl", "low_reservoir_days", "max_rate_nl_per_min",
                "prime_rate_nl_per_min")
RATE_FIELDS = ("max_rate_nl_per_min", "prime_rate_nl_per_min")
STEPS_PER_ML_RANGE = (1000, 10000000)  # board.json outside these: no dosing (a typo is no dose)
CALIBRATION_SPAN_PCT = 25  # steps_per_ml stays within this of steps_per_ml_set (calibrate)
RISE_RANGE = (1, 8000000)  # HX711 counts (24-bit signed full scale)
BATTERY_LOW_MV = 4400  # 4 x NiMH at 1.1 V/cell
BATTERY_OK_MV = 4600  # hysteresis: cleared above this
ADC_FULL_MV = 3300
TICK_MS = 50  # annunciation / button timer period
DEBOUNCE_TICKS = 3  # a button counts after 150 ms in one state
PRESS_GAP_TICKS = 40  # presses of one button closer than 2 s are one request (chatter)
BUZZER_HZ = 880  # IEC 60601-1-8: fundamental 150-1000 Hz; a square wave brings harmonics
BOOT_FEED_MS = 1000  # as the health task: a heartbeat edge every 2 s (the fail-safe timer)
BOOT_BUDGET_MS = 60000  # the boot's watchdog feed ends then (the health task takes over)
GESTURE_MS = 5000  # ACK + PROVISION held this long at power-on: MAINTENANCE boot
MAINTENANCE_RESET_MS = 1500  # the maintenance answer goes out before the reset

# IEC 60601-1-8 burst patterns, in 50 ms ticks: (on, off) pairs; the last off
# is the pause before the burst repeats. HIGH: 10 pulses (3+2, 3+2); MEDIUM: 3
# pulses; LOW: 2 pulses. Pulse widths and spacing within the standard's table
# (to be checked on the bench with a sound level meter).
BUZZER_PATTERNS = {
    "high": ((3, 2), (3, 2), (3, 7), (3, 2), (3, 10), (3, 2), (3, 2), (3, 7), (3, 2), (3, 100)),
    "medium": ((4, 2), (4, 2), (4, 150)),
    "low": ((4, 2), (4, 400)),
    "gesture": ((2, 18),),  # the MAINTENANCE gesture: a 100 ms chirp each second
}
# LED (on, off) ticks: HIGH flashes at 2 Hz, MEDIUM at 0.5 Hz, LOW steady, no
# alarm a short blink every 5 s (the board is alive)
LED_PATTERNS = {"high": (5, 5), "medium": (20, 20), "low": (1, 0), None: (1, 99),
                "gesture": (2, 18)}

def reset_cause_name(cause):
    """The app's name of ``machine.reset_cause()``: ``power_on``, ``watchdog`` or
    ``reset`` (anything else)."""
    if cause == machine.PWRON_RESET:
        return "power_on"
    if cause == machine.WDT_RESET:
        return "watchdog"
    return "reset"


def bcd(v):
    return (v // 10) << 4 | v % 10


def unbcd(b):
    return (b >> 4) * 10 + (b & 0x0F)


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of the proleptic Gregorian date (integers only;
    H. Hinnant, "chrono-Compatible Low-Level Date Algorithms")."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    """(year, month, day) of day ``z`` since 1970-01-01 (inverse of the above)."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


def _bcd_ok(b):
    return (b & 0x0F) <= 9 and (b >> 4) <= 9


def decode_time(r):
    """UTC ms of the DS3231's time registers 0-6, or None unless they hold a real
    date and time as ``DS3231.set_ms`` writes them: BCD digits, 24-hour mode, no
    century bit, a day that exists in its month (leap years included)."""
    if r[2] & 0x40 or r[5] & 0x80:  # 12-hour mode, century: never written here
        return None
    regs = (r[0], r[1], r[2], r[4], r[5], r[6])
    for b in regs:
        if not _bcd_ok(b):
            return None
    sec, mnt, hour = unbcd(r[0]), unbcd(r[1]), unbcd(r[2])
    day, month, year = unbcd(r[4]), unbcd(r[5]), 2000 + unbcd(r[6])
    if not (sec < 60 and mnt < 60 and hour < 24 and 1 <= month <= 12 and day >= 1):
        return None
    first = days_from_civil(year, month, 1)
    if day > days_from_civil(year + month // 12, month % 12 + 1, 1) - first:
        return None  # 31 April, 29 February 2025: no such day
    days = first + day - 1
    return ((days * 24 + hour) * 60 + mnt) * 60000 + sec * 1000


class DS3231:
    """The battery-backed RTC (UTC, 24-hour mode, years 2000-2099)."""

    ADDR = 0x68
    STATUS = 0x0F
    OSF = 0x80  # oscillator stopped: the time is not to be trusted

    def __init__(self, i2c):
        self.i2c = i2c

    def now_ms(self):
        """UTC ms at the start of the current second, or None when the
        oscillator-stop flag is set, the chip does not answer, or the time it gives
        is not one ``set_ms`` writes (SR-23: a garbled time would move the outage
        bounds, so it is no time). Read until two reads agree (a read across a
        second's edge is read again; a bus error up to three times)."""
        for _ in range(3):  # a bus error is read again (found by the attacker)
            try:
                return self._read()
            except OSError:
                pass
        return None

    def _read(self):
        if self.i2c.readfrom_mem(self.ADDR, self.STATUS, 1)[0] & self.OSF:
            return None
        r = self.i2c.readfrom_mem(self.ADDR, 0x00, 7)
        again = self.i2c.readfrom_mem(self.ADDR, 0x00, 7)
        if again != r:
            r = again
            again = self.i2c.readfrom_mem(self.ADDR, 0x00, 7)
            if again != r:
                return None
        return decode_time(r)

    def set_ms(self, utc_ms):
        """Set the time (truncated to the second) and clear the oscillator-stop
        flag. ValueError outside 2000-2099."""
        s = utc_ms // 1000
        days, s = s // 86400, s % 86400
        y, m, d = civil_from_days(days)
        if not 2000 <= y <= 2099:
            raise ValueError("the DS3231 keeps years 2000-2099")
        dow = (days + 3) % 7 + 1  # 1 = Monday
        self.i2c.writeto_mem(self.ADDR, 0x00, bytes((
            bcd(s % 60), bcd(s // 60 % 60), bcd(s // 3600), dow, bcd(d), bcd(m), bcd(y - 2000))))
        st = self.i2c.readfrom_mem(self.ADDR, self.STATUS, 1)[0]
        self.i2c.writeto_mem(self.ADDR, self.STATUS, bytes((st & ~self.OSF & 0xFF,)))


class HX711:
    """The load-cell amplifier (channel A, gain 128), bit-banged."""

    def __init__(self, dout, sck):
        self.dout = dout
        self.sck = sck
        sck.value(0)

    def ready(self):
        return self.dout.value() == 0

    def read(self, timeout_ms=HX711_TIMEOUT_MS):
        """Signed 24-bit reading, or None when no conversion is ready in time."""
        start = time.ticks_ms()
        while not self.ready():
            if time.ticks_diff(time.ticks_ms(), start) >= timeout_ms:
                return None
            time.sleep_ms(1)
        v = 0
        state = machine.disable_irq()  # SCK high for over 60 us powers the HX711 down
        try:
            for _ in range(24):
                self.sck.value(1)
                self.sck.value(0)
                v = v << 1 | self.dout.value()
            self.sck.value(1)  # 25th pulse: channel A, gain 128 next
            self.sck.value(0)
        finally:
            machine.enable_irq(state)
        return v - 0x1000000 if v & 0x800000 else v


class StepBurst:
    """PIO state machine 0 running ``pio_step.step_burst``."""

    def __init__(self, step, diag, hz=STEP_HZ, sm_id=0):
        self.step = step
        self.diag = diag
        self.hz = hz
        self.sm = rp2.StateMachine(sm_id)
        self._init()

    def _init(self):
        # (re)initialising a state machine clears both FIFOs and restarts the program
        self.sm.init(pio_step.step_burst, freq=self.hz * pio_step.CYCLES_PER_STEP,
                     set_base=self.step, jmp_pin=self.diag)
        self.sm.active(1)

    def start(self, steps):
        """Start a burst; False (nothing started) unless the machine is idle with
        both FIFOs empty: a stale word would add a burst or end this one early."""
        if self.sm.tx_fifo() or self.sm.rx_fifo():
            self.abort()
            return False
        self.sm.put(steps - 1)
        return True

    def done(self):
        return self.sm.rx_fifo() > 0

    def made(self, steps):
        return pio_step.steps_made(steps, self.sm.get())

    def abort(self):
        """Stop a burst that overran: the STEP pin low, the machine re-initialised
        (both FIFOs empty: a word it never pulled cannot run later)."""
        self.sm.active(0)
        self.sm.exec("set(pins, 0)")
        self._init()


class Annunciator:
    """Buzzer patterns and LED rates by priority, and button debouncing, from
    one periodic timer (no allocation in its callback)."""

    def __init__(self, buzzer, led, buttons):
        self.buzzer = buzzer
        self.led = led
        buzzer.freq(BUZZER_HZ)
        buzzer.duty_u16(0)
        led.freq(1000)
        # [[name, pin, active, state, count, presses, armed, since]]: a button starts in
        # the state its pin shows, and counts presses only after it was seen released
        # (one held through a reset, or stuck, is no press), and at most one per
        # PRESS_GAP_TICKS (a chattering contact or a fidgeting hand is one request: each
        # press is a logged command; found by the attacker)
        self.buttons = buttons
        for b in buttons:
            b[3] = 1 if b[1].value() == b[2] else 0
            b[6] = 1 - b[3]
            b[7] = PRESS_GAP_TICKS
        self.level = None
        self.pattern = None
        self.pos = 0
        self.left = 0
        self.on = 0
        self.led_pat = LED_PATTERNS[None]
        self.led_left = 0
        self.led_on = 0
        self.timer = machine.Timer(-1, mode=machine.Timer.PERIODIC, period=TICK_MS,
                                   callback=self.tick)

    def set(self, level):
        # the counters first, the patterns last: a tick in between sees a consistent state
        self.pos = 0
        self.left = 0
        self.on = 0
        self.led_left = 0
        self.led_on = 0
        self.level = level
        self.led_pat = LED_PATTERNS[level]
        self.pattern = BUZZER_PATTERNS.get(level)

    def tick(self, _t=None):
        p = self.pattern
        if p is None:
            self.buzzer.duty_u16(0)
        else:
            if self.left <= 0:
                if self.on:
                    self.on = 0
                    self.left = p[self.pos][1]
                    self.pos = (self.pos + 1) % len(p)
                else:
                    self.on = 1
                    self.left = p[self.pos][0]
                self.buzzer.duty_u16(32768 if self.on else 0)
            self.left -= 1
        if self.led_left <= 0:
            self.led_on = 0 if self.led_on and self.led_pat[1] else 1
            self.led_left = self.led_pat[0] if self.led_on else self.led_pat[1]
            self.led.duty_u16(65535 if self.led_on else 0)
        self.led_left -= 1
        for b in self.buttons:
            if b[7] < PRESS_GAP_TICKS:
                b[7] += 1
            down = 1 if b[1].value() == b[2] else 0
            if down == b[3]:
                b[4] = 0
            else:
                b[4] += 1
                if b[4] >= DEBOUNCE_TICKS:
                    b[3] = down
                    b[4] = 0
                    if down and b[6] and b[7] >= PRESS_GAP_TICKS:
                        b[5] += 1
                        b[7] = 0
                    if not down:
                        b[6] = 1  # released once: the next press counts


class Watchdog:
    """``machine.WDT``; each feed toggles the fail-safe buzzer's heartbeat."""

    def __init__(self, timeout_ms, heartbeat):
        self.wdt = machine.WDT(timeout=timeout_ms)
        self.timeout_ms = timeout_ms
        self.heartbeat = heartbeat

    def feed(self):
        self.wdt.feed()
        self.heartbeat.toggle()


class UsbSerial:
    """The protocol on the USB CDC port (``sys.stdin.buffer`` / ``sys.stdout.buffer``,
    never text-mode stdin). Reads and writes only what ``select.poll`` says is
    ready, so a host that stops reading never blocks the loop (the app's write
    timeout then drops the answer)."""

    CHUNK = 1  # rp2 says "writable" when any space is free; a longer write can block
    YIELD_EVERY = 64  # bytes between turns of the loop

    def __init__(self, stdin=None, stdout=None):
        self.rx = stdin or sys.stdin.buffer
        self.tx = stdout or sys.stdout.buffer
        self.rpoll = select.poll()
        self.rpoll.register(self.rx, select.POLLIN)
        self.wpoll = select.poll()
        self.wpoll.register(self.tx, select.POLLOUT)
        self.buf = bytearray(256)

    async def read(self):
        while True:
            n = 0
            while n < len(self.buf) and self.rpoll.poll(0):
                b = self.rx.read(1)
                if not b:
                    break
                self.buf[n] = b[0]
                n += 1
            if n:
                return bytes(self.buf[:n])
            await asyncio.sleep(0.002)

    async def write(self, data):
        mv = memoryview(data)
        i = 0
        while i < len(mv):
            if self.wpoll.poll(0):
                n = self.tx.write(mv[i:i + self.CHUNK])
                i += n if n else 0
                if i % self.YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            else:
                await asyncio.sleep(0.001)


def _read_json(path):
    """The settings object in ``path``: {} when there is no file, False when the file
    is not a JSON object (a torn or garbled calibration: see ``check_settings``)."""
    try:
        f = open(path)
    except OSError:
        return {}
    try:
        got = json.loads(f.read())
    except ValueError:
        return False
    finally:
        f.close()
    return got if type(got) is dict else False


def check_settings(settings):
    """``(cfg, error)``: the board settings (``/data/board.json``) over the defaults,
    or the defaults and a message when the file is bad. Bad means not an object, an
    unknown key, a value that is not an integer in its range, or ``min_rise`` not
    below ``occlusion_rise``: rejected whole, never half-applied, and the board then
    does not dose (a wrong calibration is a wrong dose; see ``Pico.stroke``)."""
    cfg = {"steps_per_ml": STEPS_PER_ML, "min_rise": MIN_RISE,
           "occlusion_rise": OCCLUSION_RISE, "dev": 0, "device": {}}
    ranges = {"steps_per_ml": STEPS_PER_ML_RANGE, "min_rise": RISE_RANGE,
              "occlusion_rise": RISE_RANGE, "dev": (0, 1),
              "steps_per_ml_set": STEPS_PER_ML_RANGE}
    if type(settings) is not dict:
        return cfg, "board.json is not a JSON object"
    got = {}
    for k in settings:
        v = settings[k]
        if k == "device":  # the bench's geometry (itb.drugs.CONFIG_FIELDS), nothing else
            if type(v) is not dict:
                return cfg, "board.json: device must be an object"
            for f in v:
                if f not in BENCH_FIELDS:
                    return cfg, ("board.json: device: %s is not a bench setting (only %s)"
                                 % (f, ", ".join(BENCH_FIELDS)))
            try:
                DeviceConfig(v)
            except ValueError as e:
                return cfg, "board.json: device: %s" % e
            got[k] = v
            continue
        if k not in ranges:
            return cfg, "board.json: unknown setting %s" % k
        lo, hi = ranges[k]
        if type(v) is not int or not lo <= v <= hi:
            return cfg, "board.json: %s must be an integer %d..%d" % (k, lo, hi)
        got[k] = v
    for k in got:
        cfg[k] = got[k]
    if cfg["min_rise"] >= cfg["occlusion_rise"]:
        return check_settings({})[0], "board.json: min_rise must be below occlusion_rise"
    base = got.get("steps_per_ml_set")
    if base is not None and abs(cfg["steps_per_ml"] - base) * 100 > CALIBRATION_SPAN_PCT * base:
        # calibrations correct a syringe; they never add up to another one (found by the
        # attacker: repeated corrections of 25 % each compounded without limit)
        return check_settings({})[0], ("board.json: steps_per_ml more than %d %% from"
                                       " steps_per_ml_set (the value set by hand that"
                                       " calibrations correct): set both for a new syringe"
                                       % CALIBRATION_SPAN_PCT)
    cap = rate_cap(cfg["steps_per_ml"])
    for k in RATE_FIELDS:
        if cfg["device"].get(k, 0) > cap:  # refused, never clamped
            return check_settings({})[0], ("board.json: device: %s above the %d nL/min this"
                                           " board moves" % (k, cap))
    return cfg, None


def rate_cap(steps_per_ml):
    """The highest pump rate (nL/min, whole uL) the board keeps up with: strokes may
    take ``LOOP_DUTY_PCT`` of the loop's time, half of a stroke's time being its
    sensor reads (found by the attacker: 1 mL/min made the runner fall behind past
    the watchdog)."""
    motion_nl_per_min = STEP_HZ * 60 * 1000000 // steps_per_ml
    return motion_nl_per_min * LOOP_DUTY_PCT // 100 // 2 // 1000 * 1000


class Pico:
    """The board interface of ``app.App`` on a Pico (see ``app.py``)."""

    DEV = False
    CONSOLE = True  # the protocol shares USB CDC with the REPL
    WATCHDOG_MS = 8000

    def __init__(self, settings=None):
        p = machine.Pin
        self.en = p(pins.EN_N, p.OUT, value=1 - pins.EN_N_ACTIVE)  # motor off first
        self.dir = p(pins.DIR, p.OUT, value=0)
        self.heartbeat = p(pins.HEARTBEAT, p.OUT, value=0)
        self.empty = self._input(pins.EMPTY_SWITCH, pins.EMPTY_SWITCH_PULL)
        self.cfg, self.settings_error = check_settings({} if settings is None else settings)
        # board.json as read at boot (calibrate starts from it)
        self.settings = settings if type(settings) is dict else {}
        self.DEV = bool(self.cfg["dev"])
        self.wdt = None
        self._boot_feed = None
        self.burst = StepBurst(p(pins.STEP, p.OUT, value=0), self._input(pins.DIAG, pins.DIAG_PULL))
        self.hx = HX711(p(pins.HX711_DOUT, p.IN), p(pins.HX711_SCK, p.OUT, value=0))
        self.rtc = DS3231(machine.I2C(pins.I2C_ID, sda=p(pins.I2C_SDA), scl=p(pins.I2C_SCL),
                                      freq=pins.I2C_FREQ_HZ))
        self.battery_adc = machine.ADC(pins.BATTERY_ADC)
        self.vsys_adc = machine.ADC(pins.VSYS_ADC)
        self.battery_is_low = False
        self.buttons = [
            [name, self._input(gpio, pull), active, 0, 0, 0, 0, 0]
            for name, gpio, pull, active in (
                ("ack", pins.BTN_ACK, pins.BTN_ACK_PULL, pins.BTN_ACK_ACTIVE),
                ("bolus", pins.BTN_BOLUS, pins.BTN_BOLUS_PULL, pins.BTN_BOLUS_ACTIVE),
                ("provision", pins.BTN_PROVISION, pins.BTN_PROVISION_PULL,
                 pins.BTN_PROVISION_ACTIVE))]
        self.ann = Annunciator(machine.PWM(p(pins.BUZZER)), machine.PWM(p(pins.LED)), self.buttons)
        self.serial: "UsbSerial | None" = None
        self.fault = "ok"
        self.fault_count = 0
        self.switch_override = None
        self.last_stroke = None
        self.fs = None
        self._cause = reset_cause_name(machine.reset_cause())
        self._reset_timer = None
        self.calibration = None  # the last calibrate(): what it set, or why it did not

    def _input(self, gpio, pull):
        p = machine.Pin
        if pull == "up":
            return p(gpio, p.IN, p.PULL_UP)
        if pull == "down":
            return p(gpio, p.IN, p.PULL_DOWN)
        return p(gpio, p.IN)

    def mount(self):
        """The store's file system: ``/data`` on the board's littlefs."""
        self.fs = fs.DirFS(DATA_DIR)
        return self.fs

    # ------------------------------------------------------------------ motor
    def stroke(self, n, volume_nl, now):
        """Move one stroke of ``volume_nl`` and say how it went (``ok``, ``stall``,
        ``occlusion``, ``unknown``). The driver is released however it ends."""
        if self.fault_count > 0:  # dev builds (bench HIL): an injected outcome
            self.fault_count -= 1
            while self.fault == "hang":  # a stuck stroke: only the watchdog gets out
                time.sleep_ms(100)
            return self.fault
        steps = (volume_nl * self.cfg["steps_per_ml"] + 500000) // 1000000
        if self.settings_error or not 1 <= steps <= MAX_STROKE_STEPS:
            # a configuration error: nothing moves, and the runner must hear "stall"
            # (not delivered, HIGH MOTOR_STALL), never "unknown" (maybe delivered)
            self.last_stroke = {"n": n, "steps": steps, "res": "stall",
                                "error": self.settings_error or "steps out of 1..%d"
                                % MAX_STROKE_STEPS}
            return "stall"
        base = self.hx.read()
        peak = base
        overran = False
        self.dir.value(1)
        self.en.value(pins.EN_N_ACTIVE)
        try:
            time.sleep_us(ENABLE_SETTLE_US)
            start = time.ticks_ms()
            limit = steps * 1000 // STEP_HZ + STROKE_MARGIN_MS
            if not self.burst.start(steps):  # the state machine was not idle: no move
                self.last_stroke = {"n": n, "steps": steps, "made": 0, "res": "stall",
                                    "error": "step machine not idle"}
                return "stall"
            while not self.burst.done():
                if time.ticks_diff(time.ticks_ms(), start) > limit:
                    overran = True
                    self.burst.abort()
                    break
                if self.hx.ready():
                    v = self.hx.read(0)
                    if v is not None and (peak is None or v > peak):
                        peak = v
                time.sleep_ms(1)
            made = -1 if overran else self.burst.made(steps)
        finally:
            self.en.value(1 - pins.EN_N_ACTIVE)  # released after every stroke
        after = self.hx.read()
        if after is None:
            peak = None  # the sensor stopped answering during the stroke: unconfirmed
        elif peak is None or after > peak:
            peak = after
        res = classify(steps, made, base, peak, self.cfg["min_rise"], self.cfg["occlusion_rise"])
        self.last_stroke = {"n": n, "steps": steps, "made": made, "base": base, "peak": peak,
                            "res": res}
        return res

    def empty_switch(self):
        if self.switch_override is not None:
            return self.switch_override
        return self.empty.value() == pins.EMPTY_SWITCH_ACTIVE

    def inject(self, fault, count, switch):
        """Dev builds only (``"dev": 1`` in ``/data/board.json``), for HIL runs on a
        bench board: the next ``count`` strokes report ``fault`` without moving
        (``hang``: never return); ``switch`` 0/1 overrides the empty switch, 2
        leaves it."""
        self.fault = fault
        self.fault_count = count
        if switch != 2:
            self.switch_override = bool(switch)

    # ------------------------------------------------------------------ power
    def battery_mv(self):
        top, bottom = pins.BATTERY_ADC_DIVIDER
        return _adc_mv(self.battery_adc) * (top + bottom) // bottom

    def supply_mv(self):
        top, bottom = pins.VSYS_ADC_DIVIDER
        return _adc_mv(self.vsys_adc) * (top + bottom) // bottom

    def battery_low(self):
        """True below ``BATTERY_LOW_MV`` until the battery is back over
        ``BATTERY_OK_MV`` (hysteresis: no alarm chatter)."""
        mv = self.battery_mv()
        if mv < BATTERY_LOW_MV:
            self.battery_is_low = True
        elif mv > BATTERY_OK_MV:
            self.battery_is_low = False
        return self.battery_is_low

    # ------------------------------------------------------------------ clocks
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def rtc_now(self):
        return self.rtc.now_ms()

    def rtc_set(self, utc_ms):
        self.rtc.set_ms(utc_ms)

    def rtc_skew(self, ms):
        now = self.rtc.now_ms()
        if now is not None:
            self.rtc.set_ms(now + ms)

    # ------------------------------------------------------------------ people
    def provisioning(self):
        return self.buttons[2][3] == 1

    def button_presses(self):
        """Names of the buttons pressed since the last call (``ack``, ``bolus``)."""
        out = []
        for b in self.buttons[:2]:
            while b[5] > 0:
                b[5] -= 1
                out.append(b[0])
        return out

    def annunciate(self, level):
        self.ann.set(level)

    # ------------------------------------------------------------------ system
    def reset_cause(self):
        return self._cause

    def random(self, n):
        return os.urandom(n)

    def device_id(self):
        return "".join(["%02x" % b for b in machine.unique_id()])

    def manifest(self):
        from itb import manifest

        return manifest.digest(FLASH_ROOT, _listdir, fs.isdir, fs.size)

    def watchdog(self, timeout_ms):
        """The watchdog, started at ``timeout_ms`` (``main`` starts it before
        anything can fail, at ``WATCHDOG_MS``; the app's health task takes it here).
        ValueError unless 1 <= timeout_ms <= 8388 (RP2040)."""
        if type(timeout_ms) is not int or not 1 <= timeout_ms <= WDT_MAX_MS:
            raise ValueError("watchdog timeout must be 1..%d ms (RP2040), not %r"
                             % (WDT_MAX_MS, timeout_ms))
        self.end_boot_feed()  # the health task feeds from here on
        if self.wdt is None or self.wdt.timeout_ms != timeout_ms:
            self.wdt = Watchdog(timeout_ms, self.heartbeat)
        return self.wdt

    def boot_watchdog(self):
        """SR-27 during the boot: the watchdog starts now, and a timer feeds it for at
        most ``BOOT_BUDGET_MS`` until the app's health task takes it (store recovery
        on a Pico may outlast one timeout: found by the attacker). A boot that takes
        longer, or hangs, is reset and counts toward SAFE."""
        wdt = self.watchdog(self.WATCHDOG_MS)
        start = time.ticks_ms()

        def feed(_t):
            if time.ticks_diff(time.ticks_ms(), start) < BOOT_BUDGET_MS:
                wdt.feed()

        self._boot_feed = machine.Timer(-1, mode=machine.Timer.PERIODIC,
                                        period=BOOT_FEED_MS, callback=feed)

    def end_boot_feed(self):
        if self._boot_feed is not None:
            self._boot_feed.deinit()
            self._boot_feed = None

    def device_config(self):
        """The controller configuration for a new store: board.json's ``device``
        (a 1 mL bench syringe, the bench tubing), with the pump rates defaulting to
        ``rate_cap``, the most the board keeps up with (a stroke blocks the loop)."""
        out = dict(self.cfg["device"])
        for k in RATE_FIELDS:  # a higher rate in board.json was refused (check_settings)
            out.setdefault(k, rate_cap(self.cfg["steps_per_ml"]))
        return out

    def calibrate(self, stroke_nl, measured_nl):
        """A confirmed ``set_calibration`` (the runner calls it): strokes of
        ``stroke_nl`` moved ``steps`` steps and delivered ``measured_nl`` each, by
        weight, so the syringe takes ``steps x 10^6 / measured_nl`` steps per mL
        (rounded), within ``CALIBRATION_SPAN_PCT`` of ``steps_per_ml_set`` (the value
        set by hand, kept in board.json from the first calibration on: corrections
        never add up to another syringe). board.json is rewritten from the settings
        read at boot with it (a temporary file, then a rename: a power cut leaves the
        old file or the new one, whole) and the new value holds from the next stroke.
        A stroke of more than ``MAX_STROKE_STEPS``, a result that ``check_settings``
        refuses (out of range or of span, a device rate above the new ``rate_cap``),
        or a write that fails changes nothing; ``status`` says so in
        ``calibration.error``."""
        old = self.cfg["steps_per_ml"]
        steps = (stroke_nl * old + 500000) // 1000000
        new = (steps * 2000000 + measured_nl) // (2 * measured_nl)
        self.calibration = {"stroke_nl": stroke_nl, "measured_nl": measured_nl,
                            "steps_per_ml_was": old, "steps_per_ml": new}
        cfg = self.cfg
        settings = self.settings
        if self.settings_error:
            # its strokes do not move (only injected outcomes end ok): not rewritten
            error = "board.json is bad (%s): fix it first" % self.settings_error
        elif (stroke_nl * new + 500000) // 1000000 > MAX_STROKE_STEPS:
            error = "a stroke would take more than %d steps" % MAX_STROKE_STEPS
        else:
            # from the settings in effect (read at boot), never from a file changed since
            settings = dict(settings)
            settings.setdefault("steps_per_ml_set", old)
            settings["steps_per_ml"] = new
            cfg, error = check_settings(settings)
        if error is None:
            try:
                f = open(BOARD_CONFIG + ".tmp", "w")
                try:
                    f.write(json.dumps(settings))
                finally:
                    f.close()
                os.rename(BOARD_CONFIG + ".tmp", BOARD_CONFIG)
            except OSError as e:
                error = "board.json not written: %s" % e
        if error is not None:
            self.calibration["error"] = error
            self.calibration["steps_per_ml"] = old
            return
        self.cfg = cfg
        self.settings = settings

    def maintenance(self):
        """SR-27: a Pico watchdog cannot stop, so MAINTENANCE is a boot of its own:
        the flag file, then a reset once the answer has gone out."""
        f = open(MAINTENANCE_FLAG, "w")
        try:
            f.write("deploy\n")
        finally:
            f.close()
        self.annunciate("high")
        self._reset_timer = machine.Timer(-1, mode=machine.Timer.ONE_SHOT,
                                          period=MAINTENANCE_RESET_MS,
                                          callback=lambda t: machine.reset())

    def status(self):
        """Board figures for ``status`` (mV, the last stroke's measurement, the
        settings in effect and a board.json problem)."""
        return {"battery_mv": self.battery_mv(), "supply_mv": self.supply_mv(),
                "last_stroke": self.last_stroke, "settings_error": self.settings_error,
                "calibration": self.calibration,
                "held": [b[0] for b in self.buttons if b[3]],  # a stuck button shows here
                "settings": {"steps_per_ml": self.cfg["steps_per_ml"],
                             "steps_per_ml_set": self.settings.get("steps_per_ml_set"),
                             "min_rise": self.cfg["min_rise"],
                             "occlusion_rise": self.cfg["occlusion_rise"], "dev": self.cfg["dev"]}}


def classify(steps, made, base, peak, min_rise, occlusion_rise):
    """A stroke's outcome from its measurement: ``made`` steps of ``steps`` (-1:
    the burst overran its time), load-cell counts before (``base``) and at most
    during and after (``peak``; None: no reading)."""
    if made < 0 or base is None or peak is None:
        return "unknown"
    if made < steps:
        return "stall"
    rise = peak - base
    if rise >= occlusion_rise:
        return "occlusion"
    if rise < min_rise:
        return "stall"
    return "ok"


def _adc_mv(adc):
    total = 0
    for _ in range(8):
        total += adc.read_u16()
    return total // 8 * ADC_FULL_MV // 65535


def _listdir(path):
    return os.listdir(path or "/")  # "": the flash root


def _both_held(board):
    held = 0
    for b in board.buttons:  # read the pins themselves (no debounced state yet)
        if b[0] in ("ack", "provision") and b[1].value() == b[2]:
            held += 1
    return held == 2


def maintenance_boot(board):
    """True when this boot is a MAINTENANCE boot: the flag file exists (a deploy is
    under way), or, at a power-on only, ACK and PROVISION held together for
    ``GESTURE_MS`` with a chirp each second (a deliberate act: a reset, a watchdog
    reset or a brief press never stops a pump; found by the attacker)."""
    if fs.exists(MAINTENANCE_FLAG):
        return True
    if board.reset_cause() != "power_on" or not _both_held(board):
        return False
    start = time.ticks_ms()
    board.annunciate("gesture")  # a chirp each second while both are held
    while _both_held(board):
        if time.ticks_diff(time.ticks_ms(), start) >= GESTURE_MS:
            return True
        time.sleep_ms(50)
    board.annunciate(None)
    return False


def run_maintenance(board):
    """SR-27 MAINTENANCE boot: motor off, no watchdog, HIGH annunciation from the
    timer, the REPL free (returns to it); the boot-loop count starts afresh."""
    from app import clear_boots

    import micropython

    board.en.value(1 - pins.EN_N_ACTIVE)
    board.annunciate("high")
    clear_boots(board.mount())
    print("ITB MAINTENANCE: not dosing. Deploy with itbctl deploy, or remove /maintenance "
          "and reset to leave.")
    micropython.kbd_intr(3)  # the REPL is mpremote's now


def main(settings=None):
    """Boot (SR-27): MAINTENANCE, or the app with the watchdog. ``settings``: the
    board settings (None: read ``BOARD_CONFIG``). Ctrl-C is off from the start
    (``main.py`` turns it off before any import). The watchdog starts as soon as
    this is known not to be a MAINTENANCE boot, so any failure after that (a
    store that cannot be read, a bug) resets the board and counts toward SAFE;
    a failure before it starts one."""
    import micropython

    micropython.kbd_intr(-1)  # a 0x03 on USB is data, not Ctrl-C (booting too)
    board = None
    try:
        board = Pico(_read_json(BOARD_CONFIG) if settings is None else settings)
        if maintenance_boot(board):
            run_maintenance(board)
            return board
        board.boot_watchdog()
        from app import App

        board.mount()
        app = App(board, board.device_config())
        board.serial = UsbSerial()
        asyncio.run(app.run())
    except Exception as e:
        fatal(board, e)
        raise
    return board  # pragma: no cover - app.run() returns only by an exception


def fatal(board, e):
    """The boot or the app failed: motor off, HIGH annunciation, and a watchdog
    running (the board resets and the boot-loop counter decides, SR-27)."""
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)
    if board is None:
        machine.Pin(pins.EN_N, machine.Pin.OUT, value=1 - pins.EN_N_ACTIVE)
        machine.WDT(timeout=WDT_MAX_MS)
        return
    board.en.value(1 - pins.EN_N_ACTIVE)
    board.annunciate("high")
    board.end_boot_feed()  # a failed boot resets now, not at the end of its budget
    if board.wdt is None:
        board.watchdog(Pico.WATCHDOG_MS)
