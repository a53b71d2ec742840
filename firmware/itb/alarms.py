"""Alarm codes, IEC 60601-1-8 priorities, latching and re-annunciation (SR-28).

An alarm is *raised* when its condition starts, stays *active* while the condition
holds, and stays *latched* (listed) until acknowledged. HIGH alarms re-annunciate
every ``realarm_ms`` while their condition holds, acknowledged or not; MEDIUM and LOW
alarms annunciate once when raised. Acknowledging an alarm whose condition has
ended removes it; acknowledging an active one silences it until its next
re-annunciation (HIGH) or for good (MEDIUM/LOW, it is removed when the condition ends).
"""

HIGH = 3
MEDIUM = 2
LOW = 1
PRIORITY_NAMES = {HIGH: "high", MEDIUM: "medium", LOW: "low"}

# code -> (priority, rule)
CODES = {
    "CAP_HOLD": (HIGH, "SR-7"),
    "PLAN_HELD": (MEDIUM, "SR-13"),
    "WITHDRAWAL_RISK": (HIGH, "SR-16"),
    "PUMP_STOPPED": (HIGH, "SR-17"),
    "RESTART_REDUCED": (HIGH, "SR-11"),
    "LOW_RESERVOIR": (MEDIUM, "SR-19"),
    "RESERVOIR_EMPTY_SOON": (HIGH, "SR-19"),
    "RESERVOIR_EMPTY": (HIGH, "SR-19"),
    "REFILL_DISCREPANCY": (MEDIUM, "SR-20"),
    "CLOCK_INVALID": (MEDIUM, "SR-23"),
    "MOTOR_STALL": (HIGH, "SR-4"),
    "OCCLUSION": (HIGH, "SR-4"),
    "STROKE_UNCONFIRMED": (MEDIUM, "SR-26"),
    "SAFE_STATE": (HIGH, "SR-27"),
    "NOT_DOSING": (HIGH, "SR-27"),
    "PRESCRIPTION_ROLLBACK": (HIGH, "SR-25"),
    "STORAGE_CORRUPT": (HIGH, "SR-25"),
    # IEC 60601-2-24 asks for a low-battery alarm before the battery fails; no SR
    # rule names it, so it is filed under the priority rule
    "BATTERY_LOW": (MEDIUM, "SR-28"),
}


class Alarms:
    """The alarm list. ``entries``: code -> [active, acked, raised_ms, next_ms].

    Methods return annunciation events ``(code, priority)`` for the caller to emit.
    """

    def __init__(self, realarm_ms):
        self.realarm_ms = realarm_ms
        self.entries = {}

    def copy(self):
        a = Alarms(self.realarm_ms)
        for code in self.entries:
            a.entries[code] = list(self.entries[code])
        return a

    def set(self, code, active, now):
        """Set the condition of ``code``; returns 1 if this raised it anew, -1 if its
        condition ended, 0 if nothing changed."""
        e = self.entries.get(code)
        if active:
            if e is None or not e[0]:
                pri = CODES[code][0]
                nxt = now + self.realarm_ms if pri == HIGH else -1
                self.entries[code] = [1, 0, now, nxt]
                return 1
            return 0
        if e is not None and e[0]:
            e[0] = 0
            e[3] = -1
            if e[1]:
                del self.entries[code]
            return -1
        return 0

    def active(self, code):
        e = self.entries.get(code)
        return e is not None and e[0] == 1

    def acknowledge(self, code):
        """Acknowledge ``code`` or ``"all"``; returns the number acknowledged."""
        n = 0
        for c in sorted(self.entries):
            if code != "all" and c != code:
                continue
            e = self.entries[c]
            n += 1
            if e[0]:
                e[1] = 1
            else:
                del self.entries[c]
        return n

    def due(self, now):
        """HIGH alarms whose re-annunciation is due at ``now``: list of codes; reschedules."""
        out = []
        for c in sorted(self.entries):
            e = self.entries[c]
            if e[0] and e[3] >= 0 and e[3] <= now:
                e[1] = 0
                e[3] = now + self.realarm_ms
                out.append(c)
        return out

    def next_due(self):
        """Earliest re-annunciation time, or -1 if none."""
        best = -1
        for c in self.entries:
            t = self.entries[c][3]
            if t >= 0 and (best < 0 or t < best):
                best = t
        return best

    def listing(self):
        """Latched alarms: list of [code, priority name, active, acked, raised_ms], by code."""
        out = []
        for c in sorted(self.entries):
            e = self.entries[c]
            out.append([c, PRIORITY_NAMES[CODES[c][0]], e[0], e[1], e[2]])
        return out
