"""The board's main loop (asyncio), the same on the Pico and the virtual board.

Theory of operation
-------------------
``App(board).run()`` boots the controller from the board's file system
(``itb.store.boot``: recovery, outage bounds from the RTC, SR-23/25/26) and runs
four tasks on one asyncio loop:

- **runner**: sleeps until the controller's next wake-up and runs it through
  ``itb.runner`` (decide -> durable intent -> one stroke -> outcome); it also
  polls the syringe-empty switch. It owns every call into the runner, so no
  command can interleave with a stroke (asyncio is cooperative and each runner
  call is synchronous).
- **server**: reads the serial stream, splits frames (``itb.protocol.Deframer``:
  a bad frame is dropped and counted, never half-used), authenticates each
  command (``itb.protocol.Gate``) and answers it. Controller commands go to
  ``Runner.command``; board commands (``board_commands.py``) are answered
  here.
- **alarms**: annunciates the highest active alarm priority on the board's
  buzzer and LED (IEC 60601-1-8 levels; the controller re-raises HIGH alarms,
  SR-28).
- **health**: the only code that feeds the watchdog (SR-27), and only while the
  runner and server tasks have checked in within ``HEALTHY_MS``; it stops
  feeding in MAINTENANCE (no watchdog there, SR-27; a Pico watchdog cannot be
  stopped, so the rp2 adapter resets into a maintenance boot instead).

The therapy clock comes from the board's tick counter (``board.ticks.TherapyClock``,
wrap-safe). Dev builds add a **test clock** for HIL tests (service role only):
``accelerated`` (therapy time runs ``factor`` times faster than ticks) or
``stepped`` (time moves only when the host says, and the runner catches up at
once). The RTC is moved by the same amount (``board.rtc_skew``), so outage
bounds after a reset stay consistent with the ledger's wall-clock stamps.

Boot-loop counter (SR-27): each boot after a watchdog or firmware reset appends
its RTC time to ``boots``; three such boots within ``BOOT_LOOP_MS`` (or, with the
RTC invalid, three without a ``STABLE_MS`` healthy run between them) boot into
SAFE. A power-on and a run that stays healthy for ``STABLE_MS`` clear the count
(reading chosen: power cycles are not a crash loop, and SAFE stops dosing).

Keys (one per role, 32 bytes) live in the file ``keys`` beside the store (JSON
and a CRC, written to a temporary file and renamed); they are accepted only
while ``board.provisioning()`` is true (the provisioning button), never logged
and never sent back.

The board object (``board/virtual.py``; ``board/rp2.py`` on the Pico) offers:
``fs`` (file system, ``itb.fs``), ``stroke(n, volume_nl, now) -> outcome``,
``serial`` (``async read() -> bytes``, ``async write(data)``), ``ticks_ms()``,
``ticks_diff(a, b)``, ``rtc_now() -> UTC ms | None``, ``rtc_set(utc_ms)``,
``rtc_skew(ms)``, ``empty_switch() -> bool``, ``provisioning() -> bool``,
``reset_cause() -> "power_on" | "watchdog" | "reset"``,
``random(n) -> bytes``, ``device_id() -> str``, ``manifest() -> str``,
``watchdog(timeout_ms) -> object with feed()``, ``maintenance()`` (stop the
watchdog or reset into a maintenance boot), ``annunciate(level)``, ``DEV``
(True in dev builds) and, in dev builds, ``inject(fault, count, switch)``.
Optional: ``CONSOLE`` (True when the serial port is the REPL's: Ctrl-C is then
disabled outside MAINTENANCE), ``WATCHDOG_MS``, ``ARCHIVE_FILES``,
``battery_low() -> bool`` (MEDIUM ``BATTERY_LOW``), ``button_presses() -> list``
of ``"ack"`` / ``"bolus"`` (``App.button``) and ``status() -> dict`` (hardware
figures in ``status``). ``board/rp2.py`` has them all.
"""

import asyncio
import binascii
import gc
import json
import sys

from itb import commands as cmds
from itb import protocol as pr
from itb import store as durable
from itb.controller import ID_STEP_MAX, MAINTENANCE, command_crc

from board.ticks import TherapyClock

TYPE_CHECKING = False  # MicroPython has no typing: guards checker-only lines

KEYS_FILE = "keys"
BOOTS_FILE = "boots"
BOOT_LOOP_MS = 10 * 60000  # SR-27: 3 resets in 10 min
STABLE_MS = 10 * 60000
WATCHDOG_MS = 8000  # below the RP2040's 8388 ms maximum
HEALTHY_MS = 4000  # a task silent for longer stops the watchdog feed
MAX_SLEEP_MS = 1000  # the runner re-checks the clock at least this often
WRITE_TIMEOUT_MS = 1000  # an answer the host does not take within this is dropped
STALLED_WRITE_MS = 10  # ... and after that, until one goes through, this
STALLED_MS_PER_KB = 200  # plus this per KB of answer (a Pico writes a byte at a time)
STEP_CHUNK_MS = 3600000  # a test-clock step runs one wake-up, at most an hour, at a time
BOARD_IDS = 16  # board-command results remembered by id (a retry is not re-applied)
SWITCH_POLL_MS = 200
RTC_CHECK_MS = 60000  # the RTC is compared with the ledger's stamps this often (real ms)
RTC_RESYNC_MS = 1500  # ... and the stamps re-synced when they are this far off
RTC_INVALID_CHECKS = 3  # unreadable this many checks in a row: CLOCK_INVALID
ARCHIVE_FILES = 8  # ledger kept for export: 8 x 32 KB (about a week at 100 strokes/day)
DATA_CHUNK = 1536  # bytes of ledger per DATA part (within MAX_PAYLOAD)
PRIORITY_ORDER = ("low", "medium", "high")


def boot_loop(entries, rtc_now):
    """SR-27: True if this boot makes three within ``BOOT_LOOP_MS``. ``entries``:
    the RTC times (UTC ms, -1: unknown) of earlier boots since the last stable
    run, oldest first; ``rtc_now``: this boot's RTC (None: invalid). Without
    trustworthy times, three boots with no stable run between them count."""
    if len(entries) < 2:
        return False
    last3 = entries[-2:]
    if rtc_now is None or -1 in last3:
        return True
    return 0 <= rtc_now - last3[0] <= BOOT_LOOP_MS


class TestClock:
    """Therapy time from ``TherapyClock`` (real), or the dev test clock:
    accelerated by ``factor`` or stepped by the host. Never goes backwards."""

    def __init__(self, real):
        self.real = real
        self.mode = "real"
        self.factor = 1
        self.anchor = real.now_ms  # therapy time at the last mode change
        self.anchor_real = real.now_ms
        self.last = real.now_ms

    def now(self):
        r = self.real.read()
        if self.mode == "real":
            t = self.anchor + (r - self.anchor_real)
        elif self.mode == "accelerated":
            t = self.anchor + (r - self.anchor_real) * self.factor
        else:
            t = self.anchor
        if t < self.last:  # pragma: no cover - each mode is monotonic on its own
            t = self.last
        self.last = t
        return t

    def set_mode(self, mode, factor):
        now = self.now()
        self.mode = mode
        self.factor = factor
        self.anchor = now
        self.anchor_real = self.real.now_ms

    def step(self, ms):
        """Stepped mode: therapy time jumps ``ms`` ahead (read it with ``App.now``,
        which moves the RTC by the same amount)."""
        self.anchor += ms

    def real_ms_until(self, t, now):
        """Real milliseconds until therapy time ``t`` (None: only a step gets there)."""
        if self.mode == "stepped":
            return None
        return (t - now) // (self.factor if self.mode == "accelerated" else 1)


def _read_keys(fs):
    try:
        f = fs.open(KEYS_FILE, "rb")
    except OSError:
        return {}
    try:
        raw = f.read()
    finally:
        f.close()
    i = raw.rfind(b"\n", 0, len(raw) - 1)
    body, crc = raw[:i + 1], raw[i + 1:].strip()
    if i < 0 or crc != durable.crc_hex(body).encode():
        return {}  # a torn or damaged key file: provision again
    keys = {}
    got = json.loads(body)
    for role in got:
        keys[role] = binascii.unhexlify(got[role])
    return keys


def _write_keys(fs, keys):
    obj = {}
    for role in keys:
        obj[role] = binascii.hexlify(keys[role]).decode()
    body = json.dumps(obj).encode() + b"\n"
    f = fs.open(KEYS_FILE + ".tmp", "wb")
    try:
        f.write(body + durable.crc_hex(body).encode() + b"\n")
    finally:
        f.close()
    fs.rename(KEYS_FILE + ".tmp", KEYS_FILE)


def _boots(fs):
    try:
        f = fs.open(BOOTS_FILE, "rb")
    except OSError:
        return []
    try:
        out = []
        for part in f.read().split():
            try:
                out.append(int(part))
            except ValueError:
                pass  # a torn entry counts as nothing
        return out
    finally:
        f.close()


def _write_boots(fs, entries):
    f = fs.open(BOOTS_FILE + ".tmp", "wb")
    try:
        f.write((" ".join([str(e) for e in entries]) + "\n").encode())
    finally:
        f.close()
    fs.rename(BOOTS_FILE + ".tmp", BOOTS_FILE)


def clear_boots(fs):
    """SR-27: the boot-loop count starts afresh (a stable run, a MAINTENANCE boot)."""
    _write_boots(fs, [])


class App:
    """One board's controller, command server, annunciation and watchdog."""

    def __init__(self, board, config=None):
        if hasattr(gc, "threshold"):  # MicroPython: collect early, keep the heap unfragmented
            gc.threshold(32 * 1024)
        self.board = board
        self.config = config
        self.dev = bool(getattr(board, "DEV", False))
        fs = board.fs
        rtc = board.rtc_now()
        # SR-27, read for withdrawal safety: a boot loop is resets the firmware or the
        # watchdog caused; a power-on (a power cycle) starts the count afresh, so
        # unplugging a board three times never stops its dosing
        if board.reset_cause() == "power_on":
            looping = False
            clear_boots(fs)
        else:
            entries = _boots(fs)
            looping = boot_loop(entries, rtc)
            _write_boots(fs, (entries + [-1 if rtc is None else rtc])[-3:])
        self.runner, self.recovery = durable.boot(fs, board, config, None, rtc, 1 if looping else 0,
                                                  getattr(board, "ARCHIVE_FILES", ARCHIVE_FILES))
        self.clock = TestClock(TherapyClock(board.ticks_ms, board.ticks_diff, self.runner.now))
        self.keys = _read_keys(fs)
        self.boot_id = int.from_bytes(board.random(4), "big")
        impl = sys.implementation
        info = {"fw": board.manifest(), "dev": board.device_id(), "boot": self.boot_id,
                "build": "dev" if self.dev else "release",
                "upy": "%d.%d.%d" % (impl.version[0], impl.version[1], impl.version[2])}
        if hasattr(impl, "_mpy"):  # MicroPython: the .mpy ABI it imports (itbctl deploy)
            info["mpy"] = impl._mpy
        self.gate = pr.Gate(self.keys, info)
        self.deframer = pr.Deframer()
        self.refused = {}  # message-layer refusals by reason (never reach the controller)
        self.stepping = False  # a test-clock step is running the runner
        self.stalled = False  # the last answer timed out: the host is not reading
        self.board_seen = {}  # board-command id -> result (the last BOARD_IDS)
        self.board_order = []
        self.beat = {"runner": 0, "server": 0}
        self.wake = asyncio.Event()
        self.started_ms = self.clock.real.now_ms
        self.stable = False
        self.level = None
        self.inputs = {}  # the board inputs last sent to the runner (switch, battery)

    # ------------------------------------------------------------------ time
    def now(self):
        before_real = self.clock.real.now_ms
        before = self.clock.last
        t = self.clock.now()
        extra = (t - before) - (self.clock.real.now_ms - before_real)
        if extra > 0:
            self.board.rtc_skew(extra)  # the RTC keeps pace with the test clock
        return t

    # ------------------------------------------------------------------ tasks
    async def run(self):
        if getattr(self.board, "CONSOLE", False):
            # the protocol shares USB CDC with the REPL: a 0x03 in a frame must not
            # interrupt the app (restored in MAINTENANCE, for mpremote)
            import micropython

            micropython.kbd_intr(-1)
        await asyncio.gather(self.runner_task(), self.server_task(), self.alarm_task(),
                             self.health_task())

    async def runner_task(self):
        while True:
            now = self.now()
            self.beat["runner"] = self.clock.real.now_ms
            if self.runner.powered and not self.stepping:
                due = self.runner.next_wake()
                while 0 <= due <= now and not self.stepping:
                    # one wake-up at a time, the other tasks in between: a stroke on a
                    # Pico blocks for its burst and sensor reads, so a backlog must not
                    # run as one call past the watchdog (found by the attacker); the
                    # inputs below come after it (each input would catch up at once)
                    self.runner.advance(due)
                    self.beat["runner"] = self.clock.real.read()
                    await asyncio.sleep(0)
                    due = self.runner.next_wake()
                if not self.stepping:
                    now = self.now()  # a command may have moved the runner meanwhile
                    self._poll_inputs(now)
                    due = self.runner.next_wake()
            else:  # pragma: no cover - only a stroke's power cut powers the runner off
                due = -1
            wait = MAX_SLEEP_MS
            if due >= 0:
                real = self.clock.real_ms_until(due, now)
                if real is not None:
                    wait = max(0, min(wait, real))
            wait = min(wait, SWITCH_POLL_MS)
            try:
                await asyncio.wait_for(self.wake.wait(), wait / 1000)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()

    async def server_task(self):
        serial = self.board.serial
        while True:
            self.beat["server"] = self.clock.real.now_ms
            try:  # a quiet link is healthy: wake up to say so
                data = await asyncio.wait_for(serial.read(), MAX_SLEEP_MS / 1000)
            except asyncio.TimeoutError:
                continue
            self.beat["server"] = self.clock.real.now_ms
            if not data:
                await asyncio.sleep(0.05)
                continue
            for payload in self.deframer.feed(data):
                answer = self.handle(payload)
                try:
                    for out in answer:
                        self.beat["server"] = self.clock.real.now_ms
                        if out is None:  # a long command lets the other tasks run
                            await asyncio.sleep(0)
                            continue
                        try:
                            # a host that stopped reading gets a short wait only, so a
                            # backlog of its requests is worked off at once
                            frame = pr.pack(out)
                            limit = (STALLED_WRITE_MS + len(frame) * STALLED_MS_PER_KB // 1024
                                     if self.stalled else WRITE_TIMEOUT_MS)
                            await asyncio.wait_for(serial.write(frame), limit / 1000)
                            self.stalled = False
                        except asyncio.TimeoutError:
                            # the host stopped reading: drop the answer (a blocked
                            # write must not stall the server or starve the watchdog)
                            self.stalled = True
                            self.refused["WRITE_TIMEOUT"] = self.refused.get(
                                "WRITE_TIMEOUT", 0) + 1
                            break
                except Exception as e:  # a bug must not take the pump down: refuse, count
                    self.refused["INTERNAL"] = self.refused.get("INTERNAL", 0) + 1
                    if hasattr(sys, "print_exception"):  # MicroPython: to the console log
                        sys.print_exception(e)
                    await serial.write(pr.pack(pr.seal(pr.REFUSAL, "", pr.dumps({
                        "ok": 0, "reason": "INTERNAL", "message": "internal error: %s"
                        % type(e).__name__}))))
                finally:
                    answer.close()  # a log export's file is closed now, not at GC

    async def alarm_task(self):
        while True:
            # the highest priority among latched alarms not yet acknowledged, and
            # active HIGH ones (they re-annunciate while their condition holds, SR-28)
            level = None
            for code, pri, active, acked, _raised in self.runner.ctrl.alarms.listing():
                if (not acked or (active and pri == "high")) and (
                        level is None or PRIORITY_ORDER.index(pri) > PRIORITY_ORDER.index(level)):
                    level = pri
            if self.runner.ctrl.state == MAINTENANCE:
                level = "high"  # SR-27: NOT_DOSING annunciated until a normal boot
            if level != self.level:
                self.level = level
                self.board.annunciate(level)
            await asyncio.sleep(0.5)

    async def health_task(self):
        timeout = getattr(self.board, "WATCHDOG_MS", WATCHDOG_MS)
        wdt = self.board.watchdog(timeout)
        while True:
            real = self.clock.real.read()
            healthy = True
            for name in self.beat:
                if real - self.beat[name] > min(HEALTHY_MS, timeout // 2):
                    healthy = False
            if self.runner.ctrl.state == MAINTENANCE:
                if wdt is not None:
                    self.board.maintenance()  # SR-27: no watchdog in MAINTENANCE
                    if getattr(self.board, "CONSOLE", False):
                        import micropython

                        micropython.kbd_intr(3)  # the REPL may be reached again
                wdt = None
            elif healthy and wdt is not None:
                wdt.feed()
            if healthy and not self.stable and real - self.started_ms >= STABLE_MS:
                self.stable = True
                clear_boots(self.board.fs)  # SR-27: a stable run ends a boot loop
            await asyncio.sleep(min(1000, timeout // 4) / 1000)

    def _poll_inputs(self, now):
        # the syringe-empty switch, the battery monitor and the buttons, as runner
        # inputs when they change (``switch`` / ``battery``: the last values sent)
        board = self.board
        on = bool(board.empty_switch())
        if on != self.inputs.get("switch"):
            self.inputs["switch"] = on
            self.runner.empty_switch(now, on)
        if hasattr(board, "battery_low"):
            low = bool(board.battery_low())
            if low != self.inputs.get("battery"):
                self.inputs["battery"] = low
                self.runner.battery(now, low)
        if hasattr(board, "button_presses"):
            for name in board.button_presses():
                self.button(name, now)
        real = self.clock.real.now_ms
        if real - self.inputs.get("rtc_checked", real - RTC_CHECK_MS) >= RTC_CHECK_MS:
            self.inputs["rtc_checked"] = real
            self._check_rtc(now)

    def _check_rtc(self, now):
        # SR-23: the ledger's wall-clock stamps come from the tick crystal plus the
        # offset the RTC gave; re-sync them when they drift RTC_RESYNC_MS off the RTC
        # (a reset after days of drift otherwise sees a negative RTC gap: "unknown",
        # a restart at 50 %; found by the attacker). An RTC that stays unreadable for
        # RTC_INVALID_CHECKS checks raises CLOCK_INVALID.
        rtc = self.board.rtc_now()
        delta = self.runner.ctrl.wall_delta
        if rtc is None:
            self.inputs["rtc_fails"] = self.inputs.get("rtc_fails", 0) + 1
            if delta is not None and self.inputs["rtc_fails"] >= RTC_INVALID_CHECKS:
                self.runner.set_rtc(now, None)
            return
        self.inputs["rtc_fails"] = 0
        if delta is None or abs(rtc - (now + delta)) > RTC_RESYNC_MS:
            self.runner.set_rtc(now, rtc)

    def button(self, name, now):
        """A debounced press on the board: ``ack`` acknowledges every alarm,
        ``bolus`` asks for a patient bolus (SR-29: the controller applies dose,
        lockout and daily maximum, and logs a refusal). Both go through the runner
        as patient-role commands with the next free id (a host that had counted on
        that id is told by ``command_crc`` and sends again, SR-26)."""
        if name == "ack":
            command = {"name": "acknowledge", "role": "patient", "args": {"code": "all"}}
        else:
            command = {"name": "patient_bolus", "role": "patient", "args": {}}
        command["id"] = self._last_id() + 1
        return self.runner.command(command, now)

    # ------------------------------------------------------------------ messages
    def handle(self, payload):
        """Answer one good frame's payload: yields the payloads to send (a long
        answer's DATA parts are made one at a time: memory stays bounded)."""
        kind = payload[0] if payload else 0
        if kind == pr.HELLO:
            yield self.gate.hello(self.board.random(pr.NONCE_BYTES), self.now(), self._hello(),
                                  payload)
            return
        if kind == pr.PROVISION:
            yield self._provision(payload)
            return
        now = self.now()
        try:
            role, counter, msg = self.gate.accept(payload, now)
        except pr.Refused as r:
            self.refused[r.reason] = self.refused.get(r.reason, 0) + 1
            yield self.gate.refusal(r, now)
            return
        name = msg["name"]
        args = msg.get("args", {})
        if name == "log" and role in cmds.roles("log") and type(args) is dict:
            res = {"id": 0, "name": "log", "ok": 0}
            try:
                args = cmds.validate(name, args)
                for part in self._log_parts(args, role, counter, res):
                    yield part
                res["ok"] = 1
                res["reason"] = None
            except cmds.CommandError as e:
                res["reason"] = e.reason
                res["message"] = e.message
        elif name in cmds.COMMANDS:
            res = self.runner.command({"name": name, "id": msg["id"], "role": role,
                                       "args": args}, now)
            self.wake.set()
        elif msg["id"] in self.board_seen:  # a retry: the recorded result, not again
            res = dict(self.board_seen[msg["id"]])
            res["replayed"] = 1
        elif msg["id"] > self._last_id() + ID_STEP_MAX:
            # the controller's SR-26 id rule for board commands too: a jump to the end
            # of the id space would leave the next host no id to use
            res = {"id": msg["id"], "name": cmds.shown(name), "ok": 0, "reason": "ID_JUMP",
                   "message": "command id %d is more than %d above the last; use the next"
                   " id" % (msg["id"], ID_STEP_MAX)}
        else:
            step = []
            res = self.board_command(name, role, args, step)
            if step:  # a test-clock step: a wake-up at a time, the other tasks in between
                for _ in self._step(step[0]):
                    yield None
                res["t"] = self.now()
            if name != "status":
                res["id"] = msg["id"]
                res["command_crc"] = command_crc({"name": name, "role": role, "args": args})
                self.board_seen[msg["id"]] = res
                self.board_order.append(msg["id"])
                if len(self.board_order) > BOARD_IDS:
                    del self.board_seen[self.board_order.pop(0)]
        now = self.now()
        try:
            out = self.gate.respond(role, counter, res, now)
        except ValueError:
            # a result longer than a frame (a status with a long plan): its JSON in
            # DATA parts, then a short RESPONSE saying so (the host joins them)
            body = pr.dumps(res)
            n = 0
            for i in range(0, len(body), DATA_CHUNK):
                yield pr.data_part(self.keys[role], role, self.gate.nonce, counter, n,
                                   body[i:i + DATA_CHUNK])
                n += 1
            out = self.gate.respond(role, counter, {"ok": res.get("ok", 0), "parts": n,
                                                    "long": 1}, now)
        yield out

    def _last_id(self):
        # the highest command id taken: the controller's and the board commands'
        last = self.runner.ctrl.top_id()
        for cid in self.board_order:
            if cid > last:
                last = cid
        return last

    def _hello(self):
        ctrl = self.runner.ctrl
        return {"last_id": self._last_id(), "clock": self.clock.mode, "factor": self.clock.factor,
                "state": ctrl.state, "provisioning": 1 if self.board.provisioning() else 0,
                "max_payload": pr.MAX_PAYLOAD}

    def _provision(self, payload):
        # keys are accepted only while the provisioning button is held; the answer
        # is tagged with the new clinician key (proof that the board holds it)
        if not self.board.provisioning():
            self.refused["NOT_PROVISIONING"] = self.refused.get("NOT_PROVISIONING", 0) + 1
            return pr.seal(pr.REFUSAL, "", pr.dumps({
                "ok": 0, "reason": "NOT_PROVISIONING",
                "message": "hold the provisioning button to provision keys"}))
        state = self.runner.ctrl.state
        if self.keys and state != "UNPROGRAMMED":
            # a pump with keys and a therapy is not re-keyed by whoever holds the
            # button (found by the attacker): the new holder would be its clinician.
            # Lost keys: a MAINTENANCE boot and removing /data/keys (service work)
            self.refused["NOT_PROVISIONING"] = self.refused.get("NOT_PROVISIONING", 0) + 1
            return pr.seal(pr.REFUSAL, "", pr.dumps({
                "ok": 0, "reason": "NOT_PROVISIONING",
                "message": "this board has keys and is %s: it is re-keyed only when"
                " UNPROGRAMMED" % state}))
        try:
            kind, _role, body = pr.opened(payload)
            keys = pr.keys_from(body)
        except pr.MessageError as e:
            return pr.seal(pr.REFUSAL, "", pr.dumps({"ok": 0, "reason": e.reason,
                                                     "message": e.message}))
        _write_keys(self.board.fs, keys)
        self.keys.clear()
        for role in keys:
            self.keys[role] = keys[role]
        self.gate.nonce = None  # every session ends: the old keys are gone
        return pr.seal(pr.PROVISIONED, "", pr.dumps({"ok": 1, "roles": list(pr.ROLE_CODES[1:]),
                                                     "dev": self.board.device_id()}),
                       keys["clinician"])

    def board_command(self, name, role, args, step):
        """A board command (``board_commands.py``; ``log`` streams and is
        answered by ``_log_parts``). Refusals carry a reason (SR-14). A test-clock
        step to run is appended to ``step`` (the caller runs it a piece at a time)."""
        res = {"id": 0, "name": name if type(name) is str else "?"}
        try:
            args = cmds.validate(name, args)
            if role not in cmds.roles(name):
                raise cmds.CommandError("WRONG_ROLE", "%s may not send %s" % (role, name))
            if name in ("test_clock", "inject") and not self.dev:
                raise cmds.CommandError("NOT_DEV_BUILD", "%s exists only in dev builds" % name)
            res.update(getattr(self, "_cmd_" + name)(args, step))
            res["ok"] = 1
            res["reason"] = None
        except cmds.CommandError as e:
            res["ok"] = 0
            res["reason"] = e.reason
            res["message"] = e.message
        return res

    def _cmd_status(self, args, step):
        st = self.runner.ctrl.status()
        st["board"] = {"clock": self.clock.mode, "factor": self.clock.factor,
                       "annunciating": self.level, "dropped": self.deframer.dropped,
                       "frames": self.deframer.frames, "refused": self.refused,
                       "boot": self.boot_id, "rtc_ms": self.board.rtc_now()}
        if hasattr(self.board, "status"):  # the Pico: battery, supply, the last stroke
            st["board"]["hw"] = self.board.status()
        if hasattr(gc, "mem_alloc"):  # MicroPython: live heap and free (bytes)
            gc.collect()
            st["board"]["heap"] = [gc.mem_alloc(), gc.mem_free()]
        return {"status": st}

    def _cmd_time_sync(self, args, step):
        self.board.rtc_set(args["utc_ms"])
        self.runner.set_rtc(self.now(), args["utc_ms"])  # a logged runner input (SR-23)
        return {"message": "RTC set"}

    def _cmd_test_clock(self, args, step):
        if args["advance_ms"] and args["mode"] != "stepped":
            raise cmds.CommandError("BAD_ARGUMENT", "advance_ms needs mode stepped")
        self.clock.set_mode(args["mode"], args["factor"])
        if args["advance_ms"]:
            step.append(args["advance_ms"])
        self.wake.set()
        return {"t": self.now(), "mode": self.clock.mode}

    def _step(self, ms):
        # the stepped clock jumps; the runner follows one wake-up (at most an hour) at
        # a time, so the store checkpoints as it goes and the other tasks (the
        # watchdog's) run between strokes (a Pico's stroke blocks: found by the attacker)
        start = self.now()
        self.clock.step(ms)
        end = self.now()  # moves the RTC by ms as well
        t = start
        self.stepping = True  # the runner task leaves the runner to this loop
        try:
            while t < end:
                due = self.runner.next_wake()
                t = min(end, t + STEP_CHUNK_MS, due if due > t else end)
                self.runner.advance(t)
                yield
        finally:
            self.stepping = False

    def _cmd_inject(self, args, step):
        self.board.inject(args["fault"], args["count"], args["switch"])
        self.wake.set()
        return {"message": "injected"}

    def _log_parts(self, args, role, counter, res):
        # the raw ledger lines (``store.pack_line`` format, CRC per line) from every
        # file the store holds, as DATA parts; the host checks and parses them with
        # ``itb.store.unpack_line``. Whole files before ``from_seq`` are skipped.
        store = self.runner.journal
        if TYPE_CHECKING:  # a booted runner always has its store
            assert store is not None
        store.sync()
        files = store.export_files()
        start = 0
        for i in range(len(files) - 1, -1, -1):  # newest first: recent records are cheap
            first = durable._first_seq(self.board.fs, files[i])
            if first is not None and first <= args["from_seq"]:
                start = i
                break
        n = 0
        size = 0
        buf = b""
        key = self.keys[role]
        for path in files[start:]:
            f = self.board.fs.open(path, "rb")
            try:
                while True:  # a piece at a time: an archive file is 32 KB
                    data = f.read(DATA_CHUNK)
                    if not data:
                        break
                    buf += data
                    if len(buf) >= DATA_CHUNK:
                        yield pr.data_part(key, role, self.gate.nonce, counter, n,
                                           buf[:DATA_CHUNK])
                        size += DATA_CHUNK
                        buf = buf[DATA_CHUNK:]
                        n += 1
            finally:
                f.close()
        if buf:
            yield pr.data_part(key, role, self.gate.nonce, counter, n, buf)
            size += len(buf)
            n += 1
        res["parts"] = n
        res["bytes"] = size
        res["cfg"] = self.runner.ctrl.cfg.as_dict()
