"""The fluid path between reservoir and catheter tip as a FIFO (SR-21, SR-22).

``segs`` lists ``[volume_nl, concentration_ug_per_ml]`` from the catheter tip
(index 0) to the reservoir end; its volumes add up to the dead volume (SR-22).
Each stroke pushes ``volume_nl`` of reservoir fluid in at the reservoir end and
the same volume out at the tip (sharp interface, SR-21).

Around each interface the position is uncertain by ±20 % of the dead volume
(SR-21). ``push`` reports, for the volume leaving the tip, the nominal mass and the
highest and lowest concentration found within that band around it (including the
fluid that already left, kept in ``passed``): the highest is used for cap counting
(SR-4), the lowest for withdrawal tracking. Concentration 0 means saline or air.
"""

from itb.units import mass_pg

BAND_PCT = 20  # SR-21


class FluidPath:
    def __init__(self, dead_volume_nl, concentration_ug_per_ml=0):
        self.dead_volume_nl = dead_volume_nl
        self.band_nl = dead_volume_nl * BAND_PCT // 100
        self.segs = [[dead_volume_nl, concentration_ug_per_ml]] if dead_volume_nl else []
        self.passed = []

    def copy(self):
        p = FluidPath(0)
        p.dead_volume_nl = self.dead_volume_nl
        p.band_nl = self.band_nl
        p.segs = [list(s) for s in self.segs]
        p.passed = [list(s) for s in self.passed]
        return p

    def fill(self, concentration_ug_per_ml):
        """Declare the whole path as holding one fluid (after priming or at set-up)."""
        self.segs = [[self.dead_volume_nl, concentration_ug_per_ml]] if self.dead_volume_nl else []
        self.passed = []

    def mass_pg(self):
        """Nominal drug mass in the path, pg."""
        m = 0
        for v, c in self.segs:
            m += mass_pg(v, c)
        return m

    def tip_concentration(self, reservoir_ug_per_ml):
        """SR-21: nominal concentration the next stroke pushes out of the tip, used to
        convert the daily dose into a volume rate. Saline or air at the tip (0) is
        skipped for the first drug behind it (else the reservoir's): the rate is the
        one that delivers the prescribed dose once drug arrives."""
        for v, c in self.segs:
            if c:
                return c
        return reservoir_ug_per_ml

    def drug_front_nl(self):
        """Volume of drug-bearing fluid contiguous from the reservoir end, nL."""
        n = 0
        i = len(self.segs) - 1
        while i >= 0 and self.segs[i][1]:
            n += self.segs[i][0]
            i -= 1
        return n

    def _steady(self, volume_nl, c):
        # One fluid everywhere a stroke of ``volume_nl`` and the band can reach
        # (the usual state between refills): the general push below would give
        # ``(mass, c, c)`` and leave the path as it is but for ``passed`` filling up
        # to the band volume.
        segs = self.segs
        passed = self.passed
        return (len(segs) == 1 and segs[0][1] == c and segs[0][0] >= volume_nl
                and (not passed or (len(passed) == 1 and passed[0][1] == c)))

    def peek(self, volume_nl, concentration_in):
        """What ``push`` would return, leaving the path unchanged."""
        if self._steady(volume_nl, concentration_in):
            return mass_pg(volume_nl, concentration_in), concentration_in, concentration_in
        return self.copy().push(volume_nl, concentration_in)

    def push(self, volume_nl, concentration_in):
        """Push one stroke: returns ``(mass_pg, conc_hi, conc_lo)`` of the volume
        leaving the tip (nominal mass; highest/lowest concentration in the band)."""
        if self._steady(volume_nl, concentration_in):
            if self.band_nl:
                if self.passed:
                    v = self.passed[0][0] + volume_nl
                    self.passed[0][0] = v if v < self.band_nl else self.band_nl
                else:
                    self.passed.append([volume_nl if volume_nl < self.band_nl else self.band_nl,
                                        concentration_in])
            return mass_pg(volume_nl, concentration_in), concentration_in, concentration_in
        self._append(self.segs, volume_nl, concentration_in)
        popped = []
        left = volume_nl
        while left > 0:
            v, c = self.segs[0]
            take = v if v <= left else left
            popped.append([take, c])
            if take == v:
                self.segs.pop(0)
            else:
                self.segs[0][0] = v - take
            left -= take
        m = 0
        hi = -1
        lo = -1
        for v, c in popped:
            m += mass_pg(v, c)
            hi, lo = _widen(hi, lo, c)
        # band ahead (still in the path) and behind (already delivered)
        for group in (self.segs, self.passed):
            left = self.band_nl
            for v, c in group:
                if left <= 0:
                    break
                hi, lo = _widen(hi, lo, c)
                left -= v
        if self.band_nl and self.dead_volume_nl - volume_nl < self.band_nl:
            hi, lo = _widen(hi, lo, concentration_in)
        # remember what left the tip, newest first, up to the band volume
        for v, c in popped:
            if self.passed and self.passed[0][1] == c:
                self.passed[0][0] += v
            else:
                self.passed.insert(0, [v, c])
        left = self.band_nl
        keep = 0
        for v, _c in self.passed:
            if left <= 0:
                break
            left -= v
            keep += 1
        del self.passed[keep:]
        if left < 0:
            # only whether the band is full matters: the memory holds exactly the band
            # (a volume that grew by every stroke for years would outgrow a small int
            # on the board)
            self.passed[keep - 1][0] += left
        return m, hi, lo

    @staticmethod
    def _append(segs, volume_nl, c):
        if segs and segs[-1][1] == c:
            segs[-1][0] += volume_nl
        else:
            segs.append([volume_nl, c])


def _widen(hi, lo, c):
    if hi < 0 or c > hi:
        hi = c
    if lo < 0 or c < lo:
        lo = c
    return hi, lo
