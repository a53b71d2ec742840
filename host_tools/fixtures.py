"""pytest fixtures for bench tests against the virtual board (a pytest plugin,
registered as ``itb`` in ``pyproject.toml``: installed with this project, any test
can ask for them).

- ``virtual_board``: a ``host_tools.vboard.VirtualBoard`` (the real firmware in the
  MicroPython unix port, dev build, provisioning button held) on a fresh state
  directory, stopped after the test;
- ``board``: a ``host_tools.link.Board`` connected to it with fresh keys
  provisioned, the therapy clock host-stepped (``board.call("test_clock",
  {"mode": "stepped", "advance_ms": ms})`` moves it).

and ``start_therapy(board, ...)``: fill, prime and program a board (two-phase).

Example::

    def test_my_bolus(board):
        start_therapy(board)
        board.change("bolus", {"dose_ng": 50_000, "duration_ms": 1_800_000})
        ...
"""

import pytest

# Nothing of the firmware is imported when the plugin loads (before any conftest):
# a test run that puts another firmware copy first on sys.path (the mutation suite,
# ITB_FIRMWARE_DIR) must get that copy's ``itb``.


@pytest.fixture
def virtual_board(tmp_path):
    """A running virtual board (dev build, provisioning button held) on a fresh
    state directory; stopped after the test."""
    from host_tools.vboard import VirtualBoard

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
    from host_tools import link

    b = link.Board(virtual_board.url, timeout=5)
    b.hello()
    b.provision(link.new_keys())
    b.call("test_clock", {"mode": "stepped"}, role="service")
    try:
        yield b
    finally:
        b.close()


def start_therapy(board, daily_dose_ng=400_000, concentration_ug_per_ml=2000,
                  volume_nl=20_000_000, origin="spinal"):
    """Fill an unprogrammed board's reservoir, declare its catheter primed with drug
    and program a continuous basal (each two-phase, SR-15); returns the program's
    confirm result. Raises ``link.Refused`` if the board refuses a step."""
    board.change("refill", {"aspirated_nl": 0, "volume_nl": volume_nl,
                            "concentration_ug_per_ml": concentration_ug_per_ml})
    board.change("prime", {"contents": "drug"})
    return board.change("program", {"daily_dose_ng": daily_dose_ng, "origin": origin})
