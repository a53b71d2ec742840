"""sim/report.py: one self-contained HTML file per set of runs (synthetic runs here)."""

import math
import re
import subprocess
import sys

import pytest

from sim import report

N_PLOTS = 4  # dose, reservoir, concentrations, spasticity + risk


def make_run(label="run", group="A", *, days=3, seed=0, scenario="synthetic", n_commands=4):
    """A small run dict of the report's input shape, made with simple formulas."""
    shift = 0.07 * seed
    ts = []
    for i in range(days * 24 + 1):
        t_h = float(i)
        dose = 100.0 if t_h < 24 else 120.0 + 10 * seed
        true = 20.0 - 0.02 * t_h * (1 + shift)
        est = true + 0.05 * math.sin(t_h / 5)
        csf = 40 + 10 * math.sin(t_h / 4 + seed) + 5 * seed
        ts.append(
            {
                "t_h": t_h,
                "programmed_daily_dose_ug": dose,
                "delivered_ug": dose / 24,
                "reservoir_true_ml": true,
                "reservoir_est_ml": est,
                "reservoir_pess_ml": est - 0.01 * t_h,
                "reservoir_opt_ml": est + 0.01 * t_h,
                "csf_ng_per_ml": csf,
                "effect_ng_per_ml": 0.8 * csf,
                "mas": 2.0 + math.cos(t_h / 6) * 0.5,
                "withdrawal_risk": 0.1 + 0.05 * seed,
                "sedation": 0.2 + 0.1 * math.sin(t_h / 8) ** 2,
                "state": "running",
            }
        )
    daily = [
        {
            "day": d,
            "programmed_daily_dose_ug": 100.0 if d == 0 else 120.0,
            "delivered_ug": 99.5 + d + seed,
            "reservoir_ml": 20.0 - 0.48 * (d + 1),
        }
        for d in range(days)
    ]
    commands = [
        {
            "t_s": 3600 * k + 60,
            "command": f"cmd_{k % 7}",
            "accepted": k % 3 != 2,
            "reason": None if k % 3 != 2 else "DOWN_CAP",
            "args": {"daily_dose_ug": 100 + k},
        }
        for k in range(n_commands)
    ]
    return {
        "label": label,
        "group": group,
        "summary": {
            "scenario": scenario,
            "duration_days": days,
            "totals": {"delivered_ug": 330.0 + seed, "delivered_ml": 0.66, "strokes": 264},
            "max_delivered_ug_any_24h": 121.0 + seed,
            "max_delivered_ug_any_1h": 5.2,
            "daily": daily,
            "alarms": [
                {"t_s": 90_061, "code": "LOW_RESERVOIR", "priority": "medium"},
                {"t_s": 200_000, "code": "OCCLUSION", "priority": "high"},
                {"t_s": 250_000, "code": "BATTERY_LOW", "priority": "low"},
            ],
            "commands": commands,
        },
        "timeseries": ts,
        "low_reservoir_ml": 18.5,
        "projected_refill_day": 2.5 + 0.1 * seed,
        "cap_24h_ug": 150.0,
    }


def svgs(text):
    return re.findall(r"<svg\b", text)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    path = tmp_path_factory.mktemp("single") / "report.html"
    run = make_run("typical (seed 1)")
    report.write_report(path, [run], "Single run", notes=["a note & more"])
    return path, path.read_text(encoding="utf-8"), run


def test_one_self_contained_html_document(single):
    _, text, _ = single
    assert text.startswith("<!DOCTYPE html>")
    assert text.count("<html") == 1 and text.rstrip().endswith("</html>")
    assert len(svgs(text)) == N_PLOTS
    assert text.count("</svg>") == N_PLOTS
    for bad in ('src="http', "src='http", "<link", "<script", 'href="http', "url(http", "<?xml"):
        assert bad not in text, bad
    assert "@media print" in text and "break-before: page" in text


def test_banner_and_header(single):
    _, text, _ = single
    assert report.BANNER in text
    assert "Single run" in text and "synthetic" in text
    assert "a note &amp; more" in text
    # every patient-model plot says so in its title (titles are SVG text)
    assert text.count("illustrative, not validated") >= 4


def test_every_alarm_and_command_in_the_tables(single):
    _, text, run = single
    for alarm in run["summary"]["alarms"]:
        assert alarm["code"] in text
        assert report.fmt_time(alarm["t_s"]) in text
    for cmd in run["summary"]["commands"]:
        assert cmd["command"] in text
    assert "day 1 01:01" in text  # t_s 90 061
    assert 'class="prio-high"' in text and "DOWN_CAP" in text


def test_svg_ids_unique_in_page(single):
    _, text, _ = single
    ids = re.findall(r'\sid="([^"]+)"', text)
    assert len(ids) == len(set(ids))


def test_fmt_time():
    assert report.fmt_time(0) == "day 0 00:00"
    assert report.fmt_time(86_400 * 3 + 3600 * 7 + 59 * 60 + 59) == "day 3 07:59"


def test_hostile_label_is_escaped(tmp_path):
    evil = '<script>alert("x")</script> $\\frac{1}{0}$ _hidden'
    run = make_run(evil, scenario="<b>scen</b>")
    run["summary"]["commands"][0].update(accepted=False, reason="<img src=x onerror=alert(1)>")
    run["summary"]["alarms"][0]["code"] = "<i>CODE</i>"
    path = report.write_report(tmp_path / "r.html", [run], "<script>t</script>", compare=True)
    text = path.read_text(encoding="utf-8")
    assert "<script" not in text and "<img" not in text and "<b>" not in text
    assert "&lt;script&gt;" in text and "&lt;img src=x" in text and "&lt;i&gt;CODE" in text


def test_cohort_draws_median_and_band(tmp_path):
    runs = [make_run(f"seed {s}", seed=s) for s in range(5)]
    table = [
        {"label": r["label"], "max 24 h (µg)": 121.0 + s, "refill": s % 2 == 0}
        for s, r in enumerate(runs)
    ]
    path = report.write_report(tmp_path / "c.html", runs, "Cohort", cohort_table=table)
    text = path.read_text(encoding="utf-8")
    assert len(svgs(text)) == N_PLOTS
    for gid in (
        "conc-g0-csf-band",
        "spast-g0-mas-band",
        "reservoir-g0-true-band",
        "dose-g0-programmed-band",
    ):
        assert f'id="{gid}"' in text, gid
    assert "10–90 %" in text and "median" in text
    assert "Per-run outcomes" in text and "seed 4" in text and "max 24 h (µg)" in text


def test_compare_has_both_groups(tmp_path):
    runs = [
        make_run("plan A", "A", scenario="slow titration"),
        make_run("plan B", "B", seed=2, scenario="fast titration"),
    ]
    path = report.write_report(tmp_path / "cmp.html", runs, "A vs B", compare=True)
    text = path.read_text(encoding="utf-8")
    assert text.count("A: slow titration") >= 5  # key-figure column + every plot
    assert text.count("B: fast titration") >= 5
    header = re.search(r'<table class="key">.*?</tr>', text, re.S).group(0)
    assert "A: slow titration" in header and "B: fast titration" in header
    assert 'id="conc-g1-csf-line"' in text


def test_long_command_table_is_truncated(tmp_path):
    run = make_run(n_commands=report.MAX_TABLE_ROWS + 57)
    path = report.write_report(tmp_path / "long.html", [run], "Long")
    text = path.read_text(encoding="utf-8")
    assert "57 more in summary.json" in text
    commands = text[text.index("<h2>Commands</h2>") :]
    assert commands.count("<tr>") == 1 + report.MAX_TABLE_ROWS + 1


def test_long_series_downsampled():
    import numpy as np

    t = np.arange(17_520) / 24.0
    y = np.sin(t)
    y[5000] = 50.0  # a spike survives the envelope
    t2, y2, done = report._envelope(t, y)
    assert done and len(t2) <= report.MAX_POINTS + 20 and y2.max() == 50.0
    assert np.all(np.diff(t2) >= 0)
    steps = np.where(t < 100, 1.0, 2.0)
    t3, y3, _ = report._steps(t, steps)
    assert len(t3) == 3 and list(y3) == [1.0, 2.0, 2.0]


def test_same_input_same_bytes(tmp_path):
    runs = [make_run("a", seed=1), make_run("b", seed=2)]
    p1 = report.write_report(tmp_path / "1.html", runs, "Det")
    p2 = report.write_report(tmp_path / "2.html", runs, "Det")
    assert p1.read_bytes() == p2.read_bytes()


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(ValueError):
        report.write_report(tmp_path / "x.html", [], "Empty")


def test_run_without_series_alarms_or_commands(tmp_path):
    run = make_run()
    run["timeseries"] = []
    run["summary"].update(daily=[], alarms=[], commands=[])
    run.update(projected_refill_day=None, cap_24h_ug=None)
    del run["low_reservoir_ml"]
    text = report.write_report(tmp_path / "m.html", [run], "Minimal").read_text(encoding="utf-8")
    assert len(svgs(text)) == N_PLOTS
    assert "no time series in these runs" in text
    assert "No alarm was raised." in text and "No command was sent." in text


def test_two_year_hourly_run_stays_small(tmp_path):
    run = make_run("two years", days=730, n_commands=500)
    path = report.write_report(tmp_path / "2y.html", [run], "Two years")
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size < 3_000_000
    assert "min/max envelope" in text  # the figure captions say the lines were downsampled
    assert "300 more in summary.json" in text


def test_import_is_cheap():
    code = "import sys, sim.report; print('matplotlib' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_each_window_is_compared_with_its_own_cap(tmp_path):
    """Attack finding: the worst 1 h is compared with the 1 h cap (and flagged when
    over it), not with the 24 h cap."""
    run = make_run()
    run["cap_24h_ug"], run["cap_1h_ug"] = 1000.0, 40.0
    run["summary"]["max_delivered_ug_any_24h"] = 500.0
    run["summary"]["max_delivered_ug_any_1h"] = 42.35
    text = report.write_report(tmp_path / "r.html", [run], "t").read_text(encoding="utf-8")
    assert "50.0 % of the 24 h cap" in text
    assert "105.9 % of the 1 h cap: OVER CAP" in text
    run["cap_1h_ug"] = None
    text = report.write_report(tmp_path / "r.html", [run], "t").read_text(encoding="utf-8")
    assert "(SR-3 default cap)" in text
