"""``itbctl hil``: the property machine against the virtual board through the
protocol (host-stepped test clock), and proof that it can fail: the same run
against a firmware whose SR-8 up-cap check was removed reports the violation."""

import shutil

import pytest

from host_tools import itbctl, link
from host_tools.testkit import hil
from host_tools.testkit.machine import CONFIG
from host_tools.toolchain import FIRMWARE
from host_tools.vboard import VirtualBoard


@pytest.mark.sr("SR-4", "SR-5", "SR-8", "SR-9", "SR-12", "SR-14", "SR-19")
def test_itbctl_hil_passes_on_the_virtual_board(tmp_path, capsys):
    keys = tmp_path / "keys.json"
    with VirtualBoard(tmp_path / "b", provision=True, config=CONFIG) as vb:
        base = ["--port", vb.url, "--keys", str(keys)]
        assert itbctl.main(base + ["keys", "provision"]) == 0
        code = itbctl.main(base + ["--yes", "hil", "--examples", "4", "--steps", "25"])
        out = capsys.readouterr().out
        assert code == 0, out
        for name in hil.INVARIANTS:
            assert f"ok  {name}: checked" in out
        assert "HIL passed" in out
        assert vb.resets == {"exit": 0, "watchdog": 0, "power_cut": 0}


@pytest.mark.sr("SR-19")
def test_hil_reports_a_faulty_firmware(tmp_path):
    """A firmware copy whose pessimistic reservoir bound uses half the volume
    tolerance (a late LOW_RESERVOIR alarm): the HIL run fails on the reservoir
    invariant, and the board's trace no longer replays on the host's firmware."""
    bad = tmp_path / "firmware"
    shutil.copytree(FIRMWARE, bad, ignore=shutil.ignore_patterns("__pycache__"))
    source = bad / "itb" / "reservoir.py"
    text = source.read_text()
    fault = "return self.remaining_nl() - ceil_div(self.delivered_nl * self.tol, 1000)"
    assert text.count(fault) == 1
    source.write_text(text.replace(fault, fault.replace("1000)", "2000)")))
    with VirtualBoard(tmp_path / "b", provision=True, config=CONFIG, firmware=bad) as vb:
        b = link.Board(vb.url, timeout=10)
        b.hello()
        b.provision(link.new_keys())
        report = hil.run(b, examples=3, steps=25, say=lambda text: None)
        b.close()
    assert not report["passed"], report
    assert "reservoir_rules" in report["failure"], report["failure"]
