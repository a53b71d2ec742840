"""``itbctl calibrate`` end to end on the virtual board (a MicroPython process per
test, so the mutation suite skips this file like test_itbctl): a pty MT-SICS balance,
typed readings, the readings' CSV and its measurement id, and the checks made before
the first reading. The controller's side is in test_calibration.py."""

import io
import json
import sys

import pytest
from test_calibration import _FakeBalance, _stroke_masses

from host_tools import gravimetry as gr
from host_tools import itbctl


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _bench_board(virtual_board, tmp_path):
    keys = tmp_path / "keys.json"
    base = ["--port", virtual_board.url, "--keys", str(keys)]
    assert itbctl.main(base + ["keys", "provision"]) == 0
    assert itbctl.main(base + ["--yes", "refill", "--aspirated", "0ml", "--volume", "1ml",
                               "--concentration-ug-per-ml", "500"]) == 0
    assert itbctl.main(base + ["--yes", "prime", "--contents", "drug"]) == 0
    return base


@pytest.mark.sr("SR-15", "SR-26")
def test_itbctl_calibrate_weighs_a_run_on_a_serial_balance_and_writes_it(virtual_board,
                                                                         tmp_path, capsys):
    """The guided run end to end on the virtual board: 10 strokes weighed on an
    MT-SICS balance that shows 1.9 uL per stroke; the board's motion is scaled by
    2000/1900 (ppm), and the readings are kept in the CSV."""
    base = _bench_board(virtual_board, tmp_path)
    capsys.readouterr()
    fake = _FakeBalance([f"S S {g:.6f} g" for g in _stroke_masses(10, 1.9)])
    out = tmp_path / "cal.csv"
    try:
        code = itbctl.main(base + ["--yes", "calibrate", "--strokes", "10", "--settle-s", "0",
                                   "--balance-port", fake.path, "--out", str(out)])
    finally:
        fake.close()
    text = capsys.readouterr()
    assert code == 0, text.err
    assert "systematic error -5.00 %" in text.out
    times, masses = gr.read_readings(out)
    assert len(masses) == 11 and masses[-1] == pytest.approx(_stroke_masses(10, 1.9)[-1])
    assert itbctl.main(base + ["--json", "status"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["board"]["hw"]["motion_ppm"] == round(1e6 * 2000 / 1900)
    assert st["calibration"] == [0, 0, 0] and st["strokes"] == 10


def test_itbctl_calibrate_typed_readings_then_written_from_their_csv(virtual_board, tmp_path,
                                                                     capsys, monkeypatch):
    """Readings typed after each stroke (a typo is asked again), ``--no-write`` keeps
    the board's measurement; ``--readings`` of that CSV then writes it. Without a
    board the CSV is only analysed."""
    base = _bench_board(virtual_board, tmp_path)
    typed = [f"{g:.6f}" for g in _stroke_masses(10, 2.1)]
    typed.insert(3, "twelve")
    monkeypatch.setattr(sys, "stdin", _Terminal("y\n" + "\n".join(typed) + "\n"))
    out = tmp_path / "typed.csv"
    assert itbctl.main(base + ["calibrate", "--strokes", "10", "--settle-s", "0", "--no-write",
                               "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert "not a mass: 'twelve'" in text.err and "systematic error +5.00 %" in text.out
    assert itbctl.main(["calibrate", "--readings", str(out), "--json"]) == 0  # no board
    assert json.loads(capsys.readouterr().out)["command"]["measured_nl"] == 2100
    assert itbctl.main(base + ["--yes", "calibrate", "--readings", str(out)]) == 0
    assert "the board now has" in capsys.readouterr().out
    assert itbctl.main(base + ["--json", "status"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["board"]["hw"]["motion_ppm"] == round(1e6 * 2000 / 2100)
    # the same readings again: the measurement ended with the first correction
    assert itbctl.main(base + ["--yes", "calibrate", "--readings", str(out)]) == \
        itbctl.EXIT_REFUSED
    assert "NO_MEASUREMENT" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["calibrate"], "needs a board"),
    (["--port", "/dev/null-none", "calibrate"], "no balance"),
    (["--port", "/dev/null-none", "calibrate", "--balance-port", "x", "--temperature-c", "50",
      "--no-write"], "0 to 40"),
    (["--port", "/dev/null-none", "calibrate", "--balance-port", "x"], "not a terminal"),
    (["--port", "/dev/null-none", "calibrate", "--balance-port", "x", "--no-write",
      "--strokes", "0"], "--strokes 0"),
    (["calibrate", "--readings", "/nonexistent.csv"], "cannot read"),
])
def test_itbctl_calibrate_usage_errors_send_nothing(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert itbctl.main(argv) == itbctl.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_itbctl_calibrate_stops_on_a_programmed_pump(board, virtual_board, tmp_path, capsys):
    """A pump with a therapy is no bench pump: the run stops before any stroke."""
    from host_tools import link
    from host_tools.fixtures import start_therapy

    start_therapy(board)
    keys = tmp_path / "k.json"
    link.write_keys(keys, board.info["dev"], board.keys)
    board.close()
    fake = _FakeBalance(["S S 20.0 g"])
    try:
        code = itbctl.main(["--port", virtual_board.url, "--keys", str(keys), "--yes",
                            "calibrate", "--balance-port", fake.path, "--out",
                            str(tmp_path / "c.csv")])
    finally:
        fake.close()
    assert code == 1 and "RUNNING" in capsys.readouterr().err
    assert fake.asked == 0


def test_itbctl_calibrate_readings_need_their_measurement_and_typos_are_asked_again(
        virtual_board, tmp_path, capsys, monkeypatch):
    """Found by the new-user trial: a reading typed in mg without the unit, or with a
    digit too many, was taken and spoiled the run; Ctrl-D at a prompt was a traceback.
    A rise far from one stroke is asked again (``!`` keeps it). Found by the attacker:
    ``--readings`` of a hand-made CSV has no measurement id: it needs ``--measurement``."""
    base = _bench_board(virtual_board, tmp_path)
    masses = [f"{g:.6f}" for g in _stroke_masses(10, 2.0)]
    typed = masses[:3] + ["1.99", masses[3]] + masses[4:]  # 1.99 g: a rise of 2 g
    monkeypatch.setattr(sys, "stdin", _Terminal("y\n" + "\n".join(typed) + "\n"))
    out = tmp_path / "run.csv"
    assert itbctl.main(base + ["calibrate", "--strokes", "10", "--settle-s", "0", "--no-write",
                               "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert "a rise of -18013.993 mg, where one stroke is about 2.000 mg" in text.err
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["measurement"] >= 1 and side["strokes"] == 10
    hand = tmp_path / "hand.csv"
    hand.write_text(out.read_text())
    assert itbctl.main(base + ["--yes", "calibrate", "--readings", str(hand)]) == \
        itbctl.EXIT_USAGE
    assert "give --measurement ID" in capsys.readouterr().err
    # found by the attacker (round 2): another board's readings corrected this one
    other = tmp_path / "other.csv"
    other.write_text(out.read_text())
    other.with_suffix(".json").write_text(json.dumps({**side, "device": "0123456789abcdef"}))
    assert itbctl.main(base + ["--yes", "calibrate", "--readings", str(other)]) == \
        itbctl.EXIT_USAGE
    assert "the readings are of board 0123456789abcdef" in capsys.readouterr().err
    assert itbctl.main(base + ["--yes", "calibrate", "--readings", str(hand), "--measurement",
                               str(side["measurement"])]) == 0
    capsys.readouterr()
    # Ctrl-D at the first prompt: stopped, nothing written, exit 1
    monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
    assert itbctl.main(base + ["calibrate", "--strokes", "10", "--settle-s", "0",
                               "--no-write", "--out", str(tmp_path / "x.csv")]) == 1
    assert "stopped at the reading before the first stroke" in capsys.readouterr().err


def test_itbctl_calibrate_checks_the_caps_before_the_first_reading(virtual_board, tmp_path,
                                                                   capsys, monkeypatch):
    """Found by the new-user trial: an unprogrammed pump's 24 h cap (the maximum bolus,
    100 ug: 100 strokes at 500 ug/mL) stopped a run at its 15th stroke, after the
    readings began. The room is checked first."""
    from host_tools import link

    base = _bench_board(virtual_board, tmp_path)
    with link.Board(virtual_board.url, timeout=5) as b:
        b.keys = link.load_keys(tmp_path / "keys.json")[1]
        b.hello()
        b.call("test_clock", {"mode": "stepped"}, role="service")
        b.change("calibration_run", {"strokes": 95, "interval_ms": 1000, "measurement": 5})
        b.call("test_clock", {"mode": "stepped", "advance_ms": 100_000}, role="service")
        assert b.status()["window_ng"][0] == 95_000
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", _Terminal(""))
    code = itbctl.main(base + ["calibrate", "--strokes", "10", "--no-write", "--out",
                               str(tmp_path / "c.csv")])
    assert code == 1
    err = capsys.readouterr().err
    assert "the caps leave room for" in err and not (tmp_path / "c.csv").exists()


def test_itbctl_small_fixes_found_by_the_trials(tmp_path, capsys):
    """``trumpet --json`` after the subcommand; a refusal's ``allowed`` without a unit
    (was "allowed: 10 None"); a CSV row with a decimal comma (was read as 0 g)."""
    assert itbctl.refusal_text({"reason": "NO_MEASUREMENT", "message": "m", "allowed": 10,
                                "allowed_unit": None}).endswith("(allowed: 10)")
    bad = tmp_path / "b.csv"
    bad.write_text("time_s,mass_g\n0,0.001\n30,0,003\n60,0.005\n")
    with pytest.raises(gr.GravimetryError, match="line 3: 3 fields, the header has 2"):
        gr.read_readings(bad)
    assert itbctl.main(["trumpet", str(bad), "--rate-ul-per-h", "1", "--json"]) == \
        itbctl.EXIT_USAGE
    assert "unrecognized" not in capsys.readouterr().err


def test_a_typed_reading_far_from_a_stroke_is_kept_with_a_bang(monkeypatch, capsys):
    """Found by the attacker (round 2): the prompt offered ``!20.0035`` to keep a
    reading, and then refused it as not a mass."""
    answers = iter(["20.0035", "!20.0035"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert itbctl._typed_mass("after stroke 1", 20.0, 0.002) == pytest.approx(20.0035)
    assert "or !20.0035 to keep it" in capsys.readouterr().err
