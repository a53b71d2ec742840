"""Simulator speed (a benchmark: prints figures, asserts nothing).

    .venv/bin/python benchmarks/sim_speed.py [--repeat 3] [--patients 100] [--jobs 2]

1. ``itbsim run examples/maintenance_2y.toml`` as a whole process (interpreter
   start, imports, the run, and every output: summary.json, timeseries.csv, the
   JSONL trace and report.html), best of ``--repeat``: simulated patient-days per
   second on one core. The issue asks for at least 250 (a year in under 1.5 s).
2. The same scenario in-process, engine only (controller + runner + pump +
   patient, no files): patient-days, runner wake-ups and strokes per second.
3. ``itbsim cohort examples/spinal_titration.toml --patients N --jobs J`` as a
   whole process: patient-days per second over the cohort.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAINTENANCE = REPO / "examples" / "maintenance_2y.toml"
COHORT = REPO / "examples" / "spinal_titration.toml"


def whole_process(args, repeat):
    best = None
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "sim", *args, "--out", out, "--quiet"],
                           check=True, cwd=REPO, stdout=subprocess.DEVNULL,
                           env=dict(os.environ, PYTHONHASHSEED="0"))
            dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best


def engine_only(repeat):
    from itb.controller import Controller

    from sim import engine
    from sim import scenario as sc

    s = sc.load(MAINTENANCE)
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        res = engine.Simulation(s).run()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    wakes = [0]
    real = Controller.wake

    def counting(self, now):
        wakes[0] += 1
        return real(self, now)

    Controller.wake = counting
    try:
        engine.Simulation(s).run()
    finally:
        Controller.wake = real
    return best, wakes[0], res.strokes, s.duration_days


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--patients", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    from sim import scenario as sc

    days = sc.load(MAINTENANCE).duration_days
    dt = whole_process(["run", str(MAINTENANCE)], a.repeat)
    print(f"itbsim run {MAINTENANCE.name} (whole process, all outputs, best of {a.repeat}):")
    print(f"  {days:g} patient-days in {dt:.2f} s = {days / dt:.0f} patient-days/s"
          f" (a year in {365 / (days / dt):.2f} s)")
    dt, wakes, strokes, days = engine_only(a.repeat)
    print(f"engine only (in-process, best of {a.repeat}): {days / dt:.0f} patient-days/s,"
          f" {wakes / dt:,.0f} runner wake-ups/s, {strokes / dt:,.0f} strokes/s"
          f" ({wakes:,} wake-ups, {strokes:,} strokes)")
    cdays = sc.load(COHORT).duration_days * a.patients
    dt = whole_process(["cohort", str(COHORT), "--patients", str(a.patients), "--jobs",
                        str(a.jobs)], 1)
    print(f"itbsim cohort {COHORT.name} --patients {a.patients} --jobs {a.jobs} (whole process):")
    print(f"  {cdays:g} patient-days in {dt:.2f} s = {cdays / dt:.0f} patient-days/s"
          f" on {a.jobs} process(es), {os.cpu_count()} CPU(s) here")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
