"""The therapy clock from a wrapping millisecond tick counter (DESIGN principle 4).

MicroPython's ``time.ticks_ms()`` wraps: at 2^30 ms (about 12.4 days) on the
RP2040, and ``time.ticks_diff(a, b)`` is only meaningful while the two readings
are less than half a period (2^29 ms, about 6.2 days) apart. The controller needs
a therapy clock that never wraps and never goes backwards (SR-23), so the board
adapters read ticks through ``TherapyClock`` and hand the runner its ``now``.

``read()`` must be called at least once every ``MAX_READ_GAP_MS``; the runner's
wake-ups (heartbeat every 15 min, SR-23) are far inside it. A gap between
``MAX_READ_GAP_MS`` and half a period is detected: ``read()`` raises
``ValueError`` and keeps raising (the clock is latched failed) rather than guess;
the board resets and boots with the outage bounds of SR-23. A gap of a whole
period or more aliases to a small step and cannot be seen from ticks alone: the
watchdog (8.4 s on the RP2040) and the RTC cross-check at boot cover it.
"""

MAX_READ_GAP_MS = 1 << 28  # a quarter of the RP2040 period: margin inside 2^29


class TherapyClock:
    """Therapy time (ms, int, never decreasing) from ``ticks_ms()`` and
    ``ticks_diff(a, b)`` (MicroPython ``time`` semantics, any period).

    ``base_ms`` is the therapy time at construction: 0 on the first boot, or the
    last therapy time plus the outage's lower bound after a reset (SR-23)."""

    def __init__(self, ticks_ms, ticks_diff, base_ms=0):
        if type(base_ms) is not int or base_ms < 0:
            raise ValueError("base_ms must be a non-negative integer")
        self._ticks_ms = ticks_ms
        self._ticks_diff = ticks_diff
        self._last = ticks_ms()
        self.now_ms = base_ms
        self.failed = 0

    def read(self):
        """The therapy time now, in ms. Raises ValueError if the ticks moved
        backwards or more than ``MAX_READ_GAP_MS`` since the last read, and on
        every read after that (latched until a new clock is made at boot)."""
        if self.failed:
            raise ValueError("therapy clock failed earlier: reboot")
        t = self._ticks_ms()
        d = self._ticks_diff(t, self._last)
        if d < 0 or d > MAX_READ_GAP_MS:
            self.failed = 1
            raise ValueError("ticks moved %d ms since the last read (limit 0..%d)"
                             % (d, MAX_READ_GAP_MS))
        self._last = t
        self.now_ms += d
        return self.now_ms
