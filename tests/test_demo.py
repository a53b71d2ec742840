"""The README's main job: the bundled demo runs, its trace replays byte for byte, and a
bad scenario file is rejected whole with every error listed (no traceback)."""

import json

import pytest
from itb import runner as rn

from host_tools import demo


@pytest.mark.sr("SR-14")
def test_demo_runs_and_its_trace_replays(tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    assert demo.main(["--trace", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "NOT a medical device" in out and "REFUSED DOWN_CAP" in out
    lines = trace.read_text().splitlines()
    assert rn.replay(lines) == lines


def test_demo_rejects_a_bad_scenario_with_every_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "evnts": [],
                "setup": [{"command": "set_daly_dose"}],
                "events": [{"at": "day 1 25:00", "command": "bolus", "args": {"dose_ug": True}}],
            }
        )
    )
    assert demo.main([str(bad), "--trace", str(tmp_path / "t.jsonl")]) == 2
    err = capsys.readouterr().err
    for text in (
        "unknown key 'evnts'",
        "unknown command 'set_daly_dose'",
        "bad time",
        "must be a number",
    ):
        assert text in err
    assert not (tmp_path / "t.jsonl").exists()
