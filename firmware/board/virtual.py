"""The virtual board: the real firmware (``app.py``) in the MicroPython unix port,
with simulated hardware. Started by ``itbsim board`` (``host_tools/vboard.py``),
which owns the host side of its serial port and plays power supply, reset
circuit and external watchdog:

    MICROPYPATH=firmware micropython -X heapsize=192K firmware/board/virtual.py \\
        --state DIR --serial PORT [--accelerate N] [--provision] [--dev] [--config JSON]
        [--watchdog-ms MS] [--reset-cause power_on|watchdog|reset]

- serial: a TCP connection to ``127.0.0.1:PORT`` (the launcher relays it to a
  pseudo-terminal or a TCP socket for pyserial);
- motor: every stroke succeeds unless a fault was injected (``inject``: the next
  ``count`` strokes end ``stall``, ``occlusion`` or ``unknown``);
- syringe-empty switch: set by ``inject`` (``switch``);
- calibration: ``calibrate`` scales the simulated motion (``motion_ppm``: volume
  moved per nominal volume, in ppm, kept in ``DIR/calibration`` like the Pico's
  board.json); ``status`` reports it (``board.hw``);
- RTC: host time plus an offset kept in ``DIR/rtc`` (it keeps pace with the test
  clock, and survives resets like a battery-backed DS3231); ``rtc_set`` moves it;
  a state file with ``valid 0`` makes it invalid (``--rtc-invalid``);
- flash: the directory ``DIR/fs`` (``itb.fs.DirFS``);
- ticks: the unix port's ``ticks_ms`` folded to the RP2040's 2^30 ms period, so
  the wrap-safe therapy clock is exercised as on the Pico;
- provisioning button: held for the whole run with ``--provision``;
- watchdog: the launcher (``WDT feed`` lines on stdout; no feed for the timeout
  resets the board, like ``machine.WDT``; ``--watchdog-ms`` shortens it for
  tests); annunciation: ``ANN level`` lines;
- fault injection (dev builds): the next strokes end ``stall``, ``occlusion`` or
  ``unknown``, or ``hang`` (the stroke never returns: a stuck driver that only
  the watchdog ends).
"""

import asyncio
import os
import sys
import time

from itb import fs, manifest

PERIOD = 1 << 30  # RP2040 ticks_ms period


def ticks_ms():
    # The stubs type ticks as opaque (_TicksMs: only ticks_diff/ticks_add may use them);
    # on the unix port they are plain ints, folded here to the RP2040's period.
    return time.ticks_ms() & (PERIOD - 1)  # pyright: ignore[reportOperatorIssue]


def ticks_diff(a, b):
    return ((a - b + PERIOD // 2) & (PERIOD - 1)) - PERIOD // 2


def _read(path):
    f = open(path, "rb")
    try:
        return f.read()
    finally:
        f.close()


def _write(path, data):
    f = open(path + ".tmp", "wb")
    try:
        f.write(data)
    finally:
        f.close()
    os.rename(path + ".tmp", path)


class Serial:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    async def read(self):
        data = await self.reader.read(512)
        if not data:
            sys.exit(3)  # the launcher closed the link: power off
        return data

    async def write(self, data):
        self.writer.write(data)
        await self.writer.drain()


class Watchdog:
    def __init__(self, timeout_ms):
        self.line("WDT start %d" % timeout_ms)

    def line(self, text):
        sys.stdout.write(text + "\n")

    def feed(self):
        self.line("WDT feed")


class VirtualBoard:
    DEV = True
    ARCHIVE_FILES = 512  # a directory has room: 16 MB of ledger for export (months)

    def __init__(self, state, provision=False, rtc_invalid=False, dev=True, firmware="firmware",
                 watchdog_ms=None, reset_cause="power_on"):
        self.state = state.rstrip("/")
        if not fs.exists(self.state):
            os.mkdir(self.state)
        self.fs = fs.DirFS(self.state + "/fs")
        self.DEV = dev
        self.firmware = firmware
        self._reset_cause = reset_cause
        if watchdog_ms:
            self.WATCHDOG_MS = watchdog_ms
        self._provision = provision
        self.fault = "ok"
        self.fault_count = 0
        self.switch = False
        self.strokes = 0
        self.serial: "Serial | None" = None  # set by _main once connected
        rtc = self.state + "/rtc"
        if not fs.exists(rtc):
            _write(rtc, b"0 1\n")
        off, valid = _read(rtc).split()
        self.rtc_offset = int(off)
        self.rtc_valid = int(valid) and not rtc_invalid
        if rtc_invalid:
            _write(rtc, b"%d 0\n" % self.rtc_offset)
        dev_id = self.state + "/device_id"
        if not fs.exists(dev_id):
            _write(dev_id, b"%s\n" % "".join(["%02x" % b for b in os.urandom(8)]))
        self._device = _read(dev_id).strip().decode()
        cal = self.state + "/calibration"
        self.motion_ppm = int(_read(cal)) if fs.exists(cal) else 1000000
        self.calibration = None

    # hardware
    def stroke(self, n, volume_nl, now):
        self.strokes += 1
        if self.fault_count > 0:
            self.fault_count -= 1
            while self.fault == "hang":  # a stuck driver: only the watchdog gets out
                time.sleep(1)
            return self.fault
        return "ok"

    def empty_switch(self):
        return self.switch

    def calibrate(self, stroke_nl, measured_nl):
        """A confirmed ``set_calibration``: strokes of ``stroke_nl`` delivered
        ``measured_nl``, so the motion is scaled by their ratio (as the Pico's
        steps per mL are) and kept across resets."""
        was = self.motion_ppm
        new = (was * stroke_nl * 2 + measured_nl) // (2 * measured_nl)
        self.calibration = {"stroke_nl": stroke_nl, "measured_nl": measured_nl,
                            "motion_ppm_was": was, "motion_ppm": new}
        if abs(new - 1000000) > 250000:  # as the Pico's CALIBRATION_SPAN_PCT
            self.calibration["error"] = "more than 25 % from the motion set by hand"
            self.calibration["motion_ppm"] = was
            return
        try:
            _write(self.state + "/calibration", b"%d\n" % new)
        except OSError as e:
            self.calibration["error"] = "not written: %s" % e
            self.calibration["motion_ppm"] = was
            return
        self.motion_ppm = new

    def status(self):
        """Board figures for ``status``: the simulated motion and the last calibration."""
        return {"motion_ppm": self.motion_ppm, "calibration": self.calibration}

    def inject(self, fault, count, switch):
        self.fault = fault
        self.fault_count = count
        if switch != 2:
            self.switch = bool(switch)

    def ticks_ms(self):
        return ticks_ms()

    def ticks_diff(self, a, b):
        return ticks_diff(a, b)

    def rtc_now(self):
        if not self.rtc_valid:
            return None
        return time.time_ns() // 1000000 + self.rtc_offset

    def rtc_set(self, utc_ms):
        self.rtc_offset = utc_ms - time.time_ns() // 1000000
        self.rtc_valid = True
        self._save_rtc()

    def rtc_skew(self, ms):
        self.rtc_offset += ms
        self._save_rtc()

    def _save_rtc(self):
        _write(self.state + "/rtc", b"%d %d\n" % (self.rtc_offset, 1 if self.rtc_valid else 0))

    def reset_cause(self):
        """Why this boot: ``power_on``, ``watchdog`` or ``reset`` (the launcher's)."""
        return self._reset_cause

    def provisioning(self):
        return self._provision

    def random(self, n):
        return os.urandom(n)

    def device_id(self):
        return self._device

    def manifest(self):
        return manifest.digest(self.firmware, os.listdir, fs.isdir, fs.size)

    def watchdog(self, timeout_ms):
        return Watchdog(timeout_ms)

    def maintenance(self):
        sys.stdout.write("WDT stop\n")

    def annunciate(self, level):
        sys.stdout.write("ANN %s\n" % level)


async def _main(opts):
    from app import App

    board = VirtualBoard(opts["state"], opts["provision"], opts["rtc_invalid"], opts["dev"],
                         opts["firmware"], opts["watchdog_ms"], opts["reset_cause"])
    app = App(board, opts["config"])
    if opts["accelerate"] > 1:
        app.clock.set_mode("accelerated", opts["accelerate"])
    reader, writer = await asyncio.open_connection("127.0.0.1", opts["serial"])
    board.serial = Serial(reader, writer)
    sys.stdout.write("READY %s %s\n" % (app.runner.ctrl.state, board.device_id()))
    await app.run()


def main(argv):
    opts = {"state": None, "serial": None, "accelerate": 1, "provision": False,
            "rtc_invalid": False, "dev": False, "firmware": "firmware", "config": None,
            "watchdog_ms": None, "reset_cause": "power_on"}
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in ("--provision", "--rtc-invalid", "--dev"):
            opts[a[2:].replace("-", "_")] = True
        elif a in ("--state", "--serial", "--accelerate", "--firmware", "--config",
                   "--watchdog-ms", "--reset-cause") and i + 1 < len(argv):
            v = argv[i + 1]
            if a == "--config":
                import json

                v = json.loads(v)
            elif a in ("--serial", "--accelerate", "--watchdog-ms"):
                v = int(v)
            opts[a[2:].replace("-", "_")] = v
            i += 1
        else:
            sys.stderr.write("virtual.py: unknown argument %s\n" % a)
            sys.exit(2)
        i += 1
    if opts["state"] is None or opts["serial"] is None:
        sys.stderr.write("virtual.py: --state DIR and --serial PORT are required\n")
        sys.exit(2)
    asyncio.run(_main(opts))


if __name__ == "__main__":
    main(sys.argv)
