"""The verification tools can fail: the traceability check reports a rule without
a test, the mutation list rejects a stale entry, and the ticks-to-therapy-clock
conversion used in the MicroPython differential is right across the 2^30 wrap."""

import subprocess
from pathlib import Path

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
    ticks.advance(1)  # a later small step must not quietly resume (attack finding)
    with pytest.raises(ValueError, match="failed earlier"):
        clock.read()
    with pytest.raises(ValueError, match="base_ms"):
        TherapyClock(ticks.ticks_ms, ticks.ticks_diff, -1)


def test_traceability_rejects_a_rule_it_cannot_parse(tmp_path):
    """A rule written in another format, or a gap in the numbering, fails loudly
    instead of dropping out of the check (attack finding)."""
    text = traceability.RULES_FILE.read_text(encoding="utf-8")
    doc = tmp_path / "rules.md"
    doc.write_text(text + "\n- **SR-31**: a new rule with a colon\n", encoding="utf-8")
    with pytest.raises(ValueError, match="SR-31 named but not defined"):
        traceability.load_rules(doc)
    doc.write_text(text.replace("- **SR-12**", "- SR-12"), encoding="utf-8")
    with pytest.raises(ValueError, match="in order"):
        traceability.load_rules(doc)


def test_traceability_does_not_count_skipped_tests(tmp_path):
    """A skipped or xfail test checks nothing, so it names no rule (attack finding)."""
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "@pytest.mark.skip\n@pytest.mark.sr('SR-1')\ndef test_a(): pass\n"
        "@pytest.mark.xfail(run=False)\ndef test_sr2_b(): pass\n"
        "@pytest.mark.skipif(True, reason='x')\ndef test_sr3_c(): pass\n"
        "@pytest.mark.sr('SR-4')\ndef test_d(): assert 1\n"
    )
    tests = traceability.collect_tests([str(tmp_path)])
    assert {k.split("::")[-1]: v for k, v in tests.items()} == {"test_d": {"SR-4"}}


def test_mutate_counts_only_a_failed_test_as_a_kill():
    """A collection ERROR is the mutant breaking the suite, not a test killing it
    (attack finding)."""
    assert mutate._killer("ERROR tests/test_rules.py - ImportError\n") is None
    out = "ERROR x\nFAILED tests/test_rules.py::test_sr5_x[1] - assert 0\n"
    assert mutate._killer(out) == "tests/test_rules.py::test_sr5_x[1]"


@pytest.mark.parametrize(
    "extra, message",
    [
        ('file = "../limits.py"\nfind = "def up_cap_ok"\n', "module name"),
        ('file = "limits.py"\nfind = "def up_cap_ok"\nquick = "false"\n', "true or false"),
    ],
)
def test_mutation_entry_must_stay_inside_firmware_itb(tmp_path, extra, message):
    """A mutant's file is a module of firmware/itb (no path that could write the real
    tree) and quick is a boolean (attack finding)."""
    bad = tmp_path / "m.toml"
    bad.write_text('[[mutant]]\nname = "x"\nrules = ["SR-5"]\nwhy = "w"\nreplace = "y"\n' + extra)
    with pytest.raises(mutate.MutantError, match=message):
        mutate.load(bad)


@pytest.mark.parametrize(
    "lines",
    [
        ['{"cfg":"x","k":"config","t":0}'],
        ['{"cfg":{},"k":"config","t":0}', '{"cmd":[1],"k":"cmd","t":0}',
         '{"id":0,"k":"result","ok":1,"reason":null,"t":0}'],
    ],
)
def test_model_cli_reports_a_misshapen_trace_as_malformed(tmp_path, capsys, lines):
    """A record of a known kind but the wrong shape is a malformed trace (exit 2,
    one line), not a traceback and not a violation (attack finding)."""
    from host_tools.testkit import model

    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert model.main([str(path)]) == 2
    assert "malformed trace" in capsys.readouterr().err


def test_the_control_run_uses_a_copy_of_the_firmware_like_the_mutants(monkeypatch):
    """A test that reads the repository through the firmware's folder failed on every
    mutant's copy and so "killed" all of them (seen in CI). The control run now runs on
    an unmutated copy placed like a mutant's, so such a test fails the control run."""
    seen = []

    def fake_suite(files, env, python, timeout_s):
        seen.append(dict(env))
        assert (Path(env["ITB_FIRMWARE_DIR"]) / "itb" / "controller.py").is_file()
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(mutate, "_suite", fake_suite)
    assert mutate.baseline(["tests/test_rules.py"])[0]
    assert seen and Path(seen[0]["ITB_FIRMWARE_DIR"]) != mutate.FIRMWARE
