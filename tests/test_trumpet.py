"""``host_tools.trumpet`` and ``itbctl trumpet``: start-up and trumpet curves of synthetic
balance readings whose answers are known (constant flow, a flow 5 % high, a sinusoidal
modulation against its analytic moving average, a start-up delay, a missed stroke),
the density and evaporation corrections, bad readings refused with the line and
column, and the command line end to end."""

import bisect
import csv
import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host_tools import itbctl
from host_tools import trumpet as tp

D20 = tp.water_density(20.0)
S = tp.SAMPLE_MIN


def grid_s(minutes, step_s=30.0):
    """Reading times (s) every ``step_s`` from 0 through ``minutes``."""
    return [i * step_s for i in range(int(round(minutes * 60 / step_s)) + 1)]


def readings_of(volume_ul, times_s, density=D20):
    """Balance readings (g) of a cumulative volume ``volume_ul(t_min)`` (uL)."""
    return [volume_ul(t / 60.0) * density / 1000.0 for t in times_s]


def constant(rate_ul_per_h, minutes=120.0, factor=1.0):
    times = grid_s(minutes)
    return times, readings_of(lambda t: factor * rate_ul_per_h * t / 60.0, times)


def stroke_readings(interval_min, minutes, missing=(), stroke_ul=2.0, first_min=5.0,
                    jitter_min=None):
    """Readings every 0.5 min of a pump making ``stroke_ul`` at ``first_min`` + n T (plus
    ``jitter_min[n % len]`` if given), without the strokes numbered in ``missing``."""
    strokes = []
    n = 0
    while first_min + n * interval_min <= minutes + interval_min:
        t = first_min + n * interval_min + (jitter_min[n % len(jitter_min)] if jitter_min
                                           else 0.0)
        if n not in missing and t > 0:
            strokes.append(t)
        n += 1
    strokes.sort()
    times = grid_s(minutes)
    return times, [bisect.bisect_right(strokes, t / 60.0) * stroke_ul * D20 / 1000.0
                   for t in times], strokes


def windows(result):
    return {w["window_min"]: w for w in result["trumpet"]["windows"]}


def write(tmp_path, text, name="run.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def csv_text(times, masses, header="time_s,mass_g"):
    return header + "\n" + "".join(f"{t!r},{m!r}\n" for t, m in zip(times, masses,
                                                                     strict=True))


# ---------------------------------------------------------------------- known answers
def test_constant_flow_has_no_error_and_the_standard_window_counts():
    result = tp.analyse(*constant(1000.0), 1000.0)
    assert result["interpolated"] == 0 and result["duration_min"] == 120
    assert all(q == pytest.approx(1.0, abs=1e-9) for q in result["startup"]["flow_ml_per_h"])
    assert len(result["startup"]["t_min"]) == 240 and result["startup"]["t_min"][0] == S
    tr = result["trumpet"]
    assert (tr["start_min"], tr["end_min"]) == (60.0, 120.0)
    assert abs(tr["mean_error_pct"]) < 1e-9
    for p, w in windows(result).items():
        assert abs(w["max_pct"]) < 1e-9 and abs(w["min_pct"]) < 1e-9
        assert w["count"] == (60 - p) / S + 1  # m = (T2 - P)/S + 1 windows
    assert result["strokes"] is None


def test_constant_flow_read_to_a_01_mg_balance_errs_by_its_resolution_only():
    times, masses = constant(1000.0)
    result = tp.analyse(times, [round(m, 4) for m in masses], 1000.0)
    for p, w in windows(result).items():
        bound = 100 * 1e-4 / (1.0 * p / 60 * D20)  # 0.1 mg over the window's mass
        assert -bound - 1e-9 <= w["min_pct"] <= w["max_pct"] <= bound + 1e-9


def test_a_flow_5_pct_high_errs_by_5_pct_in_every_window():
    result = tp.analyse(*constant(1000.0, minutes=180, factor=1.05), 1000.0)
    assert result["trumpet"]["mean_error_pct"] == pytest.approx(5.0, abs=1e-9)
    for w in windows(result).values():
        assert w["max_pct"] == pytest.approx(5.0, abs=1e-9)
        assert w["min_pct"] == pytest.approx(5.0, abs=1e-9)
    assert all(q == pytest.approx(1.05, abs=1e-9) for q in result["startup"]["flow_ml_per_h"])


@pytest.mark.parametrize("amplitude, period_min", [(0.1, 7.0), (0.3, 23.0), (0.05, 2.5),
                                                  (0.2, 60.0)])
def test_a_sinusoidal_rate_gives_the_analytic_moving_average(amplitude, period_min):
    rate = 1000.0
    omega = 2 * math.pi / period_min
    times = grid_s(180)
    masses = readings_of(lambda t: rate / 60 * (t + amplitude / omega * (1 - math.cos(omega * t))),
                         times)
    result = tp.analyse(times, masses, rate)

    def mean_error(u, p):  # 100 a x the mean of sin(omega t) over [u, u + p]
        return 100 * amplitude * (math.cos(omega * u) - math.cos(omega * (u + p))) / (omega * p)

    for p, w in windows(result).items():
        starts = [60 + j * S for j in range(int((180 - 60 - p) / S) + 1)]
        errors = [mean_error(u, p) for u in starts]
        assert w["max_pct"] == pytest.approx(max(errors), abs=1e-7)
        assert w["min_pct"] == pytest.approx(min(errors), abs=1e-7)
        assert w["count"] == len(starts)
        # and never beyond the continuous bound: 100 a |sin(pi P/p)| / (pi P/p)
        x = math.pi * p / period_min
        assert max(abs(e) for e in errors) <= 100 * amplitude * abs(math.sin(x)) / x + 1e-9
    assert result["trumpet"]["mean_error_pct"] == pytest.approx(mean_error(60, 120), abs=1e-7)


def test_a_start_up_delay_shows_in_the_start_up_curve_not_in_the_trumpet():
    times = grid_s(120)
    result = tp.analyse(times, readings_of(lambda t: 1000.0 / 60 * max(t - 10.0, 0.0), times),
                        1000.0)
    st_ = result["startup"]
    for t, q in zip(st_["t_min"], st_["flow_ml_per_h"], strict=True):
        assert q == pytest.approx(0.0 if t <= 10 else 1.0, abs=1e-9), t
    assert abs(result["trumpet"]["mean_error_pct"]) < 1e-9
    for w in windows(result).values():
        assert abs(w["max_pct"]) < 1e-9 and abs(w["min_pct"]) < 1e-9


def test_a_missed_stroke_is_minus_100_pct_in_its_interval_and_minus_100_over_k_beyond():
    times, masses, _ = stroke_readings(60.0, 26 * 60, missing={10})
    result = tp.analyse(times, masses, 2.0, stroke_interval_min=60.0)
    sk = result["strokes"]
    assert sk["stroke_ul"] == 2.0 and sk["intervals"] == 24
    assert sk["phase_min"] == pytest.approx(4.75)  # the strokes' samples end at 5 + n T
    assert [w["strokes"] for w in sk["windows"]] == [1, 2, 4, 8, 16, 24]
    for w in sk["windows"]:
        k = w["strokes"]
        assert w["window_min"] == 60.0 * k
        assert w["min_pct"] == pytest.approx(-100.0 / k, abs=1e-9)
        assert w["count"] == 24 - k + 1
    assert sk["windows"][0]["max_pct"] == pytest.approx(0.0, abs=1e-9)
    assert sk["mean_error_pct"] == pytest.approx(-100.0 / 24, abs=1e-9)
    # the IEC windows see a stroke or none: 0.5 min holds 2 uL where 2 uL/h gives 1/60 uL
    assert windows(result)[1.0]["min_pct"] == pytest.approx(-100.0)
    assert windows(result)[1.0]["max_pct"] == pytest.approx(100.0 * (2.0 / (2.0 / 60) - 1))


@pytest.mark.parametrize("stroke_ul, expected", [(2.0, 0.0), (2.1, 5.0), (1.9, -5.0)])
def test_an_exact_or_biased_stroke_pump_shows_its_bias_at_every_k(stroke_ul, expected):
    times, masses, _ = stroke_readings(45.0, 60 + 1440 + 45 + 30, stroke_ul=stroke_ul,
                                       first_min=3.0)
    sk = tp.analyse(times, masses, 2.0 / 0.75, stroke_interval_min=45.0)["strokes"]
    assert [w["strokes"] for w in sk["windows"]] == [1, 2, 4, 8, 16, 32]  # K = 1440/45
    for w in sk["windows"]:
        assert w["max_pct"] == pytest.approx(expected, abs=1e-9)
        assert w["min_pct"] == pytest.approx(expected, abs=1e-9)


def test_the_stroke_curves_need_a_day_and_an_interval_after_the_first_hour():
    times, masses, _ = stroke_readings(60.0, 60 + 1440 + 59)
    with pytest.raises(tp.TrumpetError, match=r"at least 1560 min of readings"):
        tp.analyse(times, masses, 2.0, stroke_interval_min=60.0)
    for bad in (0.5, 1441.0, float("nan")):
        with pytest.raises(tp.TrumpetError, match="stroke interval"):
            tp.analyse(times, masses, 2.0, stroke_interval_min=bad)


# ---------------------------------------------------------------------- corrections
@pytest.mark.parametrize("celsius, kg_per_m3", [(4.0, 999.9749), (20.0, 998.2067),
                                                (25.0, 997.0470), (37.0, 993.3290)])
def test_water_density_follows_tanaka_2001(celsius, kg_per_m3):
    assert tp.water_density(celsius) == pytest.approx(kg_per_m3 / 1000, abs=2e-7)


def test_water_density_is_refused_outside_its_range():
    for bad in (-1.0, 40.5):
        with pytest.raises(tp.TrumpetError, match="0 to 40"):
            tp.water_density(bad)


def test_the_density_turns_mass_into_volume_at_the_temperature_given():
    times = grid_s(120)
    masses = readings_of(lambda t: 1000.0 * t / 60, times, density=tp.water_density(30.0))
    at_30 = tp.analyse(times, masses, 1000.0, temperature_c=30.0)
    at_20 = tp.analyse(times, masses, 1000.0, temperature_c=20.0)
    assert abs(at_30["trumpet"]["mean_error_pct"]) < 1e-9
    assert at_20["trumpet"]["mean_error_pct"] == pytest.approx(
        100 * (tp.water_density(30.0) / D20 - 1), abs=1e-9)
    assert at_30["density_g_per_ml"] == tp.water_density(30.0)


def test_evaporation_is_added_back():
    times = grid_s(120)
    evap = 30.0  # mg/h
    masses = [m - evap * t / 3600 / 1000 for t, m in zip(times, readings_of(
        lambda t: 1000.0 * t / 60, times), strict=True)]
    corrected = tp.analyse(times, masses, 1000.0, evaporation_mg_per_h=evap)
    assert abs(corrected["trumpet"]["mean_error_pct"]) < 1e-9
    for w in windows(corrected).values():
        assert abs(w["max_pct"]) < 1e-9 and abs(w["min_pct"]) < 1e-9
    raw = tp.analyse(times, masses, 1000.0)
    assert raw["trumpet"]["mean_error_pct"] == pytest.approx(-100 * evap / 1000 / D20 / 1.0,
                                                             abs=1e-9)


def test_evaporation_from_a_blank_run_is_minus_its_slope():
    times = grid_s(120)
    masses = [50.0 - 12.0 * t / 3600 / 1000 + (5e-5 if i % 2 else -5e-5)
              for i, t in enumerate(times)]
    assert tp.evaporation_from_blank(times, masses) == pytest.approx(12.0, abs=0.05)
    assert tp.evaporation_from_blank([0.0, 3600.0], [1.0, 1.0]) == 0.0
    with pytest.raises(tp.TrumpetError):
        tp.evaporation_from_blank([0.0], [1.0])
    with pytest.raises(tp.TrumpetError):
        tp.evaporation_from_blank([5.0, 5.0], [1.0, 0.9])


# ---------------------------------------------------------------------- resampling
def test_readings_off_the_grid_are_interpolated_onto_it():
    times = [0.0] + [i * 20.0 + (3.0 if i % 3 == 1 else -2.0 if i % 3 == 2 else 0.0)
                     for i in range(1, 362)] + [7230.0]
    masses = readings_of(lambda t: 1000.0 * t / 60, times)
    result = tp.analyse(times, masses, 1000.0)
    assert result["interpolated"] > 0 and result["readings"] == len(times)
    assert result["duration_min"] == 120.5
    for w in windows(result).values():
        assert abs(w["max_pct"]) < 1e-9 and abs(w["min_pct"]) < 1e-9


def test_readings_a_minute_apart_are_taken_and_a_longer_gap_is_refused():
    times, masses = constant(1000.0, minutes=120)
    every_minute = tp.analyse(times[::2], masses[::2], 1000.0)
    assert every_minute["interpolated"] == 120
    assert abs(every_minute["trumpet"]["mean_error_pct"]) < 1e-9
    holed = [i for i in range(len(times)) if not 100 < i < 103]
    with pytest.raises(tp.TrumpetError, match=r"readings 101 and 102 \(t = 3000 s and 3090 s"
                       r" from the first\) are 90 s apart: more than 2 S = 60 s"):
        tp.analyse([times[i] for i in holed], [masses[i] for i in holed], 1000.0)


def test_readings_shorter_than_two_hours_or_a_bad_rate_are_refused():
    with pytest.raises(tp.TrumpetError, match="span 119.5 min"):
        tp.analyse(*constant(1000.0, minutes=119.5), 1000.0)
    for rate in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(tp.TrumpetError, match="set rate"):
            tp.analyse(*constant(1000.0), rate)
    with pytest.raises(tp.TrumpetError, match="evaporation"):
        tp.analyse(*constant(1000.0), 1000.0, evaporation_mg_per_h=float("nan"))


# ---------------------------------------------------------------------- reading files
def test_readings_are_read_in_g_or_mg_with_other_columns_ignored(tmp_path):
    path = write(tmp_path, "\ufeffmass_mg, note ,time_s\n1500,a,0\n\n1520.5,b,30\n")
    assert tp.read_readings(path) == ([0.0, 30.0], [1.5, 1.5205])
    path = write(tmp_path, "time_s,mass_g\n0,1.5\n30,1.52\n")
    assert tp.read_readings(path) == ([0.0, 30.0], [1.5, 1.52])


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("\n\n", "empty"),
    ("t,mass_g\n0,1\n", "line 1: no time_s column"),
    ("time_s,weight\n0,1\n", "line 1: no mass_g or mass_mg column"),
    ("time_s,mass_g,mass_mg\n0,1,1000\n", "both mass_g and mass_mg"),
    ("time_s,mass_g\n0,1\n30,1.0x\n", "line 3, column mass_g: not a number: '1.0x'"),
    ("time_s,mass_mg\n0,1\nabc,2\n", "line 3, column time_s: not a number: 'abc'"),
    ("time_s,mass_g\n0,1\n30,nan\n", "line 3, column mass_g: not a finite number"),
    ("time_s,mass_g\n0,1\n30,1\n30,2\n", "line 4, column time_s: 30 s is not after 30 s"
     " (line 3): readings must be in increasing time"),
    ("time_s,mass_g\n0,1\n60,1\n30,2\n", "line 4, column time_s: 30 s is not after 60 s"),
    ("time_s,note,mass_g\n0,a,1\n30,b\n", "line 3: 2 fields, the header has 3"),
    ("time_s,mass_g\n0,1\n", "1 reading(s): at least two"),
])
def test_bad_readings_are_refused_naming_line_and_column(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(tp.TrumpetError) as e:
        tp.read_readings(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_a_missing_or_binary_file_is_refused(tmp_path):
    with pytest.raises(tp.TrumpetError, match="cannot read the readings"):
        tp.read_readings(tmp_path / "none.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(tp.TrumpetError, match="cannot read the readings"):
        tp.read_readings(tmp_path / "bin.csv")


# ---------------------------------------------------------------------- output
def test_the_csv_holds_the_start_up_and_both_trumpets(tmp_path):
    times, masses, _ = stroke_readings(60.0, 26 * 60, missing={10})
    result = tp.analyse(times, masses, 2.0, stroke_interval_min=60.0)
    tp.write_csv(result, tmp_path / "t.csv")
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == tp.CSV_FIELDS
    curves = [r["curve"] for r in rows]
    assert curves.count("startup") == len(result["startup"]["t_min"])
    assert curves.count("trumpet") == 6 and curves.count("strokes") == 6
    first = rows[0]
    assert (first["t_min"], first["window_min"], first["max_pct"]) == ("0.5", "", "")
    last = rows[-1]
    assert (last["strokes"], last["window_min"], last["count"]) == ("24", "1440", "1")
    assert float(last["min_pct"]) == pytest.approx(-100 / 24, abs=1e-4)
    assert float(last["mean_pct"]) == pytest.approx(-100 / 24, abs=1e-4)


def test_plots_are_png_or_deterministic_svg(tmp_path):
    result = tp.analyse(*constant(1000.0), 1000.0)
    tp.plot(result, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tp.plot(result, tmp_path / "a.svg")
    tp.plot(result, tmp_path / "b.svg")
    svg = (tmp_path / "a.svg").read_bytes()
    assert svg == (tmp_path / "b.svg").read_bytes() and b"<svg" in svg
    assert b"<dc:date>" not in svg
    with pytest.raises(tp.TrumpetError, match=r"\.png or \.svg"):
        tp.plot(result, tmp_path / "a.pdf")


def test_the_summary_reads_as_tables():
    times, masses, _ = stroke_readings(60.0, 26 * 60, missing={10})
    text = tp.summary_text(tp.analyse(times, masses, 2.0, stroke_interval_min=60.0))
    assert "mean error A -4.00 %" in text
    assert "2 uL every 60 min, 24 intervals" in text
    assert "       1         1        +0.00      -100.00       24" in text
    assert "-0.00" not in tp.summary_text(tp.analyse(*constant(1000.0), 1000.0))


# ---------------------------------------------------------------------- command line
@pytest.fixture
def no_port(monkeypatch):
    monkeypatch.delenv("ITBCTL_PORT", raising=False)
    monkeypatch.delenv("ITBCTL_KEYS", raising=False)


def test_itbctl_trumpet_writes_its_files_next_to_the_readings(tmp_path, capsys, no_port):
    path = write(tmp_path, csv_text(*constant(1000.0, minutes=150, factor=1.02)))
    assert itbctl.main(["trumpet", str(path), "--rate-ul-per-h", "1000"]) == 0
    out = capsys.readouterr().out
    assert "mean error A +2.00 %" in out and "Ep(max)" in out
    assert (tmp_path / "trumpet.csv").exists() and (tmp_path / "trumpet.png").exists()


def test_itbctl_trumpet_json_stroke_curves_svg_and_a_blank(tmp_path, capsys, no_port):
    times, masses, _ = stroke_readings(60.0, 26 * 60, missing={3})
    path = write(tmp_path, csv_text(times, [m * 1000 for m in masses], "time_s,mass_mg"))
    blank = write(tmp_path, csv_text([0.0, 3600.0], [10.0, 10.0]), "blank.csv")
    out = tmp_path / "out" / "deeper"
    assert itbctl.main(["--json", "trumpet", str(path), "--rate-ul-per-h", "2",
                        "--stroke-interval-min", "60", "--temperature-c", "20",
                        "--blank", str(blank), "--out", str(out), "--figure", "svg"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["files"] == [str(out / "trumpet.csv"), str(out / "trumpet.svg")]
    assert result["evaporation_mg_per_h"] == 0.0
    assert [w["min_pct"] for w in result["strokes"]["windows"]] == pytest.approx(
        [-100.0, -50.0, -25.0, -12.5, -6.25, -100 / 24])
    assert (out / "trumpet.svg").read_bytes().count(b"<svg") == 1


@pytest.mark.parametrize("argv, message", [
    (["{dir}/none.csv", "--rate-ul-per-h", "1"], "cannot read the readings"),
    (["{bad}", "--rate-ul-per-h", "1"], "line 3, column mass_g: not a number"),
    (["{short}", "--rate-ul-per-h", "1"], "need at least 120 min"),
    (["{good}", "--rate-ul-per-h", "0"], "must be a positive number"),
    (["{good}", "--rate-ul-per-h", "1", "--stroke-interval-min", "60"], "at least 1560 min"),
    (["{good}", "--rate-ul-per-h", "1", "--temperature-c", "80"], "0 to 40"),
])
def test_itbctl_trumpet_bad_input_exits_64(tmp_path, capsys, no_port, argv, message):
    files = {"dir": str(tmp_path),
             "bad": str(write(tmp_path, "time_s,mass_g\n0,0\n30,x\n", "bad.csv")),
             "short": str(write(tmp_path, csv_text(*constant(1.0, minutes=60)), "short.csv")),
             "good": str(write(tmp_path, csv_text(*constant(1.0, minutes=121)), "good.csv"))}
    argv = [a.format(**files) for a in argv]
    assert itbctl.main(["trumpet"] + argv) == itbctl.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("itbctl: ") and message in err
    assert not (tmp_path / "trumpet.csv").exists()


def test_itbctl_trumpet_usage_errors_exit_64(tmp_path, no_port):
    path = write(tmp_path, csv_text(*constant(1000.0)))
    for argv in (["trumpet", str(path)], ["trumpet", str(path), "--rate-ul-per-h", "x"],
                 ["trumpet", str(path), "--rate-ul-per-h", "1", "--figure", "pdf"],
                 ["trumpet", str(path), "--rate-ul-per-h", "1", "--blank", str(path),
                  "--evaporation-mg-per-h", "3"]):
        with pytest.raises(SystemExit) as e:
            itbctl.main(argv)
        assert e.value.code == itbctl.EXIT_USAGE


# ---------------------------------------------------------------------- properties
_GAPS = st.lists(st.floats(1.0, 60.0), min_size=1, max_size=12)
_FLOWS = st.lists(st.floats(0.0, 3.0), min_size=1, max_size=40)


def _cycled_times(gaps, minutes):
    times = [0.0]
    while times[-1] < minutes * 60:
        times.append(times[-1] + gaps[len(times) % len(gaps)])
    return times


def _cycled_flows(flows, minutes, rate):
    """Grid readings whose 0.5 min samples flow at ``flows`` x ``rate`` (cycled)."""
    times = grid_s(minutes)
    masses = [0.0]
    for i in range(1, len(times)):
        masses.append(masses[-1] + flows[i % len(flows)] * rate / 60 * S * D20 / 1000)
    return times, masses


@given(rate=st.floats(0.5, 5000.0), factor=st.floats(0.5, 1.5), gaps=_GAPS)
def test_property_a_steady_flow_errs_by_its_factor_in_every_window(rate, factor, gaps):
    """Invariant: readings of a steady flow factor x the set rate, taken at any instants
    no more than 1 min apart, give 100 (factor - 1) % as the mean error and as Ep(max)
    and Ep(min) of every window (linear interpolation is exact for a steady flow)."""
    times = _cycled_times(gaps, 125)
    result = tp.analyse(times, readings_of(lambda t: factor * rate * t / 60, times), rate)
    expected = 100 * (factor - 1)
    assert result["trumpet"]["mean_error_pct"] == pytest.approx(expected, abs=1e-6)
    for w in windows(result).values():
        assert w["max_pct"] == pytest.approx(expected, abs=1e-6)
        assert w["min_pct"] == pytest.approx(expected, abs=1e-6)


@given(flows=_FLOWS, minutes=st.integers(120, 200))
def test_property_the_trumpet_narrows_over_whole_multiples_of_a_window(flows, minutes):
    """Invariant: a window of n x P min is the mean of n consecutive P-min windows, so
    for every pair of IEC windows P | Q, Ep(min, P) <= Ep(min, Q) <= Ep(max, Q) <=
    Ep(max, P); and every window's extremes bracket some window, Ep(min) <= Ep(max)."""
    result = tp.analyse(*_cycled_flows(flows, minutes, 1000.0), 1000.0)
    by_p = windows(result)
    for p, wp in by_p.items():
        assert wp["min_pct"] <= wp["max_pct"]
        for q, wq in by_p.items():
            if q % p == 0:
                assert wp["min_pct"] - 1e-9 <= wq["min_pct"] <= wq["max_pct"] \
                    <= wp["max_pct"] + 1e-9


@given(flows=_FLOWS, evap=st.floats(-60.0, 60.0))
def test_property_evaporation_added_back_restores_the_readings_without_it(flows, evap):
    """Invariant: readings that lose evap mg/h to evaporation, analysed with
    evaporation_mg_per_h=evap, give the same start-up and trumpet curves as the readings
    without that loss (to 1e-6 %)."""
    times, masses = _cycled_flows(flows, 130, 1000.0)
    lossy = [m - evap * t / 3600 / 1000 for t, m in zip(times, masses, strict=True)]
    a = tp.analyse(times, masses, 1000.0)
    b = tp.analyse(times, lossy, 1000.0, evaporation_mg_per_h=evap)
    assert b["startup"]["flow_ml_per_h"] == pytest.approx(a["startup"]["flow_ml_per_h"],
                                                          abs=1e-9)
    assert b["trumpet"]["mean_error_pct"] == pytest.approx(a["trumpet"]["mean_error_pct"],
                                                           abs=1e-6)
    for wa, wb in zip(a["trumpet"]["windows"], b["trumpet"]["windows"], strict=True):
        assert wb["max_pct"] == pytest.approx(wa["max_pct"], abs=1e-6)
        assert wb["min_pct"] == pytest.approx(wa["min_pct"], abs=1e-6)


@given(interval=st.sampled_from([30.0, 45.0, 60.0, 90.0, 120.0]),
       phase=st.floats(0.0, 1.0, exclude_max=True),
       jitter=st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=60),
       which=st.floats(0.0, 1.0))
def test_property_one_missed_stroke_among_jittered_strokes(interval, phase, jitter, which):
    """Invariant: strokes each early or late by less than T/4 - 2 S, one of them missing
    (anywhere at least one interval inside the analysis period): the stroke-interval
    curves show max 0 % and min -100 % over one interval, and min -100/k % over every k
    intervals; the mean error is -100/(number of intervals) %."""
    minutes = 60 + 1440 + 2 * interval
    jitter_min = [j * (interval / 4 - 2 * S) for j in jitter]
    _, _, strokes = stroke_readings(interval, minutes, first_min=phase * interval,
                                    jitter_min=jitter_min)
    inside = [n for n, t in enumerate(strokes) if 60 + interval <= t <= minutes - interval]
    gone = inside[min(int(which * len(inside)), len(inside) - 1)]
    kept = strokes[:gone] + strokes[gone + 1:]
    times = grid_s(minutes)
    masses = [bisect.bisect_right(kept, t / 60) * 2.0 * D20 / 1000 for t in times]
    sk = tp.analyse(times, masses, 2.0 * 60 / interval, stroke_interval_min=interval)["strokes"]
    assert sk["windows"][0]["max_pct"] == pytest.approx(0.0, abs=1e-9)
    for w in sk["windows"]:
        assert w["min_pct"] == pytest.approx(-100.0 / w["strokes"], abs=1e-9)
    assert sk["mean_error_pct"] == pytest.approx(-100.0 / sk["intervals"], abs=1e-9)


def test_a_simulator_export_shows_the_configured_stroke_error(tmp_path):
    """Issue 8: the simulator's balance export, analysed like bench readings, gives the
    pump model's stroke error: with a +5 % stroke bias and no noise or evaporation the
    trumpet's mean error over the analysis period is +5 % within the model's random
    per-stroke error (sd 3.2 % per stroke, over the strokes in the period), and the
    stroke-interval curves are centred on it too."""
    from sim import cli

    scenario = tmp_path / "s.toml"
    scenario.write_text('name = "bias"\nduration_days = 3\nseed = 3\n[pump]\n'
                        'stroke_bias_pct = 5\n[drug]\nconcentration_ug_per_ml = 500\n'
                        'fill_volume_ml = 20\n[prescription]\ndaily_dose_ug = 300\n')
    readings = tmp_path / "b.csv"
    assert cli.main(["run", str(scenario), "--out", str(tmp_path / "out"), "--no-report",
                     "--quiet", "--balance", str(readings), "--balance-noise-mg", "0",
                     "--balance-evaporation-mg-per-h", "0", "--balance-resolution-mg",
                     "0"]) == 0
    meta = json.loads(readings.with_suffix(".json").read_text())
    with open(readings, newline="") as f:
        rows = [(float(t), float(g)) for t, g in list(csv.reader(f))[1:]]
    times, masses = zip(*rows, strict=True)
    result = tp.analyse(list(times), list(masses), meta["nominal_rate_ul_per_h"],
                             stroke_interval_min=meta["nominal_stroke_interval_min"],
                             temperature_c=meta["temperature_c"])
    strokes_in_period = meta["true_strokes"] * (result["trumpet"]["end_min"] - 60) / (
        3 * 24 * 60)
    tolerance = 3 * 3.2 / strokes_in_period ** 0.5 + 100 / strokes_in_period  # + a stroke
    print("mean error %.2f %%, strokes %.2f %%, tolerance %.2f %%" % (
        result["trumpet"]["mean_error_pct"], result["strokes"]["mean_error_pct"], tolerance))
    assert abs(result["trumpet"]["mean_error_pct"] - 5.0) < tolerance
    assert abs(result["strokes"]["mean_error_pct"] - 5.0) < tolerance


def test_the_readme_s_sample_trumpet_run_is_what_its_commands_give(tmp_path):
    """README "Bench testing": the sample's commands, run again, print the figures
    committed in docs/bench/trumpet-summary.txt (and quoted in the README); a changed
    simulator or analysis shows here, with the commands to regenerate them."""
    from sim import cli

    repo = Path(__file__).resolve().parents[1]  # not the firmware's: mutants use a copy
    readme = (repo / "README.md").read_text()
    run = ("itbsim run examples/bench/trumpet_run.toml --out out/bench/run --no-report"
           " --balance out/bench/readings.csv")
    analyse = ("itbctl trumpet out/bench/readings.csv --rate-ul-per-h 25 --stroke-interval-min"
               " 4.8 --evaporation-mg-per-h 0.5 --out out/bench")
    assert run in readme and analyse in readme
    out = tmp_path / "bench"
    assert cli.main(run.split()[1:3] + ["--out", str(out / "run"), "--no-report", "--quiet",
                                        "--balance", str(out / "readings.csv")]) == 0
    args = analyse.split()[1:]
    args[1] = str(out / "readings.csv")
    args[-1] = str(out)
    assert itbctl.main(args) == 0
    times, masses = tp.read_readings(out / "readings.csv")
    result = tp.analyse(times, masses, 25, stroke_interval_min=4.8, evaporation_mg_per_h=0.5)
    committed = (repo / "docs" / "bench" / "trumpet-summary.txt").read_text()
    assert tp.summary_text(result) + "\n" == committed, (
        "regenerate: the README's two commands, then copy out/bench/trumpet.png to docs/bench"
        " and write the printed figures to docs/bench/trumpet-summary.txt")
    for figure in ("+1.95 %", "+2.13 %", "+500.68 % /\n-201.38 %", "+16.71 % / -10.59 %",
                   "+18.62 % / -13.27 %", "+2.11 % / +2.04 %"):
        assert figure in readme
    assert (out / "trumpet.png").stat().st_size > 10_000


def test_a_unit_mistake_is_pointed_out():
    """Found by the new-user trial: the rate given in mL/h (0.01 for 10 uL/h) printed
    +99900 % without a word."""
    times = [i * 30.0 for i in range(241)]
    masses = [10e-6 * t / 3600 * 0.998207 * 1000 for t in times]  # 10 uL/h, exact
    assert "WARNING" not in tp.summary_text(tp.analyse(times, masses, 10.0))
    text = tp.summary_text(tp.analyse(times, masses, 0.01))
    assert "WARNING: a mean error of" in text and "--rate-ul-per-h" in text
