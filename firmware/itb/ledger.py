"""Audit and delivery records, and the in-memory store (SR-1, SR-14, SR-26).

Records are flat dicts of ints and short ASCII strings with a kind ``k``:
``cmd`` (every command, accepted or refused, with id and reason), ``intent`` (a
stroke about to move, written before the motor moves, SR-26), ``done`` (its
outcome), ``alarm``, ``heartbeat``, ``rx`` (an accepted prescription generation:
``gen``, command ``name``, basal ``ng_day``, ``conc``, ``state``; SR-25).
``check_record`` range-checks every field
before a record is stored (SR-1).

``MemoryStore`` is the store interface the durable littlefs store (persistence
issue) will implement: ``append(record)``, ``records()``, ``count``. In memory the
controller object itself is the durable image: a power cut (``Runner.power_cut``)
loses only what the controller marks volatile.
"""

INT_MIN = -(1 << 62)
INT_MAX = (1 << 62) - 1
KINDS = ("cmd", "intent", "done", "alarm", "heartbeat", "input", "rx")


def check_record(rec):
    """SR-1: raise ValueError unless ``rec`` is a flat dict of str keys to ints in
    the signed 63-bit range or ASCII strings of at most 160 characters."""
    if type(rec) is not dict or rec.get("k") not in KINDS:
        raise ValueError("record needs a known kind 'k'")
    for key in rec:
        v = rec[key]
        if type(v) is int:
            if v < INT_MIN or v > INT_MAX:
                raise ValueError("record field %s out of range" % key)
        elif type(v) is str:
            if len(v) > 160:
                raise ValueError("record field %s too long" % key)
            for ch in v:
                if ord(ch) > 126 or ord(ch) < 32:
                    raise ValueError("record field %s is not printable ASCII" % key)
        elif v is not None:
            raise ValueError("record field %s has type %s" % (key, type(v)))
    return rec


class MemoryStore:
    """Append-only records kept in memory: the last ``keep`` records in a ring
    allocated once (no list growth on a fragmented heap); ``count`` counts all
    of them, by kind in ``counts``."""

    def __init__(self, keep=64):
        if type(keep) is not int or keep < 1:
            raise ValueError("keep must be a positive integer")
        self.keep = keep
        self.ring = [None] * keep
        self.count = 0
        self.counts = {}

    def append(self, rec):
        check_record(rec)
        self.ring[self.count % self.keep] = rec
        self.count += 1
        k = rec["k"]
        self.counts[k] = self.counts.get(k, 0) + 1

    def records(self):
        """The kept records, oldest first (a new list)."""
        if self.count <= self.keep:
            return self.ring[: self.count]
        i = self.count % self.keep
        return self.ring[i:] + self.ring[:i]
