"""Flash wear of the durable store (itb/store.py) on the Pico's littlefs geometry.

Runs a therapy workload through the runner on a real littlefs image
(littlefs-python, ``host_tools/testkit/lfs.py``: 352 x 4 KiB blocks, 256 B
program size) and prints bytes programmed and blocks erased per therapy day, the
largest store size seen, and the projected years until 100,000 erase cycles per
block, assuming littlefs' wear levelling spreads erases over the blocks the
store does not occupy (the dynamic wear levelling littlefs documents).

Workloads: the worst case the drug library allows (the hard maximum daily dose
at the lowest pump concentration, 500 ug/mL, plus the maximum patient boluses)
and a typical 400 ug/day at 500 ug/mL.

    python benchmarks/flash_wear.py [--days N]
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from itb.drugs import DeviceConfig  # noqa: E402

from host_tools.testkit import lfs  # noqa: E402
from host_tools.testkit import workload as wl  # noqa: E402

CYCLES = 100000


def _used_bytes(fs):
    """``(total, largest slot, ledger, hour totals)`` in bytes."""
    slot = ledger = hours = 0
    for name in fs.listdir(""):
        if name == "ledger":
            for seg in fs.listdir("ledger"):
                ledger += fs.lfs.stat("ledger/" + seg).size
        elif name.startswith("slot"):
            slot = max(slot, fs.lfs.stat(name).size)
        else:
            hours += fs.lfs.stat(name).size
    return 3 * slot + ledger + hours, slot, ledger, hours


def measure(name, daily_dose_ng, conc, patient_boluses, days):
    fs, ctx = lfs.make()
    h = wl.Harness(fs)
    script = wl.constant_day(daily_dose_ng, conc, patient_boluses, days + 1)
    h.run(script[:1], wl.DAY)  # the first day settles (checkpoints, segment turnover)
    p0, e0, s0 = ctx.prog_bytes, ctx.erases, len(h.board.calls)
    biggest = (0, 0, 0, 0)
    for d in range(1, days + 1):
        day = [x for x in script[1:] if d * wl.DAY <= x[0] < (d + 1) * wl.DAY]
        for t in range(0, wl.DAY, wl.HOUR):  # sample the store's size hourly
            h.run([x for x in day if x[0] < d * wl.DAY + t + wl.HOUR], d * wl.DAY + t + wl.HOUR)
            day = [x for x in day if x[0] >= d * wl.DAY + t + wl.HOUR]
            biggest = tuple(max(a, b) for a, b in zip(biggest, _used_bytes(fs), strict=True))
    prog_day = (ctx.prog_bytes - p0) / days
    erase_day = (ctx.erases - e0) / days
    strokes_day = (len(h.board.calls) - s0) / days
    blocks = lfs.PICO["block_count"]
    free_blocks = blocks - (biggest[0] + 4095) // 4096 - 2  # minus the superblock pair
    years = CYCLES * free_blocks / erase_day / 365.25 if erase_day else float("inf")
    h.runner.journal.close()
    print("%-10s %8.0f strokes/day  %10.0f B programmed/day  %6.0f erases/day  "
          "%7.1f years to %d cycles/block" % (name, strokes_day, prog_day, erase_day, years,
                                              CYCLES))
    print("%-10s store at most %d B: slot %d B (x3 with the temporary), ledger %d B,"
          " hour totals %d B" % ("", biggest[0], biggest[1], biggest[2], biggest[3]))
    return years


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=3, help="therapy days measured (default 3)")
    args = ap.parse_args(argv)
    cfg = DeviceConfig()
    worst = measure("worst", cfg.max_daily_dose_ng, 500, 6, args.days)
    typical = measure("typical", 400000, 500, 0, args.days)
    ok = worst > 5 and typical > 10
    print("target: > 5 years worst case, > 10 years typical: %s" % ("met" if ok else "NOT MET"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
