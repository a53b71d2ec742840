"""Run in the MicroPython unix port by tests/test_board_micropython.py: the whole
firmware, Pico adapter included, imported as deployed (.mpy) against the fakes of
``machine`` and ``rp2`` (tests/fakes on MICROPYPATH), then the app doses 30 days
through the adapter. Prints one JSON line of figures; exits 1 on a failed check.

    micropython -X heapsize=320K mp_board_harness.py WORKDIR [DOSE_NG CONC DAYS ACKS_PER_HOUR]

(defaults: 400 ug/day at 2000 ug/mL for 30 days, no commands; the worst case the
tests also run is 1.9 mg/day at 500 ug/mL, 1900 strokes a day, with a command an hour).
"""

import gc
import json
import sys

gc.collect()
HEAP0 = gc.mem_alloc()

import app  # noqa: E402
import devices  # noqa: E402
import machine  # noqa: E402
import rp2  # noqa: E402
from board import pins, pio_step, ticks  # noqa: E402, F401
from board import rp2 as board  # noqa: E402
from itb import board_commands, manifest, protocol  # noqa: E402, F401

HOUR = 3600000
DAY = 24 * HOUR


def check(cond, what):
    if not cond:
        print("FAILED: " + what)
        sys.exit(1)


def main(work, dose_ng=400000, conc=2000, days=30, acks_per_hour=0):
    gc.collect()
    after_import = gc.mem_alloc()
    board.DATA_DIR = work + "/data"
    board.FLASH_ROOT = work + "/flash"
    board.MAINTENANCE_FLAG = work + "/maintenance"
    machine.DEVICES[0x68] = devices.DS3231()
    steps = [0]

    def edge(pin, level):
        if level:
            steps[0] += 1

    machine.listen(pins.STEP, edge)
    devices.HX711(pins.HX711_DOUT, pins.HX711_SCK, lambda: 1000 + 2 * steps[0])
    machine.ADC_VALUES[pins.BATTERY_ADC] = 30000  # 6 V
    try:
        board.Pico().watchdog(8389)
        check(False, "a watchdog over 8388 ms was accepted")
    except ValueError:
        pass
    pico = board.Pico({"steps_per_ml": 5000, "min_rise": 1})
    pico.mount()
    a = app.App(pico)
    r = a.runner
    n = [0]

    def cmd(name, args):
        n[0] += 1
        res = r.command({"name": "prepare", "id": n[0], "role": "clinician",
                         "args": {"command": name, "args": args}}, 0)
        check(res["ok"] == 1, "prepare " + name)
        n[0] += 1
        res = r.command({"name": "confirm", "id": n[0], "role": "clinician",
                         "args": {"hash": res["hash"]}}, 0)
        check(res["ok"] == 1, "confirm " + name)

    cmd("refill", {"aspirated_nl": 0, "volume_nl": 20000000, "concentration_ug_per_ml": conc})
    cmd("prime", {"contents": "drug"})
    cmd("program", {"daily_dose_ng": dose_ng, "origin": "spinal"})
    gc.collect()
    peak = gc.mem_alloc()
    for h in range(1, days * 24 + 1):
        for i in range(acks_per_hour):
            n[0] += 1
            t = (h - 1) * HOUR + (i + 1) * HOUR // (acks_per_hour + 1)
            r.command({"name": "acknowledge", "id": n[0], "role": "patient",
                       "args": {"code": "all"}}, t)
        r.advance(h * HOUR)
        if h % 24 == 0:
            del machine.LOG[:]  # the fakes' activity records are not the firmware's
            del rp2.LOG[:]
            gc.collect()
            peak = max(peak, gc.mem_alloc())
    gc.collect()
    after_30_days = gc.mem_alloc()
    delivered = r.ctrl.res.delivered_nl
    strokes = delivered // r.ctrl.cfg.stroke_nl
    check(strokes > 0 and steps[0] == strokes * 10, "steps %d for %d strokes" % (steps[0], strokes))
    check(r.ctrl.state == "RUNNING", "state " + r.ctrl.state)
    print(json.dumps({"heap_before_import": HEAP0, "heap_after_import": after_import,
                      "heap_after_30_days": after_30_days, "heap_peak": peak,
                      "strokes": strokes, "steps": steps[0], "heap_free": gc.mem_free(),
                      "mpy": sys.implementation._mpy}))


main(sys.argv[1], *[int(a) for a in sys.argv[2:]])
