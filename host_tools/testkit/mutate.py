"""Run the mutation suite: apply each fault of ``mutants.toml`` to a copy of
``firmware/itb``, run the test suite against it (stopping at the first failure)
and print which test killed it. Exit status 0 only if every mutant was killed.

The working tree is never modified: each mutant gets its own copy of ``firmware/``
in a temporary directory, and pytest is pointed at it with ``ITB_FIRMWARE_DIR``
(``tests/conftest.py`` puts that directory first on ``sys.path``; the mutant's
copy is checked to be the one imported before the suite runs).

    python -m host_tools.testkit.mutate              # every mutant
    python -m host_tools.testkit.mutate --quick      # the CI subset
    python -m host_tools.testkit.mutate catch-up window-closed
    python -m host_tools.testkit.mutate --list
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
MUTANTS_FILE = Path(__file__).with_name("mutants.toml")
FIELDS = {"name": str, "rules": list, "why": str, "file": str, "find": str, "replace": str}
# Interpreter-comparison, toolchain and tool tests run the same (mutated) code on both
# sides, check the language subset, or only format results; the patient model, the
# report and the command line do not dose: every mutant here is valid code, so they
# cannot tell one apart and only cost time. (The simulator's engine, example and
# planner tests drive the controller and stay.)
SKIP_FILES = ("test_micropython", "test_firmware_subset", "test_verification_tools",
              "test_sim_patient", "test_sim_report", "test_sim_cli", "test_sim_scenario",
              # the virtual board (a MicroPython process per test): slow, and its dosing
              # is the same firmware/itb the host tests already run under each mutant
              "test_link", "test_hil", "test_fuzz_board", "test_app", "test_itbctl",
              "test_deploy",
              # the Pico adapter in the unix port (a compile and a 30-day run), the pin map
              "test_board_micropython", "test_hardware",
              # bench analysis of balance readings: no firmware in it
              "test_trumpet")
LAST_FILES = ("test_property_machine.py",)  # slowest killer last: -x stops earlier
RULE = re.compile(r"^SR-\d+$")
KILL = re.compile(r"^FAILED (\S+::\S+)")  # a test that ran and failed; not a collection ERROR


class MutantError(ValueError):
    """``mutants.toml`` is malformed or an entry no longer matches the firmware."""


def load(path=MUTANTS_FILE):
    """The mutants as a list of dicts (fields of ``FIELDS`` plus ``quick``).

    Raises MutantError on a missing or mistyped field, a duplicate name, or a
    ``find`` text that does not occur exactly once in its file (a stale entry)."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    mutants = data.get("mutant")
    if not isinstance(mutants, list) or not mutants:
        raise MutantError("%s: no [[mutant]] entries" % path)
    seen = set()
    for i, m in enumerate(mutants):
        for key, typ in FIELDS.items():
            # replace may be empty (a deletion); everything else must say something
            if not isinstance(m.get(key), typ) or (not m[key] and key != "replace"):
                raise MutantError("mutant %d (%s): %r must be a non-empty %s"
                                  % (i + 1, m.get("name", "?"), key, typ.__name__))
        unknown = set(m) - set(FIELDS) - {"quick"}
        if unknown:
            raise MutantError("mutant %s: unknown field(s) %s" % (m["name"], sorted(unknown)))
        if m["name"] in seen:
            raise MutantError("mutant %s: duplicate name" % m["name"])
        seen.add(m["name"])
        m.setdefault("quick", False)
        if not isinstance(m["quick"], bool):
            raise MutantError("mutant %s: quick must be true or false" % m["name"])
        bad = [r for r in m["rules"] if not isinstance(r, str) or not RULE.match(r)]
        if bad:
            raise MutantError("mutant %s: rules must be like \"SR-5\": %r" % (m["name"], bad))
        if Path(m["file"]).name != m["file"] or not m["file"].endswith(".py"):
            raise MutantError("mutant %s: file must be a module name in firmware/itb, got %r"
                              % (m["name"], m["file"]))
        src = FIRMWARE / "itb" / m["file"]
        if not src.is_file():
            raise MutantError("mutant %s: no file firmware/itb/%s" % (m["name"], m["file"]))
        count = src.read_text().count(m["find"])
        if count != 1:
            raise MutantError("mutant %s: `find` occurs %d times in %s (must be exactly once)"
                              % (m["name"], count, m["file"]))
    return mutants


def test_files():
    """The test files a mutant is run against, fastest killers first."""
    files = sorted(p for p in (ROOT / "tests").glob("test_*.py")
                   if not p.name.startswith(SKIP_FILES))
    files.sort(key=lambda p: p.name in LAST_FILES)
    return [str(p.relative_to(ROOT)) for p in files]


def _killer(output):
    """The first test that failed (``FAILED file::test``), or None: an ``ERROR``
    (collection or fixture) is not a kill, the mutant broke the suite itself."""
    for line in output.splitlines():
        m = KILL.match(line)
        if m:
            return m.group(1)
    return None


def _suite(files, firmware_env, python, timeout_s):
    """Run ``files`` with pytest (stop at the first failure, ``ci`` profile unless
    set) in an environment naming the firmware under test. Returns the completed
    process, or None when it gave no verdict within ``timeout_s``."""
    env = dict(os.environ)
    env.pop("ITB_FIRMWARE_DIR", None)
    env.update(firmware_env)
    env.setdefault("HYPOTHESIS_PROFILE", "ci")
    env.setdefault("ITB_CUT_STRIDE", "7")  # a coarser power-cut sweep per mutant
    cmd = [python, "-m", "pytest", "-x", "-q", "--tb=line", "-rfE", "-p", "no:cacheprovider",
           "--no-cov", *files]
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return None


def _tail(proc, n):
    return " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-n:])


def baseline(files, python=sys.executable, timeout_s=900):
    """Run ``files`` against an unmutated copy of the firmware, placed and named as a
    mutant's is (the control run): a kill only means something if the same suite
    passes without the fault, and a test that fails on any copy (one that reads the
    repository through the firmware's folder) must fail here, not "kill" every
    mutant. Returns ``(ok, seconds, tail of the output)``."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="itb-control-") as tmp:
        fw = Path(tmp) / "firmware"
        shutil.copytree(FIRMWARE, fw, ignore=shutil.ignore_patterns("__pycache__"))
        proc = _suite(files, _copy_env(fw), python, timeout_s)
    if proc is None:
        return False, time.monotonic() - t0, "no verdict after %d s" % timeout_s
    return proc.returncode == 0, time.monotonic() - t0, _tail(proc, 5)


def _copy_env(fw):
    """The environment that points the test suite at the firmware copy ``fw``."""
    return {"ITB_FIRMWARE_DIR": str(fw), "PYTHONPATH": str(fw), "PYTHONDONTWRITEBYTECODE": "1"}


def run_one(m, files, python=sys.executable, timeout_s=900):
    """Apply mutant ``m`` to a copy of the firmware and run ``files``.

    Returns ``{"name", "status": killed|survived|timeout|invalid, "by", "seconds"}``."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="itb-mutant-") as tmp:
        fw = Path(tmp) / "firmware"
        shutil.copytree(FIRMWARE, fw, ignore=shutil.ignore_patterns("__pycache__"))
        target = fw / "itb" / m["file"]
        text = target.read_text()
        mutated = text.replace(m["find"], m["replace"], 1)
        out = {"name": m["name"], "status": "invalid", "by": None}
        try:
            compile(mutated, str(target), "exec")
        except SyntaxError as e:
            out["by"] = "mutant does not compile: %s" % e
            out["seconds"] = time.monotonic() - t0
            return out
        target.write_text(mutated)
        fw_env = _copy_env(fw)
        probe = subprocess.run(
            [python, "-c", "import itb.%s as m; print(m.__file__)" % target.stem],
            cwd=ROOT, env=dict(os.environ, **fw_env), capture_output=True, text=True,
            check=False)
        if not probe.stdout.strip().startswith(str(fw)):
            out["by"] = "mutant copy not imported: %s" % (probe.stdout + probe.stderr).strip()
            out["seconds"] = time.monotonic() - t0
            return out
        proc = _suite(files, fw_env, python, timeout_s)
        if proc is None:
            # not counted as killed: a too-short --timeout must not hide a survivor
            out.update(status="timeout", by="no verdict after %d s (a hang, or raise --timeout)"
                       % timeout_s)
        else:
            killer = _killer(proc.stdout)
            if proc.returncode == 0:
                out["status"] = "survived"
            elif proc.returncode == 1 and killer:
                out.update(status="killed", by=killer)
            else:
                out["by"] = "pytest exit %d: %s" % (proc.returncode, _tail(proc, 3))
    out["seconds"] = time.monotonic() - t0
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m host_tools.testkit.mutate",
        description="Apply each fault of mutants.toml to a copy of firmware/itb, run the "
        "test suite against it and print which test killed it. Exit 1 if any mutant "
        "survives or an entry is stale.")
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="only mutants marked quick = true")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                    help="mutants run in parallel (default: CPU count)")
    ap.add_argument("--timeout", type=int, default=900, metavar="S",
                    help="seconds before a run gives no verdict (status timeout: fails)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the control run of the unmutated suite")
    args = ap.parse_args(argv)
    try:
        mutants = load()
    except (MutantError, tomllib.TOMLDecodeError, OSError) as e:
        print("mutate: %s" % e, file=sys.stderr)
        return 2
    names = {m["name"] for m in mutants}
    unknown = [n for n in args.names if n not in names]
    if unknown:
        print("mutate: unknown mutant(s): %s (see --list)" % ", ".join(unknown), file=sys.stderr)
        return 2
    if args.names:
        mutants = [m for m in mutants if m["name"] in args.names]
    if args.quick:
        mutants = [m for m in mutants if m["quick"]]
    if not mutants:
        print("mutate: no mutant selected (--quick keeps only entries with quick = true)",
              file=sys.stderr)
        return 2
    if args.jobs < 1 or args.timeout < 1:
        print("mutate: --jobs and --timeout must be at least 1", file=sys.stderr)
        return 2
    if args.list:
        for m in mutants:
            print("%-28s %-14s %s%s" % (m["name"], ",".join(m["rules"]), m["why"],
                                        "  [quick]" if m["quick"] else ""))
        return 0
    files = test_files()
    print("mutate: %d mutant(s), %d job(s), tests: %s" % (len(mutants), args.jobs,
                                                         " ".join(files)), flush=True)
    t0 = time.monotonic()
    if not args.no_baseline:
        ok, secs, tail = baseline(files, timeout_s=args.timeout)
        if not ok:
            print("mutate: the suite fails without any mutant (%.0f s): %s" % (secs, tail),
                  file=sys.stderr)
            return 2
        print("mutate: control run (no mutant) passed in %.0f s" % secs, flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda m: run_one(m, files, timeout_s=args.timeout), mutants))
    width = max(len(m["name"]) for m in mutants)
    for m, r in zip(mutants, results, strict=True):
        print("%-*s  %-8s %5.1fs  %-16s %s" % (width, r["name"], r["status"], r["seconds"],
                                               ",".join(m["rules"]), r["by"] or "-"))
    killed = sum(r["status"] == "killed" for r in results)
    print("mutate: %d/%d killed in %.0f s" % (killed, len(results), time.monotonic() - t0))
    if killed < len(results):
        print("mutate: a survivor needs a test that fails on it (see README, Mutation suite);"
              " an invalid or timed-out entry needs fixing")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
