"""Reservoir bounds and refill reconciliation (SR-19, SR-20, SR-21).

The reservoir volume is computed, never measured: ``R = fill - V`` with ``V`` the
volume of strokes since the last refill. Pessimistic ``R_p = R - tol x V`` and
optimistic ``R_o = R + tol x V`` (tol = device volume accuracy, rounded outward).
The syringe-empty switch is the only measured empty.
"""

from itb.units import NL_PER_ML, ceil_div

DISCREPANCY_PERMILLE = 145  # SR-20: 14.5 % (Medtronic over-infusion definition)
DISCREPANCY_MIN_NL = 500000  # SR-20: 0.5 mL


class Reservoir:
    """``concentration`` µg/mL of the fill, ``fill_nl`` after the last refill,
    ``delivered_nl`` (V) since then, ``switch`` 1 when the empty switch is tripped."""

    def __init__(self, tol_permille):
        self.tol = tol_permille
        self.concentration = 0
        self.fill_nl = 0
        self.delivered_nl = 0
        self.switch = 0

    def copy(self):
        r = Reservoir(self.tol)
        r.concentration = self.concentration
        r.fill_nl = self.fill_nl
        r.delivered_nl = self.delivered_nl
        r.switch = self.switch
        return r

    def remaining_nl(self):
        return self.fill_nl - self.delivered_nl

    def pessimistic_nl(self):
        return self.remaining_nl() - ceil_div(self.delivered_nl * self.tol, 1000)

    def optimistic_nl(self):
        return self.remaining_nl() + ceil_div(self.delivered_nl * self.tol, 1000)

    def can_deliver(self):
        """SR-19: delivery goes on until the switch trips or ``R_o <= 0``."""
        return self.switch == 0 and self.optimistic_nl() > 0

    def levels(self, planned_nl_per_day, low_nl, low_days):
        """SR-19 alarm conditions ``(low, empty_soon)``: LOW_RESERVOIR when
        ``R_p <= low_nl`` or ``R_p / planned daily volume <= low_days``;
        RESERVOIR_EMPTY_SOON when ``R_p <= 0``."""
        rp = self.pessimistic_nl()
        low = rp <= low_nl or (planned_nl_per_day > 0 and rp <= low_days * planned_nl_per_day)
        return low, rp <= 0

    def days_to(self, level_nl, planned_nl_per_day):
        """Milliseconds until ``R_p`` reaches ``level_nl`` at the planned daily
        volume (0 if already there, -1 if never)."""
        rp = self.pessimistic_nl()
        if rp <= level_nl:
            return 0
        per_day = planned_nl_per_day + ceil_div(planned_nl_per_day * self.tol, 1000)
        if per_day <= 0:
            return -1
        return ceil_div((rp - level_nl) * 86400000, per_day)

    def refill(self, aspirated_nl, volume_nl, concentration, partial):
        """Apply a refill. Returns ``(discrepancy_nl, flagged, discarded_nl)``:
        SR-20 compares the volume that should have left (``V``) with the volume that
        actually left (``fill - aspirated``) after a full aspiration and flags a
        difference over max(14.5 % of V, 0.5 mL); a partial refill is not reconciled.
        ``discarded_nl`` is the computed volume removed (full: all of ``R``)."""
        v = self.delivered_nl
        discrepancy = 0
        flagged = False
        if not partial:
            discrepancy = v - (self.fill_nl - aspirated_nl)
            if discrepancy < 0:
                discrepancy = -discrepancy
            limit = ceil_div(v * DISCREPANCY_PERMILLE, 1000)
            if limit < DISCREPANCY_MIN_NL:
                limit = DISCREPANCY_MIN_NL
            flagged = discrepancy > limit
            discarded = self.remaining_nl()
            self.fill_nl = volume_nl
        else:
            r = self.remaining_nl()
            discarded = aspirated_nl if aspirated_nl < r else (r if r > 0 else 0)
            self.fill_nl = r - discarded + volume_nl
        self.delivered_nl = 0
        self.concentration = concentration
        self.switch = 0
        return discrepancy, flagged, discarded


def ml_text(volume_nl):
    """Volume as a 'x.xxx mL' string for messages (integer formatting only)."""
    sign = "-" if volume_nl < 0 else ""
    v = -volume_nl if volume_nl < 0 else volume_nl
    return "%s%d.%03d mL" % (sign, v // NL_PER_ML, (v % NL_PER_ML) // 1000)
