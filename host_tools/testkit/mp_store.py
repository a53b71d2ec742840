"""Replay runner traces with the controller's state in a durable store, rebuilding
it from storage at every power-on; runs under the MicroPython unix port (and
CPython).

    MICROPYPATH=firmware micropython -X heapsize=512K mp_store.py IN.jsonl OUT.jsonl

Each trace in ``IN`` (back to back, each starting with its ``config`` record) runs
on a fresh ``MemoryFS``: the runner journals into ``itb.store``; at a ``power_on``
record the file system loses its open files and the controller is rebuilt
from the store (``Store.recover``) instead of living on in memory. The output
lines go to ``OUT`` and must equal the input trace, byte for byte: recovery
reproduces the controller that lost power. stdout: ``traces N``,
``recoveries N``, ``heap_peak N`` (bytes in use after a collection, at the
largest point seen after a recovery).
"""

import gc
import sys

if hasattr(gc, "threshold"):  # MicroPython: collect as the board's app loop does
    gc.threshold(16 * 1024)

from itb import store as st  # noqa: E402
from itb.fs import MemoryFS  # noqa: E402
from itb.runner import JournalReplayer  # noqa: E402
from itb.trace import decode  # noqa: E402


def run(lines, sink):
    """Replay ``lines`` (an iterable of trace lines) through durable runners;
    returns ``(traces, recoveries, heap_peak)``."""
    traces = recoveries = heap_peak = 0
    rep = fs = None
    for line in lines:
        line = line.strip()
        if not line:
            continue
        rec = decode(line)
        k = rec["k"]
        if k == "config":
            if rep is not None:
                rep.runner.journal.close()
            fs = MemoryFS()
            runner, _ = st.boot(fs, None, rec.get("cfg") or None, sink)
            rep = JournalReplayer(runner)
            traces += 1
        elif k == "power_on":
            runner = rep.runner
            runner.journal.sync()  # the traced runs cut power after the last write
            fs.power_cut()
            runner, info = st.Store(fs).recover(
                rep.board, sink, None, rec.get("boot_loop", 0), (rec["t"], rec["upper_ms"]))
            if info.damaged or info.problems:
                raise ValueError("recovery found problems: %r" % (info.problems,))
            rep.runner = runner
            recoveries += 1
            if hasattr(gc, "mem_alloc"):
                gc.collect()
                heap_peak = max(heap_peak, gc.mem_alloc())
        else:
            rep.feed(rec)
    if rep is not None:
        rep.runner.journal.close()
    return traces, recoveries, heap_peak


def main(argv):
    out = open(argv[2], "w")
    try:
        with open(argv[1]) as f:
            traces, recoveries, heap = run(f, lambda line: out.write(line + "\n"))
    finally:
        out.close()
    print("traces", traces)
    print("recoveries", recoveries)
    print("heap_peak", heap)


if __name__ == "__main__":
    main(sys.argv)
