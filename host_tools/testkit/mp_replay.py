"""Replay recorded runner traces under the MicroPython unix port, with the
therapy clock read through the RP2040's 2^30 ms ticks (a shim).

Runs in MicroPython (and CPython): ``MICROPYPATH=firmware micropython
-X heapsize=2M mp_replay.py IN.jsonl OUT.jsonl``. ``IN`` holds one or more
traces back to back (each starts with its ``config`` record). For each trace a
``Ticks`` shim starts a little before a wrap of its 2^30 ms counter and
``board.ticks.TherapyClock`` turns the ticks back into therapy time: every
input record's ``t`` is re-derived from the clock before the runner sees it
(the clock is read at least hourly, as the board's health task does, and
rebuilt at each ``power_on`` from a fresh tick count). A wrap-around bug in the
conversion changes ``t`` and so the output. The runner's output lines go to
``OUT``; stdout reports ``traces N``, ``lines N`` and the heap in use (bytes,
after a collection) after importing ``itb`` and after the last trace.
"""

import gc
import sys

# Collect after every 16 KiB allocated, as the board's app loop does: a prepare's
# short-lived projection garbage otherwise fragments a small heap until a 4 KiB
# list cannot be placed (seen at -X heapsize=192K on the 64-bit unix port).
GC_THRESHOLD = 16 * 1024
_HEAP0 = 0
if hasattr(gc, "threshold"):  # MicroPython (CPython imports this module in tests)
    gc.collect()
    gc.threshold(GC_THRESHOLD)
    _HEAP0 = gc.mem_alloc()

from board.ticks import MAX_READ_GAP_MS, TherapyClock  # noqa: E402
from itb.controller import MAX_T  # noqa: E402
from itb.runner import replay  # noqa: E402
from itb.trace import decode, encode  # noqa: E402

PERIOD = 1 << 30  # RP2040 ticks_ms period
POLL_MS = 3_600_000  # the clock is read at least this often between records
RETIMED = ("config", "cmd", "advance", "switch", "rtc", "battery", "session_end", "power_cut",
           "power_on")


class Ticks:
    """``time.ticks_ms``/``ticks_diff`` with a 2^30 ms period, moved by hand."""

    def __init__(self, start):
        self.value = start % PERIOD

    def ticks_ms(self):
        return self.value

    def ticks_diff(self, a, b):
        half = PERIOD // 2
        return ((a - b + half) & (PERIOD - 1)) - half

    def advance(self, ms):
        self.value = (self.value + ms) & (PERIOD - 1)


class Retimer:
    """Yields a stream of traces' lines (back to back, read once: small heap) with
    every input ``t`` read back through the ticks shim; outputs and motor
    outcomes pass through (``replay`` ignores their ``t``). ``traces`` and
    ``lines`` count what went through."""

    def __init__(self):
        self.traces = 0
        self.lines = 0

    def run(self, stream):
        ticks = clock = None
        true_ms = 0
        for line in stream:
            line = line.strip()
            if not line:
                continue
            self.lines += 1
            rec = decode(line)
            k = rec["k"]
            if k not in RETIMED:
                yield line
                continue
            t = rec["t"]
            if k == "config":
                # a new trace: its counter starts a little before a wrap
                self.traces += 1
                ticks = Ticks(PERIOD - 1 - (self.traces * 7919) * 997 % POLL_MS)
                clock = TherapyClock(ticks.ticks_ms, ticks.ticks_diff, t)
                true_ms = t
            elif clock is None:
                raise ValueError("input must start with a config record")
            elif t < true_ms or t > MAX_T:
                # a test of SR-23's refusal of a time going back or beyond the
                # clock's range: no clock produces it, so it goes through as is
                yield line
                continue
            elif k == "power_on":
                # a reset: ticks restart anywhere; the clock restarts from the stored
                # last time plus the outage's lower bound (SR-23), given by the record
                ticks = Ticks(t * 31 + self.traces)
                clock = TherapyClock(ticks.ticks_ms, ticks.ticks_diff, t)
                true_ms = t
            while true_ms < t:
                # hourly reads; a gap of years (a range test) in at most 64 reads
                step = (t - true_ms) // 64
                step = POLL_MS if step < POLL_MS else min(step, MAX_READ_GAP_MS)
                step = min(step, t - true_ms)
                ticks.advance(step)
                true_ms += step
                clock.read()
            rec["t"] = clock.read()
            yield encode(rec)


def main(argv):
    if len(argv) != 3:
        print("usage: mp_replay.py IN.jsonl OUT.jsonl")
        return 2
    gc.collect()
    heap_import = gc.mem_alloc() - _HEAP0
    src = open(argv[1])
    out = open(argv[2], "w")

    def sink(line):
        out.write(line)
        out.write("\n")

    r = Retimer()
    replay(r.run(src), sink)
    out.close()
    src.close()
    gc.collect()
    print("traces", r.traces)
    print("lines", r.lines)
    print("heap_after_import", heap_import)
    print("heap_after_replay", gc.mem_alloc() - _HEAP0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
