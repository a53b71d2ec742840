"""``itbsim`` (sim/cli.py, also ``python -m sim``): the outputs of each command,
exit codes, errors on stderr without a traceback; ``replay`` and ``cohort``."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim import cli, cohort, engine, outputs
from sim import scenario as sc

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def test_run_writes_every_output(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", str(EXAMPLES / "emergency_stop_overdose.toml"), "--out",
                     str(out)]) == 0
    text = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"].startswith("emergency stop")
    with open(out / "timeseries.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(outputs.TIMESERIES_COLUMNS)
    assert {r["model_note"] for r in rows} == {"illustrative, not validated"}
    assert len(rows) == 5 * 24 + 1
    trace = (out / "trace.jsonl").read_text().splitlines()
    assert json.loads(trace[0])["k"] == "config"
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 4 and "illustrative, not validated" in html


def test_run_options(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    base = ["run", str(EXAMPLES / "refill_concentration_change.toml"), "--no-report", "--quiet"]
    assert cli.main(base + ["--out", str(a), "--seed", "11", "--patient", "slow-clearance"]) == 0
    assert cli.main(base + ["--out", str(b)]) == 0
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    assert (sa["seed"], sa["patient"]) == (11, "slow-clearance")
    assert (sb["seed"], sb["patient"]) == (4, "typical")
    assert not (a / "report.html").exists()


def test_bad_scenario_exits_2_with_every_error_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('duration_days = 1\nwheels = 4\n[drug]\nconcentration_ug_per_ml = 3\n'
                   'fill_volume_ml = 20\n[prescription]\ndaily_dose_ug = 100\n')
    out = tmp_path / "out"
    assert cli.main(["run", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "wheels: unknown key" in err and "not in the pump's drug library" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_unknown_patient_and_missing_file(tmp_path, capsys):
    ex = str(EXAMPLES / "missed_refill.toml")
    with pytest.raises(SystemExit) as e:
        cli.main(["run", ex, "--out", str(tmp_path), "--patient", "nobody"])
    assert e.value.code == 2 and "nobody" in capsys.readouterr().err
    assert cli.main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_python_m_sim_and_help():
    for args in (["--help"], ["run", "--help"], ["titrate", "--help"], ["cohort", "--help"],
                 ["compare", "--help"], ["replay", "--help"]):
        p = subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True,
                           cwd=REPO, check=False)
        assert p.returncode == 0 and "usage: itbsim" in p.stdout, p.stderr
    p = subprocess.run([sys.executable, "-m", "sim"], capture_output=True, text=True, cwd=REPO,
                       check=False)
    assert p.returncode == 2 and "required" in p.stderr


def test_titrate_prints_the_plan_and_writes_a_scenario(tmp_path, capsys):
    assert cli.main(["titrate", "--origin", "cerebral", "--screening-effect-h", "10",
                     "--target-ug", "100", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "start 50 ug/day" in text and "Refill calendar" in text
    s = sc.load(tmp_path / "plan.toml")
    assert s.program["daily_dose_ng"] == 50_000 and s.origin == "cerebral"
    assert cli.main(["titrate", "--origin", "spinal", "--screening-effect-h", "6",
                     "--target-ug", "400", "--step-pct", "40"]) == 2
    assert "label range" in capsys.readouterr().err


def test_titrate_simulate(tmp_path):
    assert cli.main(["titrate", "--origin", "spinal", "--screening-effect-h", "6",
                     "--target-ug", "150", "--days", "5", "--out", str(tmp_path), "--simulate",
                     "--quiet"]) == 0
    assert (tmp_path / "run" / "report.html").exists()


def test_compare_one_report_two_runs(tmp_path):
    a, b = EXAMPLES / "refill_concentration_change.toml", EXAMPLES / "taper_before_explant.toml"
    assert cli.main(["compare", str(a), str(b), "--out", str(tmp_path), "--quiet"]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "A: refill with a concentration change" in html and "B: taper before explant" in html
    assert (tmp_path / "A" / "summary.json").exists() and (tmp_path / "B" / "trace.jsonl").exists()


def test_replay_of_a_run_gives_its_nominal_delivery(tmp_path):
    """A run's trace replayed through the patient model: without stroke error the
    controller's nominal mass at the tip (replay) equals the engine's truth."""
    s = sc.load(EXAMPLES / "refill_concentration_change.toml")
    s.stroke_error_pct = 0.0
    lines = []
    res = engine.Simulation(s, trace=lines.append).run()
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(lines) + "\n")
    assert cli.main(["replay", str(trace), "--out", str(tmp_path / "r")]) == 0
    got = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert got["source"] == "trace"
    assert got["totals"]["delivered_ug"] == pytest.approx(res.summary["totals"]["delivered_ug"])
    assert got["totals"]["strokes"] == res.summary["totals"]["strokes"]
    assert got["max_delivered_ug_any_24h"] == pytest.approx(res.summary["max_delivered_ug_any_24h"])
    assert [c["command"] for c in got["commands"]] == ["refill", "prime", "program", "refill"]


def test_replay_rejects_what_is_not_a_trace(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"k":"advance","t":5}\n')
    assert cli.main(["replay", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "config record" in capsys.readouterr().err
    bad.write_text("not json\n")
    assert cli.main(["replay", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "line 1" in capsys.readouterr().err


def test_cohort_is_deterministic_and_parallel(tmp_path, capsys):
    """A cohort run is a pure function of (scenario, seed): the outcome table is the
    same with 1 or 2 processes; patients differ from each other."""
    ex = str(EXAMPLES / "emergency_stop_overdose.toml")
    for jobs, out in ((1, "a"), (2, "b")):
        assert cli.main(["cohort", ex, "--patients", "3", "--jobs", str(jobs), "--seed", "5",
                         "--out", str(tmp_path / out), "--quiet"]) == 0
    a = json.loads((tmp_path / "a" / "cohort.json").read_text())
    b = json.loads((tmp_path / "b" / "cohort.json").read_text())
    assert a == b and len(a) == 3 and list(a[0]) == list(cohort.TABLE_COLUMNS)
    assert len({r["cl_ml_per_h"] for r in a}) == 3
    assert (tmp_path / "a" / "report.html").exists()
    assert "median:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["cohort", ex, "--patients", "0"])
    assert e.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_refused_set_up_is_loud_and_recorded(tmp_path, capsys):
    """A prescription the controller refuses at set-up (over the SR-10 start dose)
    leaves an unprogrammed pump: the run says so first, on stdout and stderr, and
    summary.json and the report carry the refusal with the allowed value."""
    bad = tmp_path / "s.toml"
    bad.write_text('duration_days = 1\n[drug]\nconcentration_ug_per_ml = 500\n'
                   'fill_volume_ml = 20\n[prescription]\ndaily_dose_ug = 300\n'
                   'screening_dose_ug = 50\nscreening_effect_h = 6\n')
    assert cli.main(["run", str(bad), "--out", str(tmp_path / "o")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("WARNING: set-up program refused, START_RULE")
    assert "allowed: 100 ug/day" in out and "set-up program refused" in err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [(r["command"], r["accepted"]) for r in summary["setup"]] == [
        ("refill", True), ("prime", True), ("program", False)]
    assert "program (set-up)" in (tmp_path / "o" / "report.html").read_text()


def test_no_report_removes_a_stale_one(tmp_path, capsys):
    out = tmp_path / "o"
    ex = str(EXAMPLES / "emergency_stop_overdose.toml")
    assert cli.main(["run", ex, "--out", str(out), "--quiet"]) == 0
    assert (out / "report.html").exists()
    assert cli.main(["run", ex, "--out", str(out), "--no-report"]) == 0
    assert not (out / "report.html").exists() and "report:" not in capsys.readouterr().out


def test_compare_checks_both_files_before_running(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("duration_days = 1\n")
    good = str(EXAMPLES / "emergency_stop_overdose.toml")
    assert cli.main(["compare", good, str(bad), "--out", str(tmp_path / "c")]) == 2
    assert "[drug]: missing table" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_replay_of_a_binary_file_and_titrate_option_errors(tmp_path, capsys):
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\xff\xfe\n")
    assert cli.main(["replay", str(binary), "--out", str(tmp_path / "r")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert cli.main(["titrate", "--origin", "spinal", "--screening-effect-h", "6",
                     "--target-ug", "400", "--patients", "3"]) == 2
    assert "--patients needs --simulate" in capsys.readouterr().err
    assert cli.main(["titrate", "--origin", "spinal", "--screening-effect-h", "6",
                     "--target-ug", "80", "--days", "3"]) == 0
    assert "below the SR-10 start limit" in capsys.readouterr().out


def test_sim_events_are_reported(tmp_path):
    s = sc.loads('duration_days = 2\n[drug]\nconcentration_ug_per_ml = 2000\n'
                 'fill_volume_ml = 20\n[prescription]\ndaily_dose_ug = 400\n'
                 '[[events]]\nat = "1d"\nmotor_fault = { duration = "1h" }\n')
    res = engine.Simulation(s).run()
    assert res.summary["sim_events"] == [
        {"t_s": 86_400, "event": "motor_fault", "args": {"duration": "1h"}, "index": 0}]


def test_replay_edge_traces(tmp_path, capsys):
    """Attack findings: a trace with only its config record replays to an empty
    run; a time past a century is refused (it would mean millions of hourly rows);
    hours while the power was off are OFF rows."""
    only = tmp_path / "c.jsonl"
    only.write_text('{"cfg":{},"k":"config","t":0}\n')
    assert cli.main(["replay", str(only), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    huge = tmp_path / "h.jsonl"
    huge.write_text('{"cfg":{},"k":"config","t":0}\n{"k":"advance","t":' + "1" * 24 + "}\n")
    assert cli.main(["replay", str(huge), "--out", str(tmp_path / "b")]) == 2
    assert "past 36500 days" in capsys.readouterr().err
    s = sc.loads('duration_days = 1\n[drug]\nconcentration_ug_per_ml = 2000\n'
                 'fill_volume_ml = 20\n[prescription]\ndaily_dose_ug = 400\n'
                 '[[events]]\nat = "10h 30min"\npower_cut = { duration = "3h" }\n')
    lines = []
    engine.Simulation(s, trace=lines.append).run()
    trace = tmp_path / "p.jsonl"
    trace.write_text("\n".join(lines) + "\n")
    assert cli.main(["replay", str(trace), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    with open(tmp_path / "p" / "timeseries.csv") as f:
        states = {float(r["t_h"]): r["state"] for r in csv.DictReader(f)}
    assert [states[h] for h in (10.0, 11.0, 13.0, 14.0)] == ["RUNNING", "OFF", "OFF", "RUNNING"]


def test_cohort_outcomes_use_every_hour_of_a_long_run(tmp_path):
    """A run over 60 days sends daily rows back for the plots, but its outcome row
    (peaks, time in range) comes from every hourly sample, as a direct run gives."""
    from sim import patient as pt

    text = ('duration_days = 61\n[drug]\nconcentration_ug_per_ml = 2000\nfill_volume_ml = 20\n'
            '[prescription]\ndaily_dose_ug = 400\n[[events]]\nat = "30d 3h"\n'
            'stop = "procedure"\n[[events]]\nat = "30d 13h"\nresume = true\n')
    s = sc.loads(text)
    table, _path = cohort.run_cohort(s, tmp_path, 1, 1, 0, progress=False)
    params = pt.cohort(1, 0, "typical")[0]
    direct = engine.Simulation(s.with_seed(0), params=params).run()
    assert table[0] == cohort.outcome(params.name, params, direct.summary, direct.rows)
    daily = direct.rows[::24]
    assert table[0]["peak_withdrawal_risk"] > max(r["withdrawal_risk"] for r in daily)


def test_report_lines_come_from_the_device_configuration():
    base = ('duration_days = 1\n[drug]\nconcentration_ug_per_ml = 2000\nfill_volume_ml = 20\n'
            '[prescription]\ndaily_dose_ug = 400\nmax_hourly_dose_ug = 40\n')
    assert outputs.limits_for_report(sc.loads(base)) == {
        "cap_24h_ug": None, "cap_1h_ug": 40.0, "low_reservoir_ml": 4.0}
    s = sc.loads(base.replace("[drug]", "[pump]\nlow_reservoir_alarm_ml = 3\n[drug]"))
    assert outputs.limits_for_report(s)["low_reservoir_ml"] == 3.0
