"""The one loop every board uses: decide -> persist intent -> one stroke ->
completion or fault, and the next wake-up (DESIGN principle 2).

``Runner`` drives a ``Controller`` for a board object with one method,
``stroke(n, volume_nl, now) -> outcome`` (``ok``, ``stall``, ``occlusion``,
``unknown``, or ``power_cut`` when power failed during the stroke). The stroke's
intent record is appended to the store by the controller before ``stroke`` is
called (SR-26). Every input and output can be written to a trace (``trace.py``)
and ``replay`` reproduces the outputs from the inputs, byte for byte.

The runner is synchronous and sans-clock: the caller says what time it is. The
asyncio app (Pico, virtual board) and the simulator call ``advance(now)`` when
``next_wake()`` comes due.
"""

from itb.controller import MAX_T, Controller
from itb.trace import MAX_RECORD_CHARS, decode, encode

# A command record stays well below the longest record the ledger holds, so its
# result (which may quote the command) fits too.
MAX_COMMAND_CHARS = MAX_RECORD_CHARS // 2


class PoweredOff(Exception):
    """The runner is powered off: only ``power_on`` is accepted."""


class Runner:
    def __init__(self, controller, board, trace=None, journal=None):
        """``trace``: callable taking one encoded line (no newline), or None.
        ``journal``: the durable store (``store.Store``) or None: it gets every
        record, is synced before the motor moves and committed after every input
        (SR-26)."""
        self.ctrl = controller
        self.board = board
        self.trace = trace
        self.journal = journal
        self.powered = True
        self.now = controller.last_now
        self._basal = None
        self._rx_gen = controller.rx_gen
        self._to_board = []  # confirmed calibrations for the board (command())
        self._emit_basal()

    # -- trace helpers
    def _out(self, rec):
        if self.trace is not None or self.journal is not None:
            line = encode(rec)
            if self.trace is not None:
                self.trace(line)
            if self.journal is not None and self.powered:
                # nothing is written once power failed
                self.journal.write(rec, line, self.ctrl.wall_delta)

    def _commit(self, answer=1):
        if self.journal is not None and self.powered:
            self.journal.commit(self.ctrl, answer)

    def _events(self, t, events):
        for e in events:
            if e.get("k") == "stroke":
                continue
            rec = dict(e)
            rec["t"] = t
            self._out(rec)
            if e["k"] == "calibration":
                self._to_board.append(e)  # applied once it is durable: see command()

    def _emit_basal(self):
        c = self.ctrl
        if c.rx_gen != self._rx_gen:
            # SR-25: every accepted prescription generation is in the ledger
            self._rx_gen = c.rx_gen
            self._out({"k": "rx", "t": c.last_now, "gen": c.rx_gen, "ng_day": c.daily_dose_ng(),
                       "conc": c.res.concentration, "state": c.state})
        cur = (self.ctrl.daily_dose_ng(), self.ctrl.state)
        if cur != self._basal:
            self._basal = cur
            self._out({"k": "basal", "t": self.ctrl.last_now, "ng_day": cur[0], "state": cur[1]})

    def _live(self):
        if not self.powered:
            raise PoweredOff("powered off")

    # -- driving
    def next_wake(self):
        """When ``advance`` must next run (ms), -1 if nothing is scheduled."""
        return self.ctrl.next_wake()

    def advance(self, now):
        """Run every wake-up due up to and including ``now``. The ``advance`` record
        is written after the records it caused (trace times never go back), also when
        power failed during it."""
        self._live()
        self._advance(now)
        self._out({"k": "advance", "t": now})
        self._commit(0)

    def _catch_up(self, now):
        # Before an input at ``now``: run what is due first. An ``advance`` record is
        # written only when something was due, so replaying the trace (which holds
        # that record) does not write a second one.
        t = self.ctrl.next_wake()
        if 0 <= t <= now:
            self.advance(now)
        else:
            self._advance(now)

    def _advance(self, now):
        last = -1
        same = 0
        while self.powered:
            t = self.ctrl.next_wake()
            if t < 0 or t > now:
                break
            same = same + 1 if t == last else 0
            if same > 10000:
                raise RuntimeError("controller makes no progress at t=%d" % t)
            last = t
            self._wake(t)
        if self.powered:
            self._events(now, self.ctrl.tick(now))
            self._emit_basal()
            self.now = now

    def _wake(self, t):
        actions = self.ctrl.wake(t)
        self._events(t, actions)
        for a in actions:
            if a.get("k") != "stroke":
                continue
            self._out({"k": "stroke", "t": t, "n": a["n"], "src": a["src"], "nl": a["nl"],
                       "ng_hi": a["ng_hi"], "ng_lo": a["ng_lo"]})
            if self.journal is not None:
                self.journal.sync()  # SR-26: the intent is durable before the motor moves
            outcome = self.board.stroke(a["n"], a["nl"], t)
            self._out({"k": "outcome", "t": t, "n": a["n"], "res": outcome})
            if outcome == "power_cut":
                self.powered = False
                return
            self._events(t, self.ctrl.complete(a["n"], outcome, t))
        self._emit_basal()

    def command(self, command, now):
        """Advance to ``now`` and hand one command to the controller; returns its result."""
        if type(now) is int and self.ctrl.last_now <= now <= MAX_T:
            self._catch_up(now)  # a stale time goes to handle(), which refuses it (SR-23)
        self._live()  # power may have failed during a stroke on the way
        rec = {"k": "cmd", "t": now, "cmd": command}
        try:
            size = len(encode(rec))
        except ValueError:  # an integer too long to write out (CPython)
            size = MAX_COMMAND_CHARS + 1
        if size > MAX_COMMAND_CHARS:
            # SR-14: refused before the controller sees it: a command that cannot
            # be recorded whole is never applied (one audit record, not traced)
            return self.ctrl.refuse_unrecorded(command, now, "command too long to record"
                                               " (at most %d characters)" % MAX_COMMAND_CHARS)
        self._out(rec)
        self._to_board = []  # a command that failed before its commit applies nothing
        res = self.ctrl.handle(command, now)
        out = dict(res)
        out["k"] = "result"
        out["t"] = now
        self._out(out)
        self._events(now, self.ctrl.drain_events())
        self._emit_basal()
        self._commit()  # the result is durable before it is answered (SR-26)
        # A confirmed set_calibration goes to the board (its volume-to-motion factor)
        # only now: a power cut before this point leaves neither, one after it a
        # logged calibration the board may lack (its status shows which), never a
        # changed board without a record. A replay's board has no calibrate.
        # Taken out first: at most once, also when the board raises (found by the
        # attacker: a failed write left it queued, and the next command applied it again).
        todo, self._to_board = self._to_board, []
        for e in todo:
            if hasattr(self.board, "calibrate"):
                self.board.calibrate(e["stroke_nl"], e["measured_nl"])
        return res

    def _input(self, rec, apply, *args):
        # a board input at rec["t"]: what was due runs first, then its record and the
        # controller's answer ``apply(t, *args)``
        now = rec["t"]
        self._catch_up(now)
        self._live()
        self._out(rec)
        self._events(now, apply(now, *args))
        self._emit_basal()
        self._commit()

    def empty_switch(self, now, tripped):
        self._input({"k": "switch", "t": now, "on": 1 if tripped else 0},
                    self.ctrl.empty_switch, tripped)

    def battery(self, now, low):
        self._input({"k": "battery", "t": now, "low": 1 if low else 0}, self.ctrl.battery, low)

    def set_rtc(self, now, utc_ms):
        self._input({"k": "rtc", "t": now, "utc_ms": utc_ms}, self.ctrl.set_wall_clock, utc_ms)

    def session_end(self, now):
        self._input({"k": "session_end", "t": now}, self.ctrl.session_end)

    def power_cut(self, now):
        """Power fails at ``now`` (after everything due before it ran)."""
        self._catch_up(now)
        if self.powered:
            self._out({"k": "power_cut", "t": now})
            self.powered = False

    def power_on(self, now, upper_ms, boot_loop=0, storage=None):
        """Boot at therapy time ``now`` (= last time + outage lower bound) with the
        outage's upper bound ``upper_ms`` (None: unknown), SR-23/SR-26/SR-27;
        ``storage``: what boot recovery found wrong (``Controller.reboot``, SR-25)."""
        rec = {"k": "power_on", "t": now, "upper_ms": upper_ms, "boot_loop": boot_loop}
        if storage is not None:
            rec["storage"] = storage
        self.powered = True
        self._out(rec)
        self._events(now, self.ctrl.reboot(now, upper_ms, boot_loop, storage))
        self._emit_basal()
        self.now = now
        self._commit()


class _ReplayBoard:
    def __init__(self):
        self.outcomes = []
        self.cut = 0  # 1: a stroke without a recorded outcome met a power cut

    def stroke(self, n, volume_nl, now):
        if not self.outcomes:
            if self.cut:
                return "power_cut"
            raise ValueError("trace has no outcome for stroke %d" % n)
        rn, res = self.outcomes.pop(0)
        if rn != n:
            raise ValueError("trace outcome for stroke %d, runner made %d" % (rn, n))
        return res


class JournalReplayer:
    """Feeds trace records, one at a time, to ``runner`` (input records drive it,
    output records are checked by the code that made them: skipped). Motor
    outcomes precede the input record that caused their stroke, so one pass
    suffices (small heap). The runner's own board is replaced while replaying."""

    def __init__(self, runner):
        self.runner = runner
        self.board = _ReplayBoard()
        self.saved_board = None
        self.tail_t = -1  # time of the last stroke intent not yet closed by an input
        if runner is not None:
            self.saved_board = runner.board
            runner.board = self.board

    def feed(self, rec):
        k = rec["k"]
        t = rec["t"]
        runner = self.runner
        if k == "outcome":
            # (n, res) only: a long ``advance`` buffers every outcome it caused
            self.board.outcomes.append((rec["n"], rec["res"]))
            return
        if k == "stroke":
            self.tail_t = t
            return
        if k in ("result", "alarm", "basal", "rx", "config", "calibration"):
            return
        if runner is None:
            raise ValueError("trace must start with a config record")
        tail_t, self.tail_t = self.tail_t, -1
        if k == "cmd":
            try:
                runner.command(rec["cmd"], t)
            except PoweredOff:
                pass
        elif k == "advance":
            runner.advance(t)
        elif k == "switch":
            runner.empty_switch(t, rec["on"])
        elif k == "rtc":
            runner.set_rtc(t, rec["utc_ms"])
        elif k == "battery":
            runner.battery(t, rec["low"])
        elif k == "session_end":
            runner.session_end(t)
        elif k == "power_cut":
            runner.power_cut(t)
        elif k == "power_on":  # pragma: no branch - decode() admits only the kinds above
            if runner.powered:
                # a durable ledger (no power_cut record: a real cut writes nothing):
                # the power failed after the last record, as boot recovery found then
                self._cut(tail_t)
            runner.power_on(t, rec["upper_ms"], rec.get("boot_loop", 0), rec.get("storage"))

    def _cut(self, tail_t):
        # strokes whose causing input was lost with the power still ran (their
        # intents were durable): run the wake-ups up to the last one; a stroke
        # without a recorded outcome met the power cut (SR-26); then power off
        runner = self.runner
        self.board.cut = 1
        if tail_t >= 0 and runner.powered:
            runner._advance(tail_t)
        runner.powered = False
        self.board.cut = 0

    def finish(self):
        """End of a durable ledger: the power failed after its last record (see
        ``_cut``). Gives the runner its board back, powered off."""
        self._cut(self.tail_t)
        self.runner.board = self.saved_board


def replay(lines, sink=None, audit=None):
    """Re-run the inputs of a trace (an iterable of lines, read once, in order).

    Every line the runner writes goes to ``sink`` (a callable); without one they are
    collected and returned as a list. The output equals the input trace when the
    code behaves the same. Several traces may follow each other: each ``config``
    record starts a fresh run."""
    out = None
    if sink is None:
        out = []
        sink = out.append
    rep = JournalReplayer(None)
    for line in lines:
        line = line.strip()
        if not line:
            continue
        rec = decode(line)
        if rec["k"] == "config":
            # a new trace (traces may come back to back): a fresh controller and motor
            sink(encode(rec))
            rep = JournalReplayer(Runner(Controller(rec.get("cfg") or None, audit), None, sink))
        else:
            rep.feed(rec)
    return out


def start(config=None, board=None, trace=None, audit=None):
    """A controller and runner in memory (no durable store: see ``store.boot``);
    writes the ``config`` header to ``trace``. ``audit``: the controller's audit
    record sink (default: a ``ledger.MemoryStore`` ring)."""
    if trace is not None:
        trace(encode({"k": "config", "t": 0, "cfg": config or {}}))
    return Runner(Controller(config, audit), board, trace)
