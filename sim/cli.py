"""``itbsim``: the simulator's command line (also ``python -m sim``).

    itbsim run SCENARIO.toml --out DIR          one run: summary.json, timeseries.csv,
                                                trace.jsonl, report.html
                             [--balance FILE.csv]  and balance readings (sim/balance.py)
    itbsim titrate --origin spinal ...          the clinician's titration planner
    itbsim compare A.toml B.toml --out DIR      two plans side by side in one report
    itbsim replay TRACE.jsonl --out DIR         a recorded runner trace through the patient
    itbsim cohort SCENARIO.toml --patients N    a seeded cohort in parallel processes

Exit codes: 0 when the work completed (whatever the controller refused: refusals
are in ``commands``), 2 for a bad scenario or usage (every problem on stderr, no
traceback), 1 for an output that could not be written.

Research/engineering simulation, NOT a medical device; patient-model outputs are
illustrative, not validated.
"""

import argparse
import math
import os
import sys
import time
from pathlib import Path

from sim import balance, outputs, scenario

BANNER = ("ITB simulator: research/engineering tool, NOT a medical device. "
          "Patient-model outputs are illustrative, not validated.")


class UsageError(Exception):
    """A bad command line or input file (exit 2)."""


def _load(path):
    try:
        return scenario.load(path)
    except scenario.ScenarioError as e:
        raise UsageError("\n".join(e.errors)) from None


def _params(sc, model):
    from sim import patient as pt

    name = model or sc.model
    try:
        return pt.patient_params(name)
    except ValueError as e:
        raise UsageError(str(e)) from None


def run_to_dir(sc, out, params=None, label=None, report=True, fluid=None):
    """Run ``sc`` writing its files into ``out``; returns the Result. Without a
    report, a report.html left by an earlier run is removed (it would describe
    another run). ``fluid``: as ``engine.Simulation`` takes it."""
    from sim import engine

    out = outputs.prepare_dir(out)
    with open(out / "trace.jsonl", "w") as f:
        write = f.write

        def sink(line):
            write(line)
            write("\n")

        result = engine.Simulation(sc, params=params, trace=sink, fluid=fluid).run()
    outputs.write_summary(out / "summary.json", result.summary)
    outputs.write_timeseries(out / "timeseries.csv", result.rows)
    if report:
        from sim import report as rp

        rp.write_report(out / "report.html",
                        [outputs.report_run(label or sc.name, result, sc)], sc.name)
    else:
        (out / "report.html").unlink(missing_ok=True)
    return result


def _print_result(sc, result, out, report):
    s = result.summary
    for msg in outputs.setup_warnings(result.setup):
        print(msg)
    refused = [c for c in s["commands"] if not c["accepted"]]
    print(f"{sc.name}: {s['duration_days']:g} days, patient {s['patient']}, seed {sc.seed}")
    print(f"  delivered {s['totals']['delivered_ug']:.1f} ug ({s['totals']['delivered_ml']:.3f} mL)"
          f" in {s['totals']['strokes']} strokes; max any 24 h"
          f" {s['max_delivered_ug_any_24h']:.1f} ug, any 1 h {s['max_delivered_ug_any_1h']:.1f} ug")
    codes = {}
    for a in s["alarms"]:
        codes[a["code"]] = codes.get(a["code"], 0) + 1
    shown = ", ".join(f"{c} x{n}" if n > 1 else c for c, n in codes.items())
    print(f"  alarms raised: {shown or 'none'}")
    print(f"  {len(s['commands'])} command(s), {len(refused)} refused")
    for c in refused:
        print(f"    day {c['t_s'] / 86400:.2f} {c['command']}: {outputs.refusal_text(c)}")
    for e in s["sim_events"]:
        print(f"  day {e['t_s'] / 86400:.2f} {e['event']} {e['args'] or ''}".rstrip())
    print(f"  outputs in {out}/ (summary.json, timeseries.csv, trace.jsonl)")
    if report:
        print(f"  report: {Path(out) / 'report.html'}")


BALANCE_OPTIONS = {  # --balance-* option -> sim.balance setting
    "balance_interval_s": "interval_s",
    "balance_noise_mg": "noise_mg",
    "balance_evaporation_mg_per_h": "evaporation_mg_per_h",
    "balance_resolution_mg": "resolution_mg",
    "balance_temperature_c": "temperature_c",
}


def _balance_settings(a, sc):
    """The balance settings of ``itbsim run`` (None without --balance); every
    problem is a UsageError before anything runs."""
    given = [k for k in BALANCE_OPTIONS if getattr(a, k) is not None]
    if a.balance is None:
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} needs --balance FILE.csv")
        return None
    settings = dict(balance.DEFAULTS)
    for opt, key in BALANCE_OPTIONS.items():
        if getattr(a, opt) is not None:
            settings[key] = getattr(a, opt)
    try:
        balance.check(settings["noise_mg"], settings["evaporation_mg_per_h"],
                      settings["resolution_mg"], settings["temperature_c"])
        n = balance.count(0, sc.duration_ms, settings["interval_s"])
    except ValueError as e:
        raise UsageError(f"--balance: {e}") from None
    if n > balance.MAX_READINGS:
        raise UsageError(f"--balance: {n} readings (over {balance.MAX_READINGS}); take a"
                         " longer --balance-interval-s")
    if balance.sidecar_path(a.balance) == Path(a.balance):
        raise UsageError(f"--balance {a.balance}: its settings go to a .json file of the"
                         " same name; give the readings another suffix (.csv)")
    return settings


def _write_balance(path, settings, sc, events):
    path = Path(path)
    outputs.prepare_dir(path.parent)
    rows = balance.iter_readings(events, 0, sc.duration_ms, settings["interval_s"],
                                 settings["noise_mg"], settings["evaporation_mg_per_h"],
                                 settings["resolution_mg"], settings["temperature_c"],
                                 balance.rng_for(sc.seed))
    n = balance.write(path, rows, settings["resolution_mg"])
    balance.write_sidecar(balance.sidecar_path(path),
                          balance.sidecar(sc, settings, events, n, path.name))
    return n


def cmd_run(a):
    sc = _load(a.scenario)
    if a.seed is not None:
        sc = sc.with_seed(a.seed)
    params = _params(sc, a.patient)
    settings = _balance_settings(a, sc)
    events = [] if settings is not None else None
    fluid = None if events is None else (lambda t, nl: events.append((t, nl)))
    t0 = time.perf_counter()
    result = run_to_dir(sc, a.out, params, report=not a.no_report, fluid=fluid)
    n = None if events is None else _write_balance(a.balance, settings, sc, events)
    for msg in outputs.setup_warnings(result.setup):  # also with --quiet
        print(f"itbsim: {msg}", file=sys.stderr)
    if not a.quiet:
        _print_result(sc, result, a.out, not a.no_report)
        if n is not None:
            print(f"  balance readings: {a.balance} ({n} readings; settings in"
                  f" {balance.sidecar_path(a.balance)})")
        print(f"  ({time.perf_counter() - t0:.2f} s)")
    return 0


def cmd_compare(a):
    from sim import report as rp

    # both files are checked before anything runs
    scs = [(tag, _load(path)) for tag, path in (("A", a.a), ("B", a.b))]
    params = [_params(sc, a.patient) for _tag, sc in scs]
    out = outputs.prepare_dir(a.out)
    runs = []
    for (tag, sc), p in zip(scs, params, strict=True):
        res = run_to_dir(sc, out / tag, p, report=False)
        runs.append(outputs.report_run(f"{tag}: {sc.name}", res, sc, group=tag))
        if not a.quiet:
            _print_result(sc, res, out / tag, False)
    rp.write_report(out / "report.html", runs, f"{runs[0]['label']} vs {runs[1]['label']}",
                    compare=True)
    if not a.quiet:
        print(f"comparison report: {out / 'report.html'}")
    return 0


def cmd_titrate(a):
    from sim import planner

    if a.patients != 1 and not a.simulate:
        raise UsageError("--patients needs --simulate")
    if a.patient:
        _params(None, a.patient)  # a bad model name is the option's error, before any file
    try:
        p = planner.plan(a.origin, a.screening_dose_ug, a.screening_effect_h, a.target_ug,
                         a.concentration, a.fill_ml, days=a.days, rule=a.rule,
                         step_pct=a.step_pct, capacity_ml=a.reservoir_ml)
    except (planner.PlanError, ValueError) as e:
        raise UsageError(str(e)) from None
    print(f"Titration plan ({a.origin} origin, {a.rule.upper()} start rule): screening"
          f" {p.screening_dose_ug:g} ug with {p.screening_effect_h:g} h effect -> start"
          f" {p.start_dose_ug:g} ug/day; +{p.step_pct} % per 24 h to {p.target_ug:g} ug/day"
          f" at {p.concentration_ug_per_ml} ug/mL, {p.fill_ml:g} mL fills")
    print(f"{'day':>4} {'ug/day':>9} {'mL/day':>8} {'res mL':>7} {'pess mL':>8}  notes")
    for r in p.rows:
        print(f"{r['day']:>4} {r['daily_dose_ug']:>9.1f} {r['daily_ml']:>8.4f}"
              f" {r['reservoir_ml']:>7.2f} {r['reservoir_pess_ml']:>8.2f}  {r['note']}")
    print("Refill calendar: " + (", ".join(f"day {d}" for d in p.refills) or "none in the plan")
          + (f"; next low-reservoir alarm day {p.next_low_reservoir_day}"
             if p.next_low_reservoir_day is not None else ""))
    if p.start_dose_ug < p.start_limit_ug:
        print(f"NOTE: the target is below the SR-10 start limit ({p.start_limit_ug:g} ug/day):"
              " the plan starts at the target and holds it")
    for w in p.warnings:
        print(f"NOTE: {w}")
    if p.target_reached_day >= len(p.rows):
        print(f"NOTE: --days {len(p.rows)} ends the plan before the target"
              f" (reached on day {p.target_reached_day})")
    if a.out or a.simulate:
        out = outputs.prepare_dir(a.out or "out/titrate")
        toml_path = out / "plan.toml"
        toml_path.write_text(p.scenario_toml(model=a.patient or "typical"))
        print(f"plan as a scenario: {toml_path}")
        if a.simulate:
            sc = _load(toml_path)
            if a.patients > 1:
                return _cohort(sc, out / "cohort", a.patients, a.jobs, a.seed, a.quiet)
            res = run_to_dir(sc, out / "run", _params(sc, None))
            if not a.quiet:
                _print_result(sc, res, out / "run", True)
    return 0


def cmd_replay(a):
    from sim import replay

    try:
        lines = Path(a.trace).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{a.trace}: cannot read: {e}") from None
    from sim import patient as pt

    try:
        params = pt.patient_params(a.patient)
        result = replay.replay(lines, params, a.trace)
    except ValueError as e:
        raise UsageError(f"{a.trace}: {e}") from None
    out = outputs.prepare_dir(a.out)
    outputs.write_summary(out / "summary.json", result.summary)
    outputs.write_timeseries(out / "timeseries.csv", result.rows)
    from sim import report as rp

    rp.write_report(out / "report.html", [result.report_run()], f"replay of {a.trace}")
    s = result.summary
    if not a.quiet:
        print(f"replayed {a.trace}: {s['duration_days']:.2f} days, {s['totals']['strokes']}"
              f" strokes, {s['totals']['delivered_ug']:.1f} ug nominal at the tip")
        print(f"report: {out / 'report.html'}")
    return 0


def cmd_cohort(a):
    sc = _load(a.scenario)
    return _cohort(sc, a.out, a.patients, a.jobs, a.seed if a.seed is not None else sc.seed,
                   a.quiet, a.patient)


def _cohort(sc, out, n, jobs, seed, quiet, model=None):
    from sim import cohort

    if not (1 <= n <= MAX_PATIENTS and 1 <= jobs <= 64):
        raise UsageError(f"--patients must be 1 to {MAX_PATIENTS} and --jobs 1 to 64")
    try:
        table, path = cohort.run_cohort(sc, out, n, jobs, seed, model, progress=not quiet)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(cohort.format_table(table))
    print(f"cohort report: {path}")
    return 0


def _seed(text):
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError("a seed is a non-negative integer")
    return v


MAX_PATIENTS = 10_000


def _finite(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError("must be a finite number")
    return v


def _positive(text):
    v = _finite(text)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return v


def _non_negative(text):
    v = _finite(text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be non-negative")
    return v


def _count(text):
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return v


def build_parser():
    from sim.patient import PATIENTS

    models = list(PATIENTS)
    ap = argparse.ArgumentParser(
        prog="itbsim", description="ITB pump simulator: the controller against a pump and"
        " patient model (also: python -m sim).",
        epilog="Research/engineering simulation, NOT a medical device. Patient-model outputs"
        " are illustrative, not validated.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run one scenario", description=(
        "Run SCENARIO.toml: the controller through its runner against the pump and patient"
        " models; writes summary.json, timeseries.csv, trace.jsonl and report.html."))
    p.add_argument("scenario", help="scenario file (TOML; README 'Scenario files')")
    p.add_argument("--out", default="out/run", help="output directory (default: out/run)")
    p.add_argument("--seed", type=_seed, help="override the scenario's seed")
    p.add_argument("--patient", choices=models, help="override the scenario's patient model")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    g = p.add_argument_group(
        "balance readings", "--balance FILE.csv also writes what a balance under the catheter"
        " tip would read (CSV time_s,mass_g; the settings in FILE.json), for rehearsing the"
        " bench analysis (IEC 60601-2-24 start-up and trumpet curves): the pump model's true"
        " volume per stroke (the tubing is full: each stroke pushes it out of the tip) times"
        " the water density, minus evaporation, plus noise, rounded; its own random stream,"
        " so the run is the same with or without it (sim/balance.py)")
    g.add_argument("--balance", metavar="FILE.csv", help="write balance readings here")
    d = balance.DEFAULTS
    for opt, kind, text in (
            ("--balance-interval-s", _positive, "seconds between readings"),
            ("--balance-noise-mg", _non_negative, "sd of the balance noise, mg"),
            ("--balance-evaporation-mg-per-h", _non_negative, "evaporation, mg/h"),
            ("--balance-resolution-mg", _non_negative, "reading resolution, mg (0: none)"),
            ("--balance-temperature-c", _finite, "water temperature for the density, C (0-40)")):
        key = BALANCE_OPTIONS[opt[2:].replace("-", "_")]
        g.add_argument(opt, type=kind, metavar="X", help=f"{text} (default {d[key]:g})")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("compare", help="two scenarios side by side in one report", description=(
        "Run A.toml and B.toml (both checked first) into OUT/A and OUT/B and write one"
        " report.html with both."))
    p.add_argument("a", help="scenario A (TOML)")
    p.add_argument("b", help="scenario B (TOML)")
    p.add_argument("--out", default="out/compare", help="output directory (default: out/compare)")
    p.add_argument("--patient", choices=models,
                   help="patient model for both (default: each scenario's)")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("titrate", help="plan a titration from screening to a target", description=(
        "Day-by-day titration plan that obeys the label ranges and SR-8/SR-10, with"
        " mL/day, reservoir and the refill calendar. --out writes it as OUT/plan.toml;"
        " --simulate runs it (OUT/run, or OUT/cohort with --patients N)."))
    p.add_argument("--origin", choices=("spinal", "cerebral", "paediatric"), required=True)
    p.add_argument("--screening-dose-ug", type=float, default=50.0,
                   help="effective screening bolus, ug (default 50)")
    p.add_argument("--screening-effect-h", type=float, required=True,
                   help="how long the screening bolus worked, hours")
    p.add_argument("--rule", choices=("us", "eu"), default="us",
                   help="start rule: us (8 h) or eu (12 h) (default us)")
    p.add_argument("--target-ug", type=float, required=True, help="target daily dose, ug/day")
    p.add_argument("--step-pct", type=int, help="increase per 24 h (default: mid label range)")
    p.add_argument("--concentration", type=int, default=500, help="ug/mL (default 500)")
    p.add_argument("--fill-ml", type=float, default=20.0, help="fill volume, mL (default 20)")
    p.add_argument("--reservoir-ml", type=float, help="reservoir capacity, mL (default 20)")
    p.add_argument("--days", type=int, help="plan length (default: target + 14 days)")
    p.add_argument("--out", help="write plan.toml (and the simulation) here"
                   " (default with --simulate: out/titrate)")
    p.add_argument("--simulate", action="store_true", help="run the plan in the simulator")
    p.add_argument("--patient", choices=models, help="virtual patient for --simulate"
                   " (default typical)")
    p.add_argument("--patients", type=_count, default=1,
                   help="cohort size for --simulate (default 1: one patient)")
    p.add_argument("--jobs", type=_count, default=2, help="processes for a cohort (default 2)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the simulation (default 0)")
    p.add_argument("--quiet", action="store_true", help="no simulation summary or progress bar")
    p.set_defaults(fn=cmd_titrate)

    p = sub.add_parser("replay", help="a recorded runner trace through the patient model",
                       description=(
        "Re-run a runner trace (trace.jsonl of a simulation, or exported from a board)"
        " through the controller and the patient model; writes summary.json (\"source\":"
        " \"trace\"), timeseries.csv and report.html."))
    p.add_argument("trace", help="runner trace (JSONL) from a simulation or a board")
    p.add_argument("--patient", choices=models, default="typical",
                   help="patient model (default typical)")
    p.add_argument("--out", default="out/replay", help="output directory (default: out/replay)")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser("cohort", help="a seeded cohort of virtual patients in parallel",
                       description=(
        "Run SCENARIO.toml for N virtual patients (clearance and half-life sampled"
        " jointly around the model) on J processes; writes cohort.csv and cohort.json"
        " (the outcome table), patients/NNN.json (each summary) and report.html."))
    p.add_argument("scenario", help="scenario file (TOML)")
    p.add_argument("--patients", type=_count, default=20,
                   help=f"cohort size (default 20, at most {MAX_PATIENTS})")
    p.add_argument("--jobs", type=_count, default=2, help="parallel processes (default 2)")
    p.add_argument("--seed", type=_seed, help="cohort seed (default: the scenario's)")
    p.add_argument("--patient", choices=models,
                   help="the model at the cohort's centre (default: the scenario's)")
    p.add_argument("--out", default="out/cohort", help="output directory (default: out/cohort)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_cohort)

    p = sub.add_parser("board", help="a virtual board: the real firmware in MicroPython",
                       description=(
        "Start the virtual board (firmware/app.py on firmware/board/virtual.py in the"
        " MicroPython unix port, heap capped) on a pseudo-terminal in raw mode, or on a"
        " TCP socket for pyserial's socket:// URLs, and run until Ctrl-C. Its flash, RTC"
        " and identity live in --state, so it recovers across runs like a real board."
        " Connect with itbctl --port <printed path or URL>."))
    p.add_argument("--state", default="out/vboard", help="state directory (default out/vboard)")
    p.add_argument("--accelerate", type=_count, default=1,
                   help="run the therapy clock N times faster (dev test clock; default 1)")
    p.add_argument("--socket", type=int, metavar="PORT",
                   help="serve TCP PORT (0: any free port) instead of a pseudo-terminal")
    p.add_argument("--provision", action="store_true",
                   help="hold the provisioning button (itbctl keys provision)")
    p.add_argument("--release", action="store_true",
                   help="a release build: no test clock, no fault injection")
    p.add_argument("--rtc-invalid", action="store_true", help="the RTC has lost its time")
    p.add_argument("--heapsize", default="512K", help="MicroPython heap (default 512K)")
    p.add_argument("--verbose", action="store_true", help="print the board's status lines")
    p.set_defaults(fn=cmd_board)
    return ap


def cmd_board(a):
    from host_tools.vboard import serve

    return serve(a)


def main(argv=None):
    a = build_parser().parse_args(argv)
    try:
        return a.fn(a)
    except UsageError as e:
        print(f"itbsim {a.cmd}: error:\n{e}" if "\n" in str(e) else f"itbsim {a.cmd}: error: {e}",
              file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (| head): stop quietly, as a Unix tool does
        sys.stdout = open(os.devnull, "w")  # the interpreter flushes it at exit
        return 0
    except OSError as e:
        print(f"itbsim {a.cmd}: cannot write output: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
