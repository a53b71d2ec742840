"""The board's own commands, declared with the schema's helpers (``commands.py``;
one schema, two tables: ``commands.spec``, ``validate`` and ``roles`` read both).

They live apart so that the controller, which never answers them, does not load
them (heap on the board).
"""

from itb.commands import CLINICIAN, DAY, INT, ROLES, SERVICE, STR, TIME_UNITS, _p

UTC_MAX_MS = 1 << 47  # about 4400 years after 1970
CLOCK_MODES = ("real", "accelerated", "stepped")
FAULTS = ("ok", "stall", "occlusion", "unknown", "hang")  # hang: the stroke never returns

# Answered by the app (``firmware/app.py``), never by the controller.
# They change no therapy state by themselves; ``time_sync`` and the test clock reach
# the controller as runner inputs (logged), ``inject`` drives the virtual board's
# hardware. ``test_clock`` and ``inject`` exist only in dev builds.
BOARD_COMMANDS = {
    "status": (ROLES, 0, (), "state, doses, caps, windows, reservoir, alarms"),
    "log": ((CLINICIAN, SERVICE), 0, (
        _p("from_seq", INT, 0, 1 << 62, 0, doc="first ledger sequence number (0: oldest held)"),
    ), "the ledger records the board holds, from a sequence number"),
    "time_sync": ((CLINICIAN, SERVICE), 0, (
        _p("utc_ms", INT, 0, UTC_MAX_MS, doc="UTC now, ms since 1970"),
    ), "set the board's RTC (a logged runner input, SR-23)"),
    "test_clock": ((SERVICE,), 0, (
        _p("mode", STR, choices=CLOCK_MODES, doc="real, accelerated or host-stepped time"),
        _p("factor", INT, 1, 100000, 1, doc="speed-up in accelerated mode"),
        _p("advance_ms", INT, 0, 400 * DAY, 0, TIME_UNITS, doc="stepped: advance by this"),
    ), "dev builds: the therapy clock for HIL tests"),
    "inject": ((SERVICE,), 0, (
        _p("fault", STR, default="ok", choices=FAULTS, doc="outcome of the next strokes"),
        _p("count", INT, 0, 100000, 0, doc="how many strokes it applies to"),
        _p("switch", INT, 0, 2, 2, doc="syringe-empty switch: 0 off, 1 on, 2 unchanged"),
    ), "dev builds: virtual-board hardware faults"),
}


