"""Stroke accumulator and wake-up timing (SR-12; DESIGN "Delivery model").

Owed basal volume accrues at the programmed volume rate and is kept in exact
integer units: 1 nL = ``86400 x K`` units, K = ``DeviceConfig.volume_scale`` (a
multiple of 1000 and of every library concentration). A daily dose ``D`` ng/day at
concentration ``c`` µg/mL accrues ``D x K / c`` units per ms; a volume rate ``r``
nL/day accrues ``r x K / 1000`` units per ms; one stroke is ``stroke_nl x 86400 x K``.

SR-12 (no catch-up): the owed volume never exceeds one stroke plus less than one
millisecond of accrual (the residue of rounding wake-up times to whole ms, kept
so delivery does not drift below the programmed volume). While a stroke is
withheld (cap hold, fault, empty) the owed volume is held at exactly one stroke;
missed delivery is dropped, never made up.
"""

from itb.units import ceil_div


class Accumulator:
    """Owed-volume accumulator. ``owed`` units at time ``t``; ``inc`` units/ms."""

    def __init__(self, stroke_nl, volume_scale):
        self.k = volume_scale
        self.thr = stroke_nl * 86400 * volume_scale
        self.owed = 0
        self.t = 0
        self.inc = 0

    def copy(self):
        a = Accumulator(1, self.k)
        a.thr = self.thr
        a.owed = self.owed
        a.t = self.t
        a.inc = self.inc
        return a

    def inc_for_dose(self, rate_ng_per_day, concentration_ug_per_ml):
        """Accrual per ms for a daily-dose rate at a tip concentration (SR-21)."""
        if concentration_ug_per_ml <= 0 or rate_ng_per_day <= 0:
            return 0
        return rate_ng_per_day * self.k // concentration_ug_per_ml

    def inc_for_volume(self, rate_nl_per_day):
        """Accrual per ms for a volume rate in nL/day (SR-18 minimum rate)."""
        return rate_nl_per_day * self.k // 1000

    def owed_at(self, now):
        o = self.owed + self.inc * (now - self.t)
        cap = self.thr + (self.inc - 1 if self.inc > 0 else 0)
        return o if o < cap else cap

    def set_rate(self, now, inc):
        """Change the accrual rate at ``now`` (owed so far is kept)."""
        self.owed = self.owed_at(now)
        self.t = now
        self.inc = inc

    def reset(self, now):
        """Drop owed volume (an interruption starts: nothing is made up, SR-12)."""
        self.owed = 0
        self.t = now

    def due_at(self):
        """Time a whole stroke is owed, or -1 if never at the current rate."""
        if self.owed >= self.thr:
            return self.t
        if self.inc <= 0:
            return -1
        return self.t + ceil_div(self.thr - self.owed, self.inc)

    def take(self, now):
        """A stroke was issued at ``now``: subtract one stroke."""
        self.owed = self.owed_at(now) - self.thr
        self.t = now

    def hold(self, now):
        """A due stroke is withheld: owed stays at one stroke (SR-12)."""
        o = self.owed_at(now)
        self.owed = o if o < self.thr else self.thr
        self.t = now


class Overlay:
    """Evenly spaced extra strokes (bolus, patient bolus, priming):
    ``[source, next_ms, remaining, interval_ms]``."""

    def __init__(self, source, start_ms, strokes, interval_ms):
        self.source = source
        self.next_ms = start_ms
        self.remaining = strokes
        self.interval_ms = interval_ms

    def copy(self):
        return Overlay(self.source, self.next_ms, self.remaining, self.interval_ms)

    def take(self):
        self.remaining -= 1
        self.next_ms += self.interval_ms
