"""``itbctl``'s command line: help for every command, exit statuses, nothing sent
without confirmation, the prepare summary in words (found by the new-user trial)."""

import io
import json
import os
import sys

import pytest

from host_tools import itbctl
from host_tools.fixtures import start_therapy

SUBCOMMANDS = sorted(itbctl.parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in SUBCOMMANDS])
def test_help_works_for_every_command(argv, capsys):
    with pytest.raises(SystemExit) as e:
        itbctl.main(argv)
    assert e.value.code == 0
    assert "usage: itbctl" in capsys.readouterr().out


def test_usage_errors_exit_64_before_anything_is_sent(capsys):
    for argv in (["frobnicate"], [], ["bolus", "--dose", "50ug"]):
        with pytest.raises(SystemExit) as e:
            itbctl.main(argv)
        assert e.value.code == itbctl.EXIT_USAGE
    assert itbctl.main(["--port", "/dev/null-none", "bolus", "--dose", "50",
                        "--duration", "1h"]) == itbctl.EXIT_USAGE  # no unit: not sent
    assert "needs a unit" in capsys.readouterr().err


def test_program_files_report_every_error_at_once(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('daily_dose = 120\norigin = "lumbar"\n')
    with pytest.raises(itbctl.UsageError) as e:
        itbctl.program_file(f)
    text = str(e.value)
    assert "daily_dose" in text and "origin" in text


def test_effect_text_says_what_a_bolus_will_really_give():
    text = itbctl.effect_text({"bolus_ng": 12_000, "bolus_strokes": 3, "plan_cancelled": 1,
                               "reservoir_nl": 19_000_000}, None, {"dose_ng": 10_000})
    assert "bolus: 12.0 ug in 3 whole strokes (you asked for 10.0 ug" in text
    assert "cancels the running plan" in text and "reservoir after it: 19.000 mL" in text


def test_a_therapy_change_without_a_terminal_or_yes_sends_nothing(virtual_board, tmp_path,
                                                                  capsys, monkeypatch):
    keys = tmp_path / "k.json"
    base = ["--port", virtual_board.url, "--keys", str(keys)]
    assert itbctl.main(base + ["keys", "provision"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # not a terminal
    assert itbctl.main(base + ["refill", "--aspirated", "0ml", "--volume", "20ml",
                               "--concentration-ug-per-ml", "2000"]) == itbctl.EXIT_USAGE
    assert "nothing was sent" in capsys.readouterr().err
    assert itbctl.main(base + ["--json", "status"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["reservoir_nl"] == 0 and st["state"] == "UNPROGRAMMED"
    assert itbctl.main(base + ["hil"]) == itbctl.EXIT_USAGE  # asks first; no terminal
    os.chmod(keys, 0o644)
    assert itbctl.main(base + ["status"]) == itbctl.EXIT_USAGE
    assert "accessible by others" in capsys.readouterr().err


def test_alarms_json_and_stopped_status_in_words(board, virtual_board, tmp_path, capsys):
    start_therapy(board)
    board.call("emergency_stop")
    path = tmp_path / "k.json"
    from host_tools import link

    link.write_keys(path, board.info["dev"], board.keys)
    board.close()
    base = ["--port", virtual_board.url, "--keys", str(path)]
    assert itbctl.main(base + ["--json", "alarms"]) == 0
    alarms = json.loads(capsys.readouterr().out)
    assert any(a["code"] == "WITHDRAWAL_RISK" and a["priority"] == "high" and a["active"]
               for a in alarms)
    assert itbctl.main(base + ["status"]) == 0
    assert "not delivering (programmed basal 400.0 ug/day" in capsys.readouterr().out
