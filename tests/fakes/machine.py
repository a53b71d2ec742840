"""A recording fake of MicroPython's ``machine`` module for host tests of
``firmware/board/rp2.py``. Written in the MicroPython subset: CPython tests put
it in ``sys.modules``; the unix port finds it on ``MICROPYPATH`` (its own
``machine`` is extensible, so a file of that name wins).

What it models: pin levels (outputs as written, inputs as pulled or driven by a
test or a device), listeners on pin writes (device models: the HX711, a driver
fault after N steps), PWM duty, I2C devices by address, ADC readings by GPIO,
the watchdog (the RP2040's 8388 ms limit), timers fired by hand, resets.
``LOG`` records activity as tuples; ``reset_state()`` starts afresh.
"""

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
WDT_MAX_MS = 8388

LOG = []
PINS = {}  # gpio -> Pin
DEVICES = {}  # I2C address -> object with readfrom_mem(reg, n) / writeto_mem(reg, data)
ADC_VALUES = {}  # gpio -> raw 16-bit reading
TIMERS = []
CAUSE = [PWRON_RESET]
IRQ_STATE = [1]


class Reset(Exception):
    """machine.reset() was called (a real board would restart here)."""


def reset_state():
    del LOG[:]
    PINS.clear()
    DEVICES.clear()
    ADC_VALUES.clear()
    del TIMERS[:]
    CAUSE[0] = PWRON_RESET
    IRQ_STATE[0] = 1


def reset_cause():
    return CAUSE[0]


def reset():
    LOG.append(("reset",))
    raise Reset()


def unique_id():
    return b"\xe6\x61\x38\x52\x83\x47\x2a\x2f"


def disable_irq():
    IRQ_STATE[0] = 0
    return 1


def enable_irq(state):
    IRQ_STATE[0] = state


def _gpio(pin):
    return pin.id if isinstance(pin, Pin) else pin


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.mode = mode
        self.pull = pull
        self.level = 0
        self.driven = None  # an input's level set by a test or a device
        self.listeners = []  # f(pin, level) on every write
        self.writes = 0
        old = PINS.get(id)
        if old is not None:  # the same GPIO again: keep what drives it
            self.driven = old.driven
            self.listeners = old.listeners
        PINS[id] = self
        if value is not None:
            self.value(value)
        LOG.append(("pin_init", id, mode, pull))

    def value(self, v=None):
        if v is None:
            if self.mode == Pin.OUT:
                return self.level
            if self.driven is not None:
                return self.driven
            return 1 if self.pull == Pin.PULL_UP else 0
        self.level = 1 if v else 0
        self.writes += 1
        for f in self.listeners:
            f(self, self.level)
        return None

    def toggle(self):
        self.value(1 - self.level)

    def __call__(self, v=None):
        return self.value(v)


def drive(gpio, level):
    """A test or device drives input ``gpio`` (None: released to its pull)."""
    pin = PINS.get(gpio)
    if pin is None:
        pin = Pin(gpio, Pin.IN)
    pin.driven = level


def listen(gpio, f):
    pin = PINS.get(gpio)
    if pin is None:
        pin = Pin(gpio, Pin.IN)
    pin.listeners.append(f)


class PWM:
    def __init__(self, pin):
        self.gpio = _gpio(pin)
        self._freq = 0
        self._duty = 0

    def freq(self, hz=None):
        if hz is None:
            return self._freq
        self._freq = hz
        LOG.append(("pwm_freq", self.gpio, hz))
        return None

    def duty_u16(self, v=None):
        if v is None:
            return self._duty
        if v != self._duty:
            LOG.append(("pwm_duty", self.gpio, v))
        self._duty = v
        return None

    def deinit(self):
        self._duty = 0


class I2C:
    def __init__(self, id, sda=None, scl=None, freq=400000):
        self.bus = id
        self.sda = _gpio(sda)
        self.scl = _gpio(scl)
        self.freq = freq
        LOG.append(("i2c_init", id, self.sda, self.scl, freq))

    def _dev(self, addr):
        dev = DEVICES.get(addr)
        if dev is None:
            raise OSError(19)  # ENODEV: no acknowledge
        return dev

    def readfrom_mem(self, addr, reg, n):
        LOG.append(("i2c_read", addr, reg, n))
        return self._dev(addr).readfrom_mem(reg, n)

    def writeto_mem(self, addr, reg, data):
        LOG.append(("i2c_write", addr, reg, bytes(data)))
        self._dev(addr).writeto_mem(reg, data)


class ADC:
    def __init__(self, pin):
        self.gpio = _gpio(pin)
        if self.gpio < 26:  # ADC(n) with n < 4 names channel n (GP26 + n)
            self.gpio = self.gpio + 26 if self.gpio < 4 else self.gpio

    def read_u16(self):
        return ADC_VALUES.get(self.gpio, 0)


class WDT:
    def __init__(self, id=0, timeout=5000):
        if timeout > WDT_MAX_MS:
            raise ValueError("timeout exceeds %d ms" % WDT_MAX_MS)
        self.timeout = timeout
        LOG.append(("wdt_start", timeout))

    def feed(self):
        LOG.append(("wdt_feed",))


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, mode=1, period=-1, callback=None, freq=-1):  # noqa: A002
        self.mode = mode
        self.period = period
        self.callback = callback
        self.active = True
        TIMERS.append(self)
        LOG.append(("timer", mode, period))

    def fire(self):
        """Run the callback once, as the timer's interrupt would."""
        if self.active:
            if self.mode == Timer.ONE_SHOT:
                self.active = False
            self.callback(self)

    def deinit(self):
        self.active = False


def fire_timers(times=1):
    """Fire every active timer ``times`` times (periodic time passing)."""
    for _ in range(times):
        for t in list(TIMERS):
            t.fire()
