"""Balance readings of a run (``sim/balance.py``, ``itbsim run --balance``): the pump
model's true volume per stroke, as mass at the bench temperature, minus evaporation,
plus noise, rounded; its own random stream, so the run is unchanged."""

import csv
import json
import random
import statistics
from pathlib import Path

import pytest

from sim import balance, cli, engine
from sim import pump as pump_mod
from sim import scenario as sc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE = EXAMPLES / "emergency_stop_overdose.toml"  # 5 days, 399 strokes, a bolus, a stop
RHO_20 = 0.9982067455596167


def _run(tmp_path, name, scenario=EXAMPLE, *opts):
    """``itbsim run`` into tmp_path/name with --balance tmp_path/name.csv; returns
    (run directory, readings as [(time_s, mass_g)], sidecar)."""
    out, csv_path = tmp_path / name, tmp_path / f"{name}.csv"
    args = ["run", str(scenario), "--out", str(out), "--no-report", "--quiet",
            "--balance", str(csv_path), *opts]
    assert cli.main(args) == 0
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["time_s", "mass_g"]
    readings = [(float(t), float(g)) for t, g in rows[1:]]
    return out, readings, json.loads(csv_path.with_suffix(".json").read_text())


def _trace(out):
    recs = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    ok = {r["n"] for r in recs if r["k"] == "outcome" and r["res"] == "ok"}
    return [(r["t"], r["nl"]) for r in recs if r["k"] == "stroke" and r["n"] in ok]


def _scenario(tmp_path, pump="", events=""):
    path = tmp_path / "s.toml"
    path.write_text(f'name = "balance"\nduration_days = 2\nseed = 3\n[pump]\n{pump}\n'
                    '[drug]\nconcentration_ug_per_ml = 500\nfill_volume_ml = 20\n'
                    f'[prescription]\ndaily_dose_ug = 300\n{events}')
    return path


def test_water_density_is_the_cipm_formula():
    # Tanaka et al. 2001, table values in kg/m3
    for t, kg_m3 in ((4, 999.9750), (20, 998.2067), (25, 997.0470), (37, 993.3290),
                     (40, 992.2152)):
        assert balance.water_density(t) == pytest.approx(kg_m3 / 1000, abs=1e-7)
    assert balance.water_density(20) == RHO_20
    for bad in (-1, 40.5, float("nan")):
        with pytest.raises(ValueError):
            balance.water_density(bad)


def test_readings_are_the_cumulative_true_volume_in_half_open_windows():
    events = [(45_000, 500), (0, 1000), (30_000, 2000), (90_000, 1999)]
    got = balance.readings(events, 0, 100_000, 30, 0, 0, 0, 20, random.Random(0))
    cum = [0, 1000, 3500, 3500]  # a stroke at a reading's instant is in the next one
    assert got == [(k * 30_000, nl * RHO_20 / 1e6) for k, nl in enumerate(cum)]
    # the first reading is at the start, the last at or before the end
    assert [t for t, _ in balance.readings([], 5_000, 65_000, 30, 0, 0, 0, 20,
                                           random.Random(0))] == [5_000, 35_000, 65_000]
    # a stroke before the tare is not on the pan
    assert balance.readings([(0, 7)], 1, 1, 1, 0, 0, 0, 20, random.Random(0)) == [(1, 0.0)]
    # rounding to the resolution
    g = balance.readings([(0, 12_345)], 0, 1000, 1, 0, 0, 0.01, 20, random.Random(0))[1][1]
    assert g == round(12_345 * RHO_20 / 1e3 / 0.01) * 0.01 / 1e3
    assert f"{g:.{balance.mass_decimals(0.01)}f}" == "0.01232"


def test_noise_has_the_configured_sd_and_evaporation_the_configured_slope():
    n = 20_001
    r = balance.readings([], 0, (n - 1) * 30_000, 30, 0.1, 0, 0, 20, random.Random(5))
    mg = [g * 1e3 for _t, g in r]
    assert len(mg) == n
    assert statistics.stdev(mg) == pytest.approx(0.1, rel=0.03)  # se of the sd: 0.5 %
    assert abs(statistics.fmean(mg)) < 4 * 0.1 / n ** 0.5
    # without noise, evaporation is an exact line from the tare
    r = balance.readings([], 0, 10 * 3_600_000, 60, 0, 2.5, 0, 20, random.Random(0))
    assert all(g * 1e3 == pytest.approx(-2.5 * t / 3_600_000, abs=1e-12) for t, g in r)


def test_zero_noise_readings_equal_the_true_delivered_volume(tmp_path, monkeypatch):
    # the pump's own per-stroke volumes, recorded where the pump moves them
    pushed = []
    push = pump_mod.Pump._push

    def recording_push(self, t, v):
        pushed.append((t, v))
        push(self, t, v)

    monkeypatch.setattr(pump_mod.Pump, "_push", recording_push)
    out, r, meta = _run(tmp_path, "exact", EXAMPLE, "--balance-noise-mg", "0",
                        "--balance-evaporation-mg-per-h", "0", "--balance-resolution-mg", "0")
    summary = json.loads((out / "summary.json").read_text())
    strokes = _trace(out)
    assert len(r) == 5 * 24 * 120 + 1 and r[-1][0] == 5 * 86400
    assert meta["density_g_per_ml"] == RHO_20 and meta["true_strokes"] == len(strokes)
    # the true volumes, not the nominal: the stroke error is in them
    assert len(pushed) == len(strokes) == summary["totals"]["strokes"]
    assert [t for t, _v in pushed] == [t for t, _nl in strokes]
    assert len({round(v) for _t, v in pushed}) > 50
    assert all(abs(v / nl - 1) <= 3 * 0.032 + 1e-9 for (_t, v), (_, nl) in zip(pushed, strokes,
                                                                              strict=True))
    # every reading: the pump's volumes before it (whole nL carry: under 1 nL apart)
    i, cum = 0, 0.0
    for t_s, g in r:
        while i < len(pushed) and pushed[i][0] < t_s * 1000:
            cum += pushed[i][1]
            i += 1
        assert abs(g - cum * RHO_20 / 1e6) < 1e-6 * RHO_20
    # the run's own hourly records (timeseries.csv, half-open hours): exactly
    with open(out / "timeseries.csv") as f:
        hourly = [round(float(row["delivered_ml"]) * 1e6) for row in csv.DictReader(f)]
    by_time = dict(r)
    cum_nl = 0
    for h, nl in enumerate(hourly):
        cum_nl += nl
        assert by_time[h * 3600.0] == cum_nl * RHO_20 / 1e6
    assert r[-1][1] == round(summary["totals"]["delivered_ml"] * 1e6) * RHO_20 / 1e6
    assert meta["true_volume_ml"] == summary["totals"]["delivered_ml"]
    # the mass steps up in exactly the readings that follow a stroke
    stepped = [t for (t, g), (_t0, g0) in zip(r[1:], r, strict=False) if g != g0]
    after = sorted({(t // 30_000 + 1) * 30 for t, _nl in strokes})
    assert stepped == after


def test_cli_noise_sd_and_evaporation_slope_without_strokes(tmp_path):
    # noise: the same run with and without it (same evaporation and tare)
    _o, quiet, _m = _run(tmp_path, "n0", EXAMPLE, "--balance-noise-mg", "0",
                         "--balance-resolution-mg", "0")
    _o, noisy, meta = _run(tmp_path, "n2", EXAMPLE, "--balance-noise-mg", "0.2",
                           "--balance-resolution-mg", "0")
    diff = [(g - g0) * 1e3 for (_t, g), (_t0, g0) in zip(noisy, quiet, strict=True)]
    assert statistics.stdev(diff) == pytest.approx(0.2, rel=0.05)  # n = 14,401: se 0.6 %
    assert meta["noise_mg"] == 0.2
    # evaporation: the motor stalls the whole run, nothing reaches the pan
    path = _scenario(tmp_path, events='[[events]]\nat = "0s"\nmotor_fault = { duration = "2d" }\n')
    out, r, meta = _run(tmp_path, "evap", path, "--balance-evaporation-mg-per-h", "2")
    assert meta["true_strokes"] == 0 and meta["true_mass_g"] == 0
    assert _trace(out) == []
    hours = [t / 3600 for t, _g in r]
    slope, intercept = statistics.linear_regression(hours, [g * 1e3 for _t, g in r])
    assert slope == pytest.approx(-2, rel=0.005) and abs(intercept) < 0.02


def test_deterministic_per_seed_and_the_run_is_unchanged(tmp_path):
    base = ["run", str(EXAMPLE), "--no-report", "--quiet"]
    assert cli.main(base + ["--out", str(tmp_path / "plain")]) == 0
    a_out, a, _m = _run(tmp_path, "a")
    _o, b, _m = _run(tmp_path, "b")
    _o, c, meta = _run(tmp_path, "c", EXAMPLE, "--seed", "10")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert a == b and [g for _t, g in a] != [g for _t, g in c] and meta["seed"] == 10
    # a stream of its own: not the run's sequence (the pump's stroke errors) again
    assert balance.rng_for(9).random() != random.Random(9).random()
    for name in ("summary.json", "trace.jsonl", "timeseries.csv"):
        assert (a_out / name).read_bytes() == (tmp_path / "plain" / name).read_bytes(), name
    # the engine: the same result with a fluid sink as without
    s = sc.load(EXAMPLE)
    got = []
    with_sink = engine.Simulation(s, fluid=lambda t, nl: got.append((t, nl))).run()
    assert with_sink.summary == engine.Simulation(s).run().summary
    assert len(got) == with_sink.summary["totals"]["strokes"]


def test_stroke_bias_shows_on_the_balance(tmp_path):
    ratios = {}
    for bias in (0, 5):
        path = _scenario(tmp_path, pump=f"stroke_bias_pct = {bias}")
        out, r, meta = _run(tmp_path, f"bias{bias}", path)
        strokes = _trace(out)
        nominal_g = sum(nl for _t, nl in strokes) * RHO_20 / 1e6
        weighed_g = r[-1][1] + 0.5e-3 * 48  # put back the default evaporation
        assert meta["nominal_stroke_nl"] == 2000 and meta["stroke_bias_pct"] == bias
        assert meta["nominal_rate_ml_per_h"] == pytest.approx(0.6 / 24)
        assert meta["nominal_rate_ul_per_h"] == pytest.approx(600 / 24)
        assert meta["nominal_stroke_interval_min"] == pytest.approx(4.8)
        assert meta["true_mass_g"] == pytest.approx(weighed_g, abs=5e-4)  # 5 sd of the noise
        ratios[bias] = weighed_g / nominal_g
    # 300 strokes with a 3.2 % sd each: the sum's relative sd is 0.18 %
    assert ratios[5] == pytest.approx(1.05, abs=0.008)
    assert ratios[0] == pytest.approx(1.00, abs=0.008)
    # the same seed draws the same stroke errors: the bias alone, to within the
    # balance noise (0.1 mg on 1.1 g)
    assert ratios[5] / ratios[0] == pytest.approx(1.05, abs=0.0005)


def test_cli_writes_the_files_and_rejects_bad_options(tmp_path, capsys):
    out, r, meta = _run(tmp_path / "deep" / "er", "files", EXAMPLE, "--balance-interval-s",
                        "60", "--balance-temperature-c", "25")
    lines = (tmp_path / "deep" / "er" / "files.csv").read_text().splitlines()
    assert lines[0] == "time_s,mass_g" and lines[1].startswith("0,")
    assert all(len(line.split(",")) == 2 and len(line.split(".")[-1]) == 5
               for line in lines[1:])
    assert [t for t, _g in r] == [60.0 * k for k in range(5 * 1440 + 1)]
    assert meta["count"] == len(r) and meta["interval_s"] == 60
    assert meta["temperature_c"] == 25
    assert meta["density_g_per_ml"] == balance.water_density(25)
    assert meta["readings"] == "files.csv" and meta["seed"] == 9
    for key in ("noise_mg", "evaporation_mg_per_h", "resolution_mg", "where",
                "concentration_ug_per_ml", "nominal_stroke_nl", "nominal_rate_ml_per_h"):
        assert key in meta
    capsys.readouterr()
    assert cli.main(["run", str(EXAMPLE), "--out", str(tmp_path / "o"),
                     "--balance", str(tmp_path / "b.csv")]) == 0
    assert f"balance readings: {tmp_path / 'b.csv'}" in capsys.readouterr().out
    # usage errors: exit 2 before anything runs
    for opts, msg in ((["--balance-noise-mg", "1"], "needs --balance"),
                      (["--balance", str(tmp_path / "x.csv"), "--balance-temperature-c", "50"],
                       "0 to 40 °C"),
                      (["--balance", str(tmp_path / "x.json")], ".json"),
                      (["--balance", str(tmp_path / "x.csv"), "--balance-interval-s", "0.0001"],
                       "at least 1 ms")):
        assert cli.main(["run", str(EXAMPLE), "--out", str(tmp_path / "bad")] + opts) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "x.csv").exists()
    for opt in ("--balance-noise-mg", "--balance-interval-s"):
        with pytest.raises(SystemExit) as e:
            cli.main(["run", str(EXAMPLE), "--balance", str(tmp_path / "x.csv"), opt, "-1"])
        assert e.value.code == 2
