"""Link benchmark: round-trip time to the virtual board over a pseudo-terminal,
and the time to export a 30-day ledger (issue 6 targets: p99 under 20 ms, a
30-day export under 2 s).

    .venv/bin/python benchmarks/link.py [--round-trips N] [--days D] [--dose-ug U]

The virtual board is the real firmware in the MicroPython unix port (heap capped,
``host_tools/vboard.py``). Round trips are authenticated ``status`` commands
(request and answer both HMAC-checked, the answer about 1 KB). For the export the
board runs D days of basal at U µg/day (2000 µg/mL, 2 µL strokes: the default
device) on its host-stepped test clock, one day per step, then ``itbctl log
export`` reads its whole ledger (checked line by line on the host) and writes
it as a runner trace, which is replayed to prove it complete.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from itb import runner as rn  # noqa: E402

from host_tools import export as ex  # noqa: E402
from host_tools import link  # noqa: E402
from host_tools.fixtures import start_therapy  # noqa: E402
from host_tools.vboard import VirtualBoard  # noqa: E402

DAY = 86_400_000


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--round-trips", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--dose-ug", type=int, default=400)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, VirtualBoard(Path(tmp) / "b", provision=True) as vb:
        b = link.Board(vb.url, timeout=10)
        b.hello()
        b.provision(link.new_keys())
        start_therapy(b, a.dose_ug * 1000)
        b.status()
        rtts = []
        for _ in range(a.round_trips):
            t0 = time.perf_counter()
            b.status()
            rtts.append((time.perf_counter() - t0) * 1000)
        rtts.sort()
        p99 = rtts[max(0, int(len(rtts) * 0.99) - 1)]
        print(f"round trip over {vb.url} (pty), authenticated status, n={len(rtts)}:"
              f" median {statistics.median(rtts):.2f} ms, p99 {p99:.2f} ms,"
              f" max {rtts[-1]:.2f} ms  (target p99 < 20 ms: {'met' if p99 < 20 else 'MISSED'})")

        b.call("test_clock", {"mode": "stepped"}, role="service")
        t0 = time.perf_counter()
        for _ in range(a.days):
            b.call("test_clock", {"mode": "stepped", "advance_ms": DAY}, role="service")
        run_s = time.perf_counter() - t0
        st = b.status()
        print(f"board ran {a.days} days ({st['strokes']} strokes) on its stepped clock in"
              f" {run_s:.1f} s; heap in use {st['board'].get('heap')}")
        t0 = time.perf_counter()
        records, res = b.export()
        lines = ex.to_trace(records, res["cfg"])
        export_s = time.perf_counter() - t0
        print(f"{a.days}-day ledger export: {len(records)} records, {res['bytes']} bytes in"
              f" {res['parts']} parts, {export_s:.2f} s ({res['bytes'] / export_s / 1000:.0f}"
              f" kB/s) (target < 2 s: {'met' if export_s < 2 else 'MISSED'})")
        ok = rn.replay(lines) == lines
        print(f"exported trace replays byte for byte on the host: {ok}")
        b.close()
    return 0 if p99 < 20 and export_s < 2 and ok else 1


if __name__ == "__main__":
    sys.exit(main())
