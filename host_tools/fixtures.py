"""pytest fixtures for bench tests against the virtual board (a pytest plugin,
registered as ``itb`` in ``pyproject.toml``: installed with this project, any test
can ask for them).

- ``virtual_board``: a ``host_tools.vboard.VirtualBoard`` (the real firmware in the
  MicroPython unix port, dev build, provisioning button held) on a fresh state
  directory, stopped after the test;
- ``board``: a ``host_tools.link.Board`` connected to it with fresh keys
  provisioned, the therapy clock host-stepped (``board.call("test_clock",
  {"mode": "stepped", "advance_ms": ms})`` moves it).

Example::

    def test_my_bolus(board):
        board.change("refill", {"aspirated_nl": 0, "volume_nl": 20_000_000,
                                "concentration_ug_per_ml": 2000})
        ...
"""

import pytest

from host_tools import link
from host_tools.vboard import VirtualBoard


@pytest.fixture
def virtual_board(tmp_path):
    """A running virtual board (dev build, provisioning button held) on a fresh
    state directory; stopped after the test."""
    vb = VirtualBoard(tmp_path / "vboard", provision=True)
    vb.start()
    try:
        yield vb
    finally:
        vb.stop()


@pytest.fixture
def board(virtual_board):
    """A ``link.Board`` connected to ``virtual_board`` with fresh keys and the
    therapy clock host-stepped."""
    b = link.Board(virtual_board.url, timeout=5)
    b.hello()
    b.provision(link.new_keys())
    b.call("test_clock", {"mode": "stepped"}, role="service")
    try:
        yield b
    finally:
        b.close()
