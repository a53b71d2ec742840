"""Rolling caps, titration/taper caps, start and restart rules (SR-3 to SR-11).

Windows are half-open ``(t - W, t]`` on the therapy clock; a basal change at ``t0``
is in effect at ``t0`` (right-continuous). All arithmetic is integer.

Readings of the rules chosen here (the safer one where the text allows two):
- SR-8: the up-cap base is the lowest basal dose in effect at any time in the
  window outside interruptions, settled or not. Counting unsettled doses can only
  lower the base; without them, changes made less than the settle time apart
  could stack without limit.
- SR-9: the down-cap base is the highest *settled* dose in the window after the
  last interruption (doses before it are excluded); an unsettled dose does not
  count, so a mistyped increase can be corrected at once.
- SR-11: 4 h < outage < 24 h -> 75 %; 24 h and over -> 50 % (at exactly 24 h
  the stricter 50 %); an unknown outage is over 48 h -> 50 %; exactly 4 h is not
  "longer than 4 h" -> no cap.
"""

from itb.units import DAY_MS, HOUR_MS, ceil_div

WINDOWS_MS = (DAY_MS, HOUR_MS)  # SR-3: the 24 h and 1 h caps, in this order
RUNNING = 0
INTERRUPTED = 1


class WindowLog:
    """Counted masses ``(t_ms, mass_ng)`` in time order with running sums over the
    trailing 24 h and 1 h windows (SR-4, SR-5). ``sums(now)`` needs a non-decreasing
    ``now``; old events are pruned as the windows pass them."""

    def __init__(self):
        self.t = []
        self.m = []
        self.head = [0, 0]
        self.total = [0, 0]

    def copy(self):
        w = WindowLog()
        h = self.head[0]
        w.t = self.t[h:]
        w.m = self.m[h:]
        w.head = [0, self.head[1] - h]
        w.total = list(self.total)
        return w

    def _advance(self, now):
        for i in (0, 1):
            lo = now - WINDOWS_MS[i]
            h = self.head[i]
            while h < len(self.t) and self.t[h] <= lo:
                self.total[i] -= self.m[h]
                h += 1
            self.head[i] = h
        if self.head[0] > 64:
            k = self.head[0]
            del self.t[:k]
            del self.m[:k]
            self.head[0] = 0
            self.head[1] -= k

    def sums(self, now):
        """``[sum over (now-24h, now], sum over (now-1h, now]]`` in ng."""
        self._advance(now)
        return list(self.total)

    def add(self, t, mass_ng):
        """Count ``mass_ng`` at ``t`` (t not earlier than the last event)."""
        self._advance(t)
        self.t.append(t)
        self.m.append(mass_ng)
        self.total[0] += mass_ng
        self.total[1] += mass_ng

    def max_sum(self, start, window_ms):
        """Largest counted sum over the windows ``(p - window_ms, p]`` for every
        position ``p >= start`` (SR-6: mass already counted against a new cap).
        Such a maximum is reached at ``p = start`` or at an event time, so only
        those are tried; no list is built (a prepare runs on a small heap)."""
        t = self.t
        m = self.m
        n = len(t)
        acc = 0
        lo = 0
        j = 0
        while j < n and t[j] <= start:  # the window (start - W, start]
            acc += m[j]
            j += 1
        while lo < j and t[lo] <= start - window_ms:
            acc -= m[lo]
            lo += 1
        best = acc
        while j < n:
            p = t[j]
            while j < n and t[j] == p:
                acc += m[j]
                j += 1
            while lo < j and t[lo] <= p - window_ms:
                acc -= m[lo]
                lo += 1
            if acc > best:
                best = acc
        return best

    def events(self, since):
        """Counted events with ``t > since``: list of ``(t, mass_ng)``."""
        out = []
        for i in range(len(self.t)):
            if self.t[i] > since:
                out.append((self.t[i], self.m[i]))
        return out


def default_caps(daily_dose_ng, peak_rate_ng_per_day, stroke_mass_ng, max_bolus_ng,
                 max_daily_dose_ng):
    """SR-3 default caps ``[cap_24h_ng, cap_1h_ng]``: 24 h = 2 x daily dose + the
    maximum single bolus, bounded by the hard maximum daily dose; 1 h = the maximum
    single bolus in whole strokes + one hour of the highest basal rate rounded up
    to whole strokes."""
    cap24 = 2 * daily_dose_ng + max_bolus_ng
    if cap24 > max_daily_dose_ng:
        cap24 = max_daily_dose_ng
    sm = stroke_mass_ng if stroke_mass_ng > 0 else 1
    bolus_strokes = ceil_div(max_bolus_ng, sm)
    hour_strokes = ceil_div(ceil_div(peak_rate_ng_per_day, 24), sm)
    return [cap24, (bolus_strokes + hour_strokes) * sm]


class BasalHistory:
    """Timeline of basal doses and interruptions: segments ``[t_start, dose_ng, kind]``
    (kind RUNNING or INTERRUPTED), each lasting until the next one starts."""

    def __init__(self):
        self.segs = []

    def copy(self):
        h = BasalHistory()
        h.segs = [list(s) for s in self.segs]
        return h

    def record(self, t, dose_ng, kind):
        if kind == INTERRUPTED:
            dose_ng = 0
        # A dose replaced within the same millisecond is kept as a zero-length
        # segment: it still bounds the SR-8 base, so changes cannot stack within 1 ms.
        if self.segs:
            last = self.segs[-1]
            if last[1] == dose_ng and last[2] == kind:
                return
        self.segs.append([t, dose_ng, kind])

    def prune(self, now):
        # keep what any window (now - 24 h, now] can see, plus the segment before an
        # interruption (SR-11 needs the last settled dose before it)
        keep_from = now - DAY_MS
        i = 0
        while i + 2 < len(self.segs) and self.segs[i + 1][0] <= keep_from:
            i += 1
        if i > 0 and len(self.segs) > 16:
            del self.segs[:i]

    def _end(self, i, now):
        return self.segs[i + 1][0] if i + 1 < len(self.segs) else now

    def _doses_in_window(self, now, window_ms):
        """Running doses in effect at some time in ``(now - W, now]`` (settled or not;
        a dose replaced within the same ms counts, see ``record``)."""
        lo = now - window_ms
        out = []
        for i in range(len(self.segs)):
            s = self.segs[i]
            if s[2] == RUNNING and s[0] <= now and (i + 1 == len(self.segs)
                                                    or self.segs[i + 1][0] > lo):
                out.append(s[1])
        return out

    def lowest_dose(self, now, window_ms=DAY_MS):
        """SR-8 base: lowest running dose in effect in ``(now - W, now]``; None if none."""
        doses = self._doses_in_window(now, window_ms)
        return min(doses) if doses else None

    def highest_dose(self, now, window_ms=DAY_MS):
        """SR-3 default caps: highest running dose in effect in ``(now - W, now]``; None."""
        doses = self._doses_in_window(now, window_ms)
        return max(doses) if doses else None

    def highest_settled(self, now, settle_ms, window_ms=DAY_MS):
        """SR-9 base: highest dose settled in ``(now - W, now]`` after the last
        interruption; None if none."""
        start = 0
        for i in range(len(self.segs)):
            if self.segs[i][2] == INTERRUPTED:
                start = i + 1
        best = None
        lo = now - window_ms
        for i in range(start, len(self.segs)):
            s = self.segs[i]
            a = s[0] if s[0] > lo else lo
            dur = self._end(i, now) - a
            if dur >= settle_ms and (best is None or s[1] > best):
                best = s[1]
        return best

    def last_settled_before(self, t, settle_ms):
        """SR-11: the last running dose, before ``t``, that was in effect for at least
        the settle time; else the last running dose; None if none."""
        last = None
        for i in range(len(self.segs) - 1, -1, -1):
            s = self.segs[i]
            if s[0] > t or s[2] != RUNNING:
                continue  # a dose set at t itself (even for 0 ms) preceded the interruption
            end = self.segs[i + 1][0] if i + 1 < len(self.segs) else t
            if end > t:
                end = t
            if last is None:
                last = s[1]
            if end - s[0] >= settle_ms:
                return s[1]
        return last


def up_cap_ok(new_ng, base_ng, up_pct):
    """SR-8: new <= (1 + up) x base."""
    return new_ng * 100 <= (100 + up_pct) * base_ng


def up_cap_max(base_ng, up_pct):
    """SR-8: largest allowed dose, ng/day (at 0.1 µg/day resolution)."""
    v = base_ng * (100 + up_pct) // 100
    return v - v % 100


def down_cap_ok(new_ng, base_ng, down_pct):
    """SR-9: new >= (1 - down) x base."""
    return new_ng * 100 >= (100 - down_pct) * base_ng


def down_cap_min(base_ng, down_pct):
    """SR-9: smallest allowed dose, ng/day (rounded up to 0.1 µg/day)."""
    v = ceil_div(base_ng * (100 - down_pct), 100)
    return ceil_div(v, 100) * 100


def start_limit_ng(screening_ng, effect_ms, rule):
    """SR-10: first program after implant <= 2 x the effective screening dose, or
    1 x if its effect lasted longer than 8 h (US label; ``rule == "eu"``: 12 h)."""
    limit_ms = 12 * HOUR_MS if rule == "eu" else 8 * HOUR_MS
    return screening_ng if effect_ms > limit_ms else 2 * screening_ng


def restart_pct(outage_upper_ms):
    """SR-11: percent of the last settled dose allowed for the first basal after an
    interruption whose upper-bound duration is ``outage_upper_ms`` (None: unknown,
    treated as long)."""
    if outage_upper_ms is None:
        return 50
    if outage_upper_ms <= 4 * HOUR_MS:
        return 100
    if outage_upper_ms < DAY_MS:
        return 75
    return 50
