"""The verification tools can fail: the traceability check reports a rule without
a test, the mutation list rejects a stale entry, and the ticks-to-therapy-clock
conversion used in the MicroPython differential is right across the 2^30 wrap."""

import pytest
from board.ticks import MAX_READ_GAP_MS, TherapyClock
from hypothesis import given
from hypothesis import strategies as st

from host_tools.testkit import mutate, traceability
from host_tools.testkit.mp_replay import PERIOD, Ticks


def test_traceability_reads_thirty_rules_in_order():
    rules = traceability.load_rules()
    assert list(rules) == ["SR-%d" % n for n in range(1, 31)]
    assert rules["SR-12"].startswith("No catch-up")


def test_traceability_reports_a_rule_without_tests_and_an_unknown_rule():
    rules = {"SR-1": "a", "SR-2": "b"}
    tests = {"t.py::test_sr1_x": {"SR-1"}, "t.py::test_y": {"SR-31"}}
    rows, problems = traceability.table(rules, tests, {})
    assert [r[3] for r in rows] == [["t.py::test_sr1_x"], []]
    assert problems == [
        "t.py::test_y names SR-31, which SAFETY_RULES.md does not define",
        "SR-2 has no test",
    ]


def test_traceability_names_rules_from_markers_and_test_names():
    tests = traceability.collect_tests(["tests/test_rules.py"])
    assert "SR-23" in tests["tests/test_rules.py::test_sr23_time_earlier_than_last_is_refused"]
    # name only (no marker) still counts: test_sr<n>_
    assert traceability.NAME_RULE.findall("test_sr8_up_cap_and_sr11_restart") == ["8", "11"]
    assert traceability.NAME_RULE.findall("test_srx_or_sr_8") == []


def test_mutation_list_is_current_and_has_at_least_15_mutants():
    mutants = mutate.load()
    assert len(mutants) >= 15
    assert any(m["quick"] for m in mutants)
    files = mutate.test_files()
    assert files[-1].endswith("test_property_machine.py")
    assert not any("micropython" in f for f in files)


def test_mutation_list_rejects_a_stale_or_malformed_entry(tmp_path):
    base = 'name = "x"\nrules = ["SR-5"]\nwhy = "w"\nfile = "limits.py"\nreplace = "y"\n'
    bad = tmp_path / "m.toml"
    bad.write_text('[[mutant]]\n' + base + 'find = "no such text in limits.py"\n')
    with pytest.raises(mutate.MutantError, match="occurs 0 times"):
        mutate.load(bad)
    bad.write_text('[[mutant]]\n' + base)
    with pytest.raises(mutate.MutantError, match="'find' must be"):
        mutate.load(bad)
    bad.write_text('[[mutant]]\n' + base + 'find = "def up_cap_ok"\nquick = true\nextra = 1\n')
    with pytest.raises(mutate.MutantError, match="unknown field"):
        mutate.load(bad)


# ---------------------------------------------------------------- ticks -> therapy clock


@pytest.mark.sr("SR-23")
@given(
    start=st.integers(0, PERIOD - 1),
    base=st.integers(0, 1 << 40),
    steps=st.lists(st.integers(0, MAX_READ_GAP_MS), min_size=1, max_size=40),
)
def test_sr23_therapy_clock_is_exact_across_ticks_wraps(start, base, steps):
    """SR-23 (the therapy clock never goes backwards): read through 2^30 ms ticks
    that wrap anywhere, the therapy clock equals the base plus the true elapsed
    time, for any sequence of reads at most MAX_READ_GAP_MS apart."""
    ticks = Ticks(start)
    clock = TherapyClock(ticks.ticks_ms, ticks.ticks_diff, base)
    elapsed = 0
    for step in steps:
        ticks.advance(step)
        elapsed += step
        assert clock.read() == base + elapsed


@pytest.mark.sr("SR-23")
def test_sr23_therapy_clock_refuses_a_gap_it_cannot_measure():
    """A read more than MAX_READ_GAP_MS after the last cannot be told from a wrap
    or a backwards step: the clock raises instead of guessing (+-1 ms edge)."""
    ticks = Ticks(PERIOD - 5)
    clock = TherapyClock(ticks.ticks_ms, ticks.ticks_diff, 1000)
    ticks.advance(MAX_READ_GAP_MS)
    assert clock.read() == 1000 + MAX_READ_GAP_MS
    ticks.advance(MAX_READ_GAP_MS + 1)
    with pytest.raises(ValueError, match="ticks moved"):
        clock.read()
    assert clock.now_ms == 1000 + MAX_READ_GAP_MS  # unchanged by the refused read
    with pytest.raises(ValueError, match="base_ms"):
        TherapyClock(ticks.ticks_ms, ticks.ticks_diff, -1)
