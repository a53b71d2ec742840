"""Every bundled example (examples/*.toml) runs, says what its comments say, writes a
runner trace that replays byte for byte, and that trace passes the independent
reference model (host_tools/testkit/model.py: caps, titration rules, restarts,
reservoir bounds, fluid-path mass recomputed from scratch)."""

import json
from pathlib import Path

import pytest
from itb import runner as rn

from host_tools.testkit.model import check_trace
from sim import engine
from sim import scenario as sc

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml"))
# refusals an example is written to show (command, reason)
REFUSED = {"taper_before_explant": [("set_daily_dose", "DOWN_CAP")]}
# alarms an example is written to raise (codes, in the order first raised)
ALARMS = {
    "missed_refill": ["LOW_RESERVOIR", "RESERVOIR_EMPTY_SOON", "RESERVOIR_EMPTY"],
    "emergency_stop_overdose": ["WITHDRAWAL_RISK"],
    "power_cuts_during_bolus": ["CLOCK_INVALID", "RESTART_REDUCED"],
    "taper_before_explant": ["PUMP_STOPPED"],
}


def _run(path):
    lines = []
    res = engine.Simulation(sc.load(path), trace=lines.append).run()
    return res, lines


@pytest.fixture(scope="module")
def runs():
    return {p.stem: _run(p) for p in EXAMPLES if p.stem != "maintenance_2y"}


def test_there_are_the_examples_the_issue_lists():
    names = {p.stem for p in EXAMPLES}
    assert {"spinal_titration", "cerebral_titration", "paediatric_titration",
            "refill_concentration_change", "refill_concentration_change_catheter_error",
            "taper_before_explant", "missed_refill", "emergency_stop_overdose",
            "power_cuts_during_bolus", "maintenance_2y"} <= names


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES if p.stem != "maintenance_2y"])
def test_example_runs_as_written(runs, name):
    res, lines = runs[name]
    refused = [(c["command"], c["reason"]) for c in res.summary["commands"] if not c["accepted"]]
    assert refused == REFUSED.get(name, [])
    assert all(row["accepted"] for row in res.setup)
    raised = list(dict.fromkeys(a["code"] for a in res.summary["alarms"]))
    assert raised == ALARMS.get(name, [])
    assert rn.replay(lines) == lines
    assert [str(v) for v in check_trace(lines)] == []
    json.dumps(res.summary)


def test_titration_examples_reach_their_targets(runs):
    for name, target in (("spinal_titration", 400), ("cerebral_titration", 150),
                         ("paediatric_titration", 120)):
        daily = runs[name][0].summary["daily"]
        assert daily[-1]["programmed_daily_dose_ug"] == target, name
        assert daily[0]["programmed_daily_dose_ug"] < target


def test_emergency_stop_restart_is_capped(runs):
    """SR-16/SR-11: after a 12 h emergency stop the restart is at most 75 % of the
    last settled dose (400 -> 300 ug/day)."""
    daily = runs["emergency_stop_overdose"][0].summary["daily"]
    assert [d["programmed_daily_dose_ug"] for d in daily] == [400, 0, 300, 300, 300]


def test_two_year_maintenance_example_is_the_benchmark_scenario():
    """The benchmark scenario (benchmarks/sim_speed.py) runs clean: two years, a
    refill every 60 days before the low-reservoir alarm would start; no alarm at
    all."""
    res, lines = _run(next(p for p in EXAMPLES if p.stem == "maintenance_2y"))
    s = res.summary
    assert s["duration_days"] == 730 and all(c["accepted"] for c in s["commands"])
    assert s["alarms"] == [] and len(s["commands"]) == 12
    assert s["max_delivered_ug_any_24h"] < 1000  # the prescription's 24 h cap
